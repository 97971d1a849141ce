// Delayed sends, revoke, flush (ioctl and release), fsync.
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "support.hpp"

namespace synchmess::it {
namespace {

void set_delay(int fd, uint32_t ms) {
  REQUIRE(::ioctl(fd, SYNCH_IOC_SET_SEND_DELAY, &ms) == 0);
}

uint32_t get_delay(int fd) {
  uint32_t ms = 12345;
  REQUIRE(::ioctl(fd, SYNCH_IOC_GET_SEND_DELAY, &ms) == 0);
  return ms;
}

std::vector<std::string> drain(int fd) {
  std::vector<std::string> out;
  for (int i = 0; i < 10000; ++i) {
    const Received r = receive(fd, 4096);
    if (r.rc <= 0) break;
    out.push_back(r.data);
  }
  return out;
}

using Texts = std::vector<std::string>;

}  // namespace

TEST_SUITE("delays") {
  TEST_CASE("SET/GET_SEND_DELAY: a delayed message is not available before, and is after") {
    TestGroup group("delay");
    Fd fd = group.open();
    CHECK(get_delay(fd.get()) == 0);
    constexpr uint32_t kDelayMs = 2000;
    set_delay(fd.get(), kDelayMs);
    CHECK(get_delay(fd.get()) == kDelayMs);
    {
      Fd other = group.open();  // the delay belongs to the group, not to the open file
      CHECK(get_delay(other.get()) == kDelayMs);
    }

    const auto start = Clock::now();
    CHECK(send(fd.get(), "late").rc == 4);
    CHECK(ms_since(start) < kDelayMs);  // the writer does not wait for the delay
    // Not available yet: the checks only count if they ran well before the delay ended (a
    // stalled machine makes them inconclusive, never wrong).
    const long early_read = receive(fd.get(), 64).rc;
    const int early_poll = poll_events(fd.get(), POLLIN, 0ms);
    const synch_group_stats early = stats_of(fd.get());
    if (ms_since(start) < kDelayMs * 0.8) {
      CHECK(early_read == 0);
      CHECK((early_poll & POLLIN) == 0);
      CHECK(early.delayed_messages == 1);
      CHECK(early.delayed_bytes == 4);
      CHECK(early.queued_messages == 0);
    } else {
      MESSAGE("the machine was too slow to look before the delay ended: not checked");
    }
    // Available after the delay: poll with a generous timeout.
    const int revents = poll_events(fd.get(), POLLIN, patience() + milliseconds(kDelayMs));
    const double landed_ms = ms_since(start);
    CHECK((revents & POLLIN) != 0);
    CHECK(landed_ms >= kDelayMs * 0.8);  // never before its time
    synch_group_stats s = stats_of(fd.get());
    CHECK(s.delayed_messages == 0);
    CHECK(s.queued_messages == 1);
    CHECK(receive(fd.get(), 64).data == "late");

    set_delay(fd.get(), 0);
    CHECK(get_delay(fd.get()) == 0);
    REQUIRE(send(fd.get(), "now").ok());
    CHECK(receive(fd.get(), 64).data == "now");
  }

  TEST_CASE("FIFO is the order of availability: an immediate message overtakes a delayed one") {
    TestGroup group("overtake");
    Fd fd = group.open();
    constexpr uint32_t kDelayMs = 1000;
    const auto start = Clock::now();
    set_delay(fd.get(), kDelayMs);
    REQUIRE(send(fd.get(), "delayed-1").ok());
    REQUIRE(send(fd.get(), "delayed-2").ok());
    set_delay(fd.get(), 0);
    REQUIRE(send(fd.get(), "immediate").ok());
    const std::string first = receive(fd.get(), 64).data;
    const bool in_time = ms_since(start) < kDelayMs * 0.8;
    REQUIRE((poll_events(fd.get(), POLLIN, patience()) & POLLIN) != 0);
    CHECK(wait_for_stats(fd.get(), [](const auto& s) { return s.delayed_messages == 0; }));
    const Texts rest = drain(fd.get());
    if (in_time) {
      CHECK(first == "immediate");
      CHECK(rest == Texts{"delayed-1", "delayed-2"});
    } else {
      MESSAGE("the machine was too slow to read before the delay ended: order not checked");
    }
  }

  TEST_CASE("a waiting reader gets a delayed message when it lands") {
    TestGroup group("waitdelayed");
    Fd reader_fd = group.open();
    Fd writer_fd = group.open();
    uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
    REQUIRE(::ioctl(reader_fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &forever) == 0);
    constexpr uint32_t kDelayMs = 400;
    set_delay(writer_fd.get(), kDelayMs);
    std::string got;
    BoundedThread reader("reader", [&] { got = receive(reader_fd.get(), 64).data; });
    REQUIRE(wait_for_stats(writer_fd.get(), [](const auto& s) { return s.readers_waiting == 1; }));
    const auto start = Clock::now();
    REQUIRE(send(writer_fd.get(), "landed").ok());
    reader.join(patience() + milliseconds(kDelayMs));
    CHECK(got == "landed");
    CHECK(ms_since(start) >= kDelayMs * 0.8);
  }

  TEST_CASE("delayed messages land in write order; a shorter delay written later lands first") {
    TestGroup group("delayorder");
    Fd fd = group.open();
    set_delay(fd.get(), 200);
    const int n = 40;
    for (int i = 0; i < n; ++i)
      REQUIRE(send(fd.get(), "d" + std::to_string(i)).ok());
    REQUIRE(wait_for_stats(fd.get(), [n](const auto& s) {
      return s.delayed_messages == 0 && s.queued_messages == static_cast<uint64_t>(n);
    }));
    Texts expected;
    for (int i = 0; i < n; ++i)
      expected.push_back("d" + std::to_string(i));
    CHECK(drain(fd.get()) == expected);

    // Availability order, not write order: "long" (600 ms) is written first, "short" (100 ms)
    // second, and "short" becomes available first.
    set_delay(fd.get(), 600);
    REQUIRE(send(fd.get(), "long").ok());
    set_delay(fd.get(), 100);
    REQUIRE(send(fd.get(), "short").ok());
    REQUIRE(wait_for_stats(fd.get(), [](const auto& s) { return s.queued_messages == 2; }));
    CHECK(drain(fd.get()) == Texts{"short", "long"});
  }

  TEST_CASE("revoke leaves messages whose delay has passed; the longest delay still flushes") {
    TestGroup group("revokelate");
    Fd fd = group.open();
    set_delay(fd.get(), 100);
    REQUIRE(send(fd.get(), "landed").ok());
    REQUIRE((poll_events(fd.get(), POLLIN, patience()) & POLLIN) != 0);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 0);
    CHECK(receive(fd.get(), 64).data == "landed");
    // The largest delay (about 49 days) is a delay like any other.
    set_delay(fd.get(), UINT32_MAX);
    CHECK(get_delay(fd.get()) == UINT32_MAX);
    REQUIRE(send(fd.get(), "far").ok());
    CHECK(stats_of(fd.get()).delayed_messages == 1);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_FLUSH) == 1);
    CHECK(receive(fd.get(), 64).data == "far");
  }

  TEST_CASE("REVOKE_DELAYED_MESSAGES discards the pending ones and returns how many") {
    TestGroup group("revoke");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "kept").ok());
    set_delay(fd.get(), 600000);
    for (int i = 0; i < 3; ++i)
      REQUIRE(send(fd.get(), "gone" + std::to_string(i)).ok());
    CHECK(stats_of(fd.get()).delayed_messages == 3);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 3);
    const synch_group_stats s = stats_of(fd.get());
    CHECK(s.delayed_messages == 0);
    CHECK(s.delayed_bytes == 0);
    CHECK(s.queued_messages == 1);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 0);
    CHECK(get_delay(fd.get()) == 600000);  // the setting stays
    // Revoked messages never arrive, not even at a flush.
    CHECK(::ioctl(fd.get(), SYNCH_IOC_FLUSH) == 0);
    CHECK(drain(fd.get()) == Texts{"kept"});
  }

  TEST_CASE(
      "SYNCH_IOC_FLUSH makes the delayed messages available in write order, returns how "
      "many, and keeps the delay") {
    TestGroup group("flush");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "i1").ok());
    set_delay(fd.get(), 600000);
    REQUIRE(send(fd.get(), "m1").ok());
    REQUIRE(send(fd.get(), "m2").ok());
    REQUIRE(send(fd.get(), "m3").ok());
    CHECK(receive(fd.get(), 64).data == "i1");
    CHECK(receive(fd.get(), 64).rc == 0);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_FLUSH) == 3);
    CHECK(get_delay(fd.get()) == 600000);
    const synch_group_stats s = stats_of(fd.get());
    CHECK(s.delayed_messages == 0);
    CHECK(s.queued_messages == 3);
    CHECK(drain(fd.get()) == Texts{"m1", "m2", "m3"});
    CHECK(::ioctl(fd.get(), SYNCH_IOC_FLUSH) == 0);
    // Later writes are delayed again.
    REQUIRE(send(fd.get(), "m4").ok());
    CHECK(stats_of(fd.get()).delayed_messages == 1);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 1);
  }

  TEST_CASE("closing the last descriptor of another open file flushes the group") {
    TestGroup group("flushclose");
    Fd writer = group.open();
    Fd reader = group.open();
    Fd closer = group.open();
    set_delay(writer.get(), 600000);
    REQUIRE(send(writer.get(), "d1").ok());
    REQUIRE(send(writer.get(), "d2").ok());
    CHECK(receive(reader.get(), 64).rc == 0);
    if (cuse_nodes()) {
      // A duplicate keeps the open file alive: closing one descriptor of two releases nothing.
      // (FUSE mounts flush on every close(); CUSE only on release.)
      const int copy = ::dup(closer.get());
      REQUIRE(copy >= 0);
      CHECK(::close(copy) == 0);
      CHECK(stats_of(reader.get()).delayed_messages == 2);
      CHECK(receive(reader.get(), 64).rc == 0);
    }
    CHECK(closer.reset() == 0);  // RELEASE reaches the server before close() returns
    const synch_group_stats s = stats_of(reader.get());
    CHECK(s.delayed_messages == 0);
    CHECK(s.queued_messages == 2);
    CHECK(drain(reader.get()) == Texts{"d1", "d2"});
    CHECK(get_delay(writer.get()) == 600000);
  }

  TEST_CASE("a child process that exits releases its open file: the group is flushed") {
    TestGroup group("flushexit");
    Fd reader = group.open();
    set_delay(reader.get(), 600000);
    const std::string path = group.path();
    const std::string report = run_in_child([path] {
      Fd fd = open_fd(path, O_RDWR);
      if (!fd) return "open: " + errno_name(errno);
      return expect_ok("write", send(fd.get(), "from-child"));
    });
    CHECK_MESSAGE(report.empty(), report);
    // The child's exit closed its descriptor: RELEASE flushed the delayed message.
    CHECK(wait_for_stats(reader.get(), [](const auto& s) { return s.queued_messages == 1; }));
    CHECK(receive(reader.get(), 64).data == "from-child");
  }

  TEST_CASE("on a FUSE file, fsync() and every close() flush the group (FUSE forwards both)") {
    if (only_on_fuse("CUSE forwards neither fsync nor flush (see the next test)")) return;
    TestGroup group("fusesync");
    Fd fd = group.open();
    set_delay(fd.get(), 600000);
    REQUIRE(send(fd.get(), "by-fsync").ok());
    CHECK(::fsync(fd.get()) == 0);  // as the original module's fsync: flushes
    synch_group_stats s = stats_of(fd.get());
    CHECK(s.delayed_messages == 0);
    CHECK(s.queued_messages == 1);
    REQUIRE(send(fd.get(), "by-fdatasync").ok());
    CHECK(::fdatasync(fd.get()) == 0);
    CHECK(stats_of(fd.get()).queued_messages == 2);
    // close() of a duplicate: the open file lives on, but FUSE sends a flush for every close().
    REQUIRE(send(fd.get(), "by-close").ok());
    const int copy = ::dup(fd.get());
    REQUIRE(copy >= 0);
    CHECK(::close(copy) == 0);
    s = stats_of(fd.get());
    CHECK(s.delayed_messages == 0);
    CHECK(s.queued_messages == 3);
    CHECK(drain(fd.get()) == Texts{"by-fsync", "by-fdatasync", "by-close"});
    CHECK(get_delay(fd.get()) == 600000);  // a flush keeps the send delay
  }

  TEST_CASE("fsync and fdatasync on a CUSE node fail with EINVAL (CUSE forwards neither)") {
    if (only_on_cuse("FUSE forwards fsync (see the test before)")) return;
    TestGroup group("fsync");
    Fd fd = group.open();
    set_delay(fd.get(), 600000);
    REQUIRE(send(fd.get(), "still-delayed").ok());
    CHECK_ERRNO(::fsync(fd.get()), EINVAL);
    CHECK_ERRNO(::fdatasync(fd.get()), EINVAL);
    CHECK(stats_of(fd.get()).delayed_messages == 1);  // nothing flushed
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 1);
  }
}

}  // namespace synchmess::it
