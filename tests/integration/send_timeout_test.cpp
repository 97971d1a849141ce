// The send timeout (SPEC "Messages": SYNCH_IOC_SET_SEND_TIMEOUT): a write that does not fit waits
// for room up to the timeout of its open file, writers are served in arrival order, and every
// way a wait ends (room, timeout, signal, removal, a raised budget, a revoke) through the device.
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "support.hpp"

namespace synchmess::it {
namespace {

void set_send_timeout(int fd, uint32_t ms) {
  REQUIRE(::ioctl(fd, SYNCH_IOC_SET_SEND_TIMEOUT, &ms) == 0);
}

bool wait_for_writers(const std::string& name, long count) {
  return wait_until([&] { return writers_waiting(name) == count; });
}

// A writer thread: one write() of `text` on its own descriptor with a send timeout.
struct Writer {
  Writer(const TestGroup& group, std::string text, uint32_t timeout_ms)
      : fd(group.open()), message(std::move(text)) {
    set_send_timeout(fd.get(), timeout_ms);
    thread = std::make_unique<BoundedThread>("writer of '" + message + "'",
                                             [this] { result = send(fd.get(), message); });
  }
  Fd fd;
  std::string message;
  Sys result{0, 0};
  std::unique_ptr<BoundedThread> thread;
};

}  // namespace

TEST_SUITE("send timeout") {
  TEST_CASE("a write into a full group waits up to the send timeout, then fails with ENOSPC") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(8, 16).rc);
    TestGroup group("sendwait");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "12345678").ok());
    REQUIRE(send(fd.get(), "abcdefgh").ok());
    set_send_timeout(fd.get(), 300);
    const auto start = Clock::now();
    CHECK_ERRNO(send(fd.get(), "late").rc, ENOSPC);
    CHECK(ms_since(start) >= 240);  // ~80% of the timeout: no upper bound asserted
    CHECK(writers_waiting(group.name()) == 0);
    CHECK(stats_of(fd.get()).queued_messages == 2);

    // O_NONBLOCK wins over the timeout, and a message larger than the budget never waits.
    Fd nonblocking = group.open(O_RDWR | O_NONBLOCK);
    set_send_timeout(nonblocking.get(), SYNCH_SEND_TIMEOUT_FOREVER);
    CHECK_ERRNO(send(nonblocking.get(), "x").rc, ENOSPC);
    REQUIRE_SYS_OK(set_params(32, 16).rc);
    set_send_timeout(fd.get(), SYNCH_SEND_TIMEOUT_FOREVER);
    CHECK_ERRNO(send(fd.get(), std::string(17, 'z')).rc, ENOSPC);
  }

  TEST_CASE("a waiting write is let in by a read; writers are served in arrival order") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(8, 16).rc);
    TestGroup group("sendorder");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "12345678").ok());
    REQUIRE(send(fd.get(), "abcdefgh").ok());
    Writer first(group, "first-8b", SYNCH_SEND_TIMEOUT_FOREVER);
    REQUIRE(wait_for_writers(group.name(), 1));
    Writer second(group, "second", SYNCH_SEND_TIMEOUT_FOREVER);
    REQUIRE(wait_for_writers(group.name(), 2));
    Writer third(group, "3rd", SYNCH_SEND_TIMEOUT_FOREVER);
    REQUIRE(wait_for_writers(group.name(), 3));
    // Room for max_message_size is gone while writers wait: no POLLOUT.
    CHECK((poll_events(fd.get(), POLLOUT, 0ms) & POLLOUT) == 0);
    // A small write that would fit on its own still waits its turn: refused without a timeout.
    CHECK(receive(fd.get(), 64).data == "12345678");  // 8 free: "first-8b" goes in
    first.thread->join();
    CHECK(first.result.rc == 8);
    CHECK(writers_waiting(group.name()) == 2);
    CHECK(receive(fd.get(), 64).data == "abcdefgh");  // 8 free: "second" (6) goes in
    second.thread->join();
    CHECK(second.result.rc == 6);
    CHECK(receive(fd.get(), 64).data == "first-8b");  // then "3rd"
    third.thread->join();
    CHECK(third.result.rc == 3);
    CHECK(receive(fd.get(), 64).data == "second");
    CHECK(receive(fd.get(), 64).data == "3rd");
    CHECK(writers_waiting(group.name()) == 0);
    CHECK((poll_events(fd.get(), POLLOUT, 0ms) & POLLOUT) != 0);
  }

  TEST_CASE("a write waiting behind another is refused to writers without a timeout") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(8, 12).rc);
    TestGroup group("sendfair");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "1234567").ok());  // 5 bytes free
    Writer big(group, "eight-b!", SYNCH_SEND_TIMEOUT_FOREVER);
    REQUIRE(wait_for_writers(group.name(), 1));
    CHECK_ERRNO(send(fd.get(), "xy").rc, ENOSPC);  // it would fit, but "eight-b!" came first
    CHECK(receive(fd.get(), 64).data == "1234567");
    big.thread->join();
    CHECK(big.result.rc == 8);
    CHECK(send(fd.get(), "xy").rc == 2);
  }

  TEST_CASE("a signal ends the wait with EINTR, a removal with EIDRM; nothing is sent") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(8, 8).rc);
    InterruptingSignal interrupting;
    TestGroup group("sendintr");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "full-8b!").ok());
    Writer interrupted(group, "never", SYNCH_SEND_TIMEOUT_FOREVER);
    REQUIRE(wait_for_writers(group.name(), 1));
    REQUIRE(wait_until([&] {
      ::pthread_kill(interrupted.thread->native_handle(), InterruptingSignal::kSignal);
      return interrupted.thread->done();
    }));
    interrupted.thread->join();
    CHECK(interrupted.result.rc == -1);
    CHECK(errno_name(interrupted.result.err) == errno_name(EINTR));
    CHECK(writers_waiting(group.name()) == 0);
    CHECK(stats_of(fd.get()).queued_messages == 1);

    Writer removed(group, "gone", 60000);
    REQUIRE(wait_for_writers(group.name(), 1));
    group.remove();
    removed.thread->join();
    CHECK(removed.result.rc == -1);
    CHECK(errno_name(removed.result.err) == errno_name(EIDRM));
  }

  TEST_CASE("a raised budget and a revoke let waiting writes in") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(8, 8).rc);
    TestGroup group("sendroom");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "full-8b!").ok());
    Writer raised(group, "raised", SYNCH_SEND_TIMEOUT_FOREVER);
    REQUIRE(wait_for_writers(group.name(), 1));
    REQUIRE_SYS_OK(set_params(8, 16).rc);
    raised.thread->join();
    CHECK(raised.result.rc == 6);

    // 14 of 16 bytes stored; a delayed message is revoked to make room.
    CHECK(receive(fd.get(), 64).data == "full-8b!");
    uint32_t delay = 60000;
    REQUIRE(::ioctl(fd.get(), SYNCH_IOC_SET_SEND_DELAY, &delay) == 0);
    REQUIRE(send(fd.get(), "delayed!").ok());  // 6 + 8 stored
    delay = 0;
    REQUIRE(::ioctl(fd.get(), SYNCH_IOC_SET_SEND_DELAY, &delay) == 0);
    Writer revoked(group, "after-rv", SYNCH_SEND_TIMEOUT_FOREVER);
    REQUIRE(wait_for_writers(group.name(), 1));
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 1);
    revoked.thread->join();
    CHECK(revoked.result.rc == 8);
    CHECK(receive(fd.get(), 64).data == "raised");
    CHECK(receive(fd.get(), 64).data == "after-rv");
  }
}

}  // namespace synchmess::it
