// Messages: one write is one message; sizes and the storage budget; short, empty, non-blocking
// and waiting reads; the receive timeout; stats.
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <vector>

#include "support.hpp"

namespace synchmess::it {
namespace {

std::string pattern(size_t size, char seed) {
  std::string text(size, '\0');
  for (size_t i = 0; i < size; ++i)
    text[i] = static_cast<char>(seed + (i * 7 + i / 4096) % 61);
  return text;
}

void set_recv_timeout(int fd, uint32_t ms) {
  REQUIRE(::ioctl(fd, SYNCH_IOC_SET_RECV_TIMEOUT, &ms) == 0);
}

// Page-aligned memory, so that buffers can start at a chosen offset within a page.
class PageBuffer {
 public:
  explicit PageBuffer(size_t pages) : size_(pages * 4096) {
    memory_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(memory_ != MAP_FAILED);
  }
  ~PageBuffer() { ::munmap(memory_, size_); }
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  char* at(size_t offset) { return static_cast<char*>(memory_) + offset; }

 private:
  size_t size_;
  void* memory_;
};

}  // namespace

TEST_SUITE("messages") {
  TEST_CASE("write of 0 bytes returns 0 and stores nothing") {
    TestGroup group("zero");
    Fd fd = group.open();
    const Sys wrote = sys([&] { return ::write(fd.get(), "", 0); });
    CHECK(wrote.rc == 0);
    const synch_group_stats stats = stats_of(fd.get());
    CHECK(stats.queued_messages == 0);
    CHECK(stats.queued_bytes == 0);
    CHECK(receive(fd.get(), 16).rc == 0);
  }

  TEST_CASE("one write is one message: FIFO, exactly once, never split or merged") {
    TestGroup group("fifo");
    Fd writer = group.open(O_WRONLY);
    Fd reader = group.open(O_RDONLY);
    const std::vector<std::string> sent = {"a", "bb",   std::string(100, 'c'),
                                           "",  "dddd", pattern(4000, 'A')};
    for (const auto& text : sent) {
      const Sys s = send(writer.get(), text);
      CHECK(s.rc == static_cast<long>(text.size()));
    }
    const synch_group_stats stats = stats_of(reader.get());
    CHECK(stats.queued_messages == 5);  // the empty write stored nothing
    CHECK(stats.queued_bytes == 1 + 2 + 100 + 4 + 4000);
    for (const auto& text : sent) {
      if (text.empty()) continue;
      const Received r = receive(reader.get(), 8192);
      CHECK(r.rc == static_cast<long>(text.size()));
      CHECK(r.data == text);
    }
    CHECK(receive(reader.get(), 8192).rc == 0);
  }

  TEST_CASE("a writev() of a few small pieces is one message") {
    TestGroup group("writev");
    Fd fd = group.open();
    char a[] = "ab";
    char b[] = "cde";
    char c[] = "f";
    iovec pieces[] = {{a, 2}, {b, 3}, {c, 1}};
    CHECK(::writev(fd.get(), pieces, 3) == 6);
    CHECK(stats_of(fd.get()).queued_messages == 1);
    CHECK(receive(fd.get(), 64).data == "abcdef");
  }

  TEST_CASE("a writev() of more pieces than one request holds is one message; the rest refused") {
    // The kernel puts at most 32 (CUSE) or 256 (FUSE) pieces in one request and sends the rest
    // as continuations of the same call: the first request is the message, the others fail
    // (EMSGSIZE), so the call returns short.
    TestGroup group("writevsplit");
    Fd fd = group.open();
    std::vector<char> bytes(300, 'w');
    std::vector<iovec> pieces;
    for (char& byte : bytes)
      pieces.push_back({&byte, 1});
    const ssize_t rc = ::writev(fd.get(), pieces.data(), static_cast<int>(pieces.size()));
    CHECK(rc > 0);
    CHECK(rc < 300);
    const synch_group_stats stats = stats_of(fd.get());
    CHECK(stats.queued_messages == 1);
    CHECK(static_cast<ssize_t>(stats.queued_bytes) == rc);
  }

  TEST_CASE("a readv() of more pieces than one request holds takes one message") {
    TestGroup group("readvsplit");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), std::string(300, 'a')).ok());
    REQUIRE(send(fd.get(), "second").ok());
    std::vector<char> bytes(300, '\0');
    std::vector<iovec> pieces;
    for (char& byte : bytes)
      pieces.push_back({&byte, 1});
    const ssize_t rc = ::readv(fd.get(), pieces.data(), static_cast<int>(pieces.size()));
    REQUIRE(rc > 0);
    CHECK(rc <= 300);
    CHECK(std::string(bytes.data(), static_cast<size_t>(rc)) ==
          std::string(static_cast<size_t>(rc), 'a'));
    CHECK(receive(fd.get(), 64).data == "second");  // the continuation took nothing of it
  }

  TEST_CASE("a short read copies what fits and consumes the whole message") {
    TestGroup group("short");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "hello world").ok());
    REQUIRE(send(fd.get(), "second").ok());
    const Received first = receive(fd.get(), 5);
    CHECK(first.rc == 5);
    CHECK(first.data == "hello");
    const Received second = receive(fd.get(), 64);
    CHECK(second.data == "second");  // not " world"
    CHECK(receive(fd.get(), 64).rc == 0);
    CHECK(stats_of(fd.get()).queued_bytes == 0);
  }

  TEST_CASE("exactly max_message_size passes, one byte more fails with EMSGSIZE") {
    TestGroup group("maxsize");
    Fd fd = group.open();
    const uint64_t max = get_params().max_message_size;
    const std::string largest = pattern(max, 'a');
    CHECK(send(fd.get(), largest).rc == static_cast<long>(max));
    CHECK_ERRNO(send(fd.get(), pattern(max + 1, 'b')).rc, EMSGSIZE);
    const Received r = receive(fd.get(), max + 100);
    CHECK(r.rc == static_cast<long>(max));
    CHECK(r.data == largest);
    CHECK(receive(fd.get(), 64).rc == 0);
  }

  TEST_CASE("at the 124 KiB limit a message from an unaligned buffer is still one message") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(SYNCH_MAX_MESSAGE_SIZE_LIMIT, SYNCH_DEFAULT_MAX_STORAGE_SIZE).rc);
    TestGroup group("limit");
    Fd fd = group.open();
    PageBuffer out(34);
    PageBuffer in(34);
    const size_t size = SYNCH_MAX_MESSAGE_SIZE_LIMIT;
    for (const size_t offset : {size_t{0}, size_t{1}, size_t{4095}}) {
      INFO("buffer offset " << offset);
      const std::string text = pattern(size, static_cast<char>('A' + offset % 26));
      std::memcpy(out.at(offset), text.data(), size);
      const Sys wrote = sys([&] { return ::write(fd.get(), out.at(offset), size); });
      INFO("write -> " << wrote);
      CHECK(wrote.rc == static_cast<long>(size));
      CHECK(stats_of(fd.get()).queued_messages == 1);
      const Sys read_back = sys([&] { return ::read(fd.get(), in.at(offset), size); });
      INFO("read -> " << read_back);
      CHECK(read_back.rc == static_cast<long>(size));
      CHECK(std::memcmp(in.at(offset), text.data(), size) == 0);
      CHECK(stats_of(fd.get()).queued_messages == 0);
      // One byte more is refused whole, whatever the alignment.
      std::memcpy(out.at(offset), pattern(size + 1, 'z').data(), size + 1);
      CHECK_ERRNO(::write(fd.get(), out.at(offset), size + 1), EMSGSIZE);
      CHECK(stats_of(fd.get()).queued_messages == 0);
    }
  }

  TEST_CASE("writes larger than one CUSE request are refused whole; huge read buffers work") {
    TestGroup group("huge");
    Fd fd = group.open();
    // More than 32 pages: the kernel would split it; the server refuses the message whole.
    const std::string huge = pattern(300 * 1024, 'h');
    CHECK_ERRNO(send(fd.get(), huge).rc, EMSGSIZE);
    CHECK(stats_of(fd.get()).queued_messages == 0);
    // A read with a buffer far larger than a request takes one whole message.
    REQUIRE(send(fd.get(), "small").ok());
    REQUIRE(send(fd.get(), "next").ok());
    const Received r = receive(fd.get(), 1 << 20);
    CHECK(r.rc == 5);
    CHECK(r.data == "small");
    CHECK(receive(fd.get(), 1 << 20).data == "next");
    CHECK(receive(fd.get(), 1 << 20).rc == 0);
  }

  TEST_CASE("storage: ENOSPC at write time when stored bytes would exceed max_storage_size") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(1000, 3000).rc);
    TestGroup group("storage");
    Fd fd = group.open();
    const std::string k = pattern(1000, 'k');
    for (int i = 0; i < 3; ++i)
      CHECK(send(fd.get(), k).rc == 1000);
    CHECK_ERRNO(send(fd.get(), k).rc, ENOSPC);
    CHECK_ERRNO(send(fd.get(), "x").rc, ENOSPC);
    CHECK(stats_of(fd.get()).queued_bytes == 3000);
    // A read frees its bytes at once.
    CHECK(receive(fd.get(), 2000).rc == 1000);
    CHECK(send(fd.get(), k).rc == 1000);
    CHECK_ERRNO(send(fd.get(), "x").rc, ENOSPC);

    // Delayed messages count too, and revoking them frees their bytes.
    CHECK(receive(fd.get(), 2000).rc == 1000);
    uint32_t delay = 60000;
    REQUIRE(::ioctl(fd.get(), SYNCH_IOC_SET_SEND_DELAY, &delay) == 0);
    CHECK(send(fd.get(), k).rc == 1000);
    CHECK_ERRNO(send(fd.get(), "x").rc, ENOSPC);
    const synch_group_stats stats = stats_of(fd.get());
    CHECK(stats.queued_bytes == 2000);
    CHECK(stats.delayed_bytes == 1000);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 1);
    delay = 0;
    REQUIRE(::ioctl(fd.get(), SYNCH_IOC_SET_SEND_DELAY, &delay) == 0);
    CHECK(send(fd.get(), k).rc == 1000);
    CHECK(stats_of(fd.get()).queued_bytes == 3000);
  }

  TEST_CASE("lowering the limits never drops stored messages; it applies to later writes") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(4096, 100000).rc);
    TestGroup group("lower");
    Fd fd = group.open();
    const std::string big = pattern(3000, 'q');
    for (int i = 0; i < 3; ++i)
      REQUIRE(send(fd.get(), big).ok());
    REQUIRE_SYS_OK(set_params(1000, 2000).rc);
    CHECK(stats_of(fd.get()).queued_bytes == 9000);
    CHECK_ERRNO(send(fd.get(), pattern(1001, 'r')).rc, EMSGSIZE);
    CHECK_ERRNO(send(fd.get(), pattern(1000, 'r')).rc, ENOSPC);
    for (int i = 0; i < 3; ++i) {
      const Received r = receive(fd.get(), 4096);
      CHECK(r.data == big);
    }
    CHECK(send(fd.get(), pattern(1000, 's')).rc == 1000);
  }

  TEST_CASE("an empty group: read returns 0 at once; O_NONBLOCK fails with EAGAIN") {
    TestGroup group("empty");
    Fd blocking = group.open(O_RDWR);
    Fd nonblocking = group.open(O_RDWR | O_NONBLOCK);
    CHECK(receive(blocking.get(), 64).rc == 0);
    CHECK_ERRNO(receive(nonblocking.get(), 64).rc, EAGAIN);

    // The flag set later with fcntl counts as well, and clearing it restores the plain read.
    const int flags = ::fcntl(blocking.get(), F_GETFL);
    REQUIRE(::fcntl(blocking.get(), F_SETFL, flags | O_NONBLOCK) == 0);
    CHECK_ERRNO(receive(blocking.get(), 64).rc, EAGAIN);
    REQUIRE(::fcntl(blocking.get(), F_SETFL, flags & ~O_NONBLOCK) == 0);
    CHECK(receive(blocking.get(), 64).rc == 0);

    // Non-blocking reads take messages as usual.
    REQUIRE(send(blocking.get(), "here").ok());
    CHECK(receive(nonblocking.get(), 64).data == "here");
    CHECK_ERRNO(receive(nonblocking.get(), 64).rc, EAGAIN);
  }

  TEST_CASE("receive timeout: an empty read waits up to the timeout, then returns 0") {
    TestGroup group("timeout");
    Fd waiting = group.open();
    Fd other = group.open();
    constexpr uint32_t kTimeoutMs = 400;
    set_recv_timeout(waiting.get(), kTimeoutMs);
    const auto start = Clock::now();
    const Received r = receive(waiting.get(), 64);
    const double elapsed = ms_since(start);
    CHECK(r.rc == 0);
    CHECK(elapsed >= kTimeoutMs * 0.8);
    CHECK(elapsed < static_cast<double>(patience().count()));

    // Per open file: another descriptor of the group does not wait.
    set_recv_timeout(waiting.get(), 600000);
    const auto other_start = Clock::now();
    CHECK(receive(other.get(), 64).rc == 0);
    CHECK(ms_since(other_start) < static_cast<double>(patience().count()));

    // O_NONBLOCK wins over the timeout.
    const int flags = ::fcntl(waiting.get(), F_GETFL);
    REQUIRE(::fcntl(waiting.get(), F_SETFL, flags | O_NONBLOCK) == 0);
    const auto nonblock_start = Clock::now();
    CHECK_ERRNO(receive(waiting.get(), 64).rc, EAGAIN);
    CHECK(ms_since(nonblock_start) < static_cast<double>(patience().count()));
    REQUIRE(::fcntl(waiting.get(), F_SETFL, flags) == 0);

    // 0 restores the default: no wait.
    set_recv_timeout(waiting.get(), 0);
    const auto zero_start = Clock::now();
    CHECK(receive(waiting.get(), 64).rc == 0);
    CHECK(ms_since(zero_start) < static_cast<double>(patience().count()));
    CHECK(stats_of(waiting.get()).readers_waiting == 0);
  }

  TEST_CASE("a message that arrives during the wait is returned at once") {
    TestGroup group("arrives");
    Fd reader_fd = group.open();
    Fd writer_fd = group.open();
    uint32_t timeout_ms = 0;
    SUBCASE("with a timeout") {
      timeout_ms = 120000;
    }
    SUBCASE("waiting forever") {
      timeout_ms = SYNCH_RECV_TIMEOUT_FOREVER;
    }
    set_recv_timeout(reader_fd.get(), timeout_ms);
    std::string got;
    long got_rc = -2;
    BoundedThread reader("waiting reader", [&] {
      const Received r = receive(reader_fd.get(), 64);
      got_rc = r.rc;
      got = r.data;
    });
    synch_group_stats seen{};
    REQUIRE(wait_for_stats(
        writer_fd.get(), [](const auto& s) { return s.readers_waiting == 1; }, &seen));
    const auto sent_at = Clock::now();
    REQUIRE(send(writer_fd.get(), "wake up").ok());
    reader.join();
    CHECK(got_rc == 7);
    CHECK(got == "wake up");
    CHECK(ms_since(sent_at) < static_cast<double>(patience().count()));
    CHECK(stats_of(writer_fd.get()).readers_waiting == 0);
    CHECK(stats_of(writer_fd.get()).queued_messages == 0);  // taken by the reader, not queued
  }

  TEST_CASE("several waiting readers: each message goes to exactly one of them") {
    TestGroup group("manywaiters");
    constexpr int kReaders = 6;
    Fd writer = group.open();
    std::vector<Fd> fds;
    for (int i = 0; i < kReaders; ++i) {
      fds.push_back(group.open());
      set_recv_timeout(fds.back().get(), SYNCH_RECV_TIMEOUT_FOREVER);
    }
    std::vector<std::string> got(kReaders);
    std::vector<std::unique_ptr<BoundedThread>> readers;
    for (int i = 0; i < kReaders; ++i) {
      readers.push_back(std::make_unique<BoundedThread>(
          "reader " + std::to_string(i), [&, i] { got[i] = receive(fds[i].get(), 64).data; }));
    }
    REQUIRE(
        wait_for_stats(writer.get(), [](const auto& s) { return s.readers_waiting == kReaders; }));
    for (int i = 0; i < kReaders; ++i)
      REQUIRE(send(writer.get(), "m" + std::to_string(i)).ok());
    for (auto& reader : readers)
      reader->join();
    const std::set<std::string> distinct(got.begin(), got.end());
    CHECK(distinct.size() == kReaders);
    for (int i = 0; i < kReaders; ++i)
      CHECK(distinct.count("m" + std::to_string(i)) == 1);
    CHECK(stats_of(writer.get()).queued_messages == 0);
  }

  TEST_CASE("stats count queued and delayed messages and bytes, sleepers and waiting readers") {
    TestGroup group("stats");
    Fd fd = group.open();
    synch_group_stats s = stats_of(fd.get());
    CHECK(s.queued_messages == 0);
    CHECK(s.queued_bytes == 0);
    CHECK(s.delayed_messages == 0);
    CHECK(s.delayed_bytes == 0);
    CHECK(s.sleepers == 0);
    CHECK(s.readers_waiting == 0);
    REQUIRE(send(fd.get(), "12345").ok());
    REQUIRE(send(fd.get(), "123").ok());
    uint32_t delay = 600000;
    REQUIRE(::ioctl(fd.get(), SYNCH_IOC_SET_SEND_DELAY, &delay) == 0);
    REQUIRE(send(fd.get(), "1234567").ok());
    s = stats_of(fd.get());
    CHECK(s.queued_messages == 2);
    CHECK(s.queued_bytes == 8);
    CHECK(s.delayed_messages == 1);
    CHECK(s.delayed_bytes == 7);
    CHECK(receive(fd.get(), 2).data == "12");
    s = stats_of(fd.get());
    CHECK(s.queued_messages == 1);
    CHECK(s.queued_bytes == 3);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 1);
    s = stats_of(fd.get());
    CHECK(s.delayed_messages == 0);
    CHECK(s.delayed_bytes == 0);
    // sleepers and readers_waiting: see the barrier and receive-timeout tests, which wait for
    // them to reach their values.
  }
}

}  // namespace synchmess::it
