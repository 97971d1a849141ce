// The fast path end to end (SPEC "Fast path"): descriptors of the client library that work in
// their group's shared memory, mixed with plain device users of the same group. Every rule of
// the spec must hold across both doors: FIFO, exactly once, the errors, timeouts, poll
// readiness, the barrier's counts, EIDRM, stats; and a process killed at any point leaves
// nothing held.
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <random>

#include <synchmess/client.h>

#include "hostile.hpp"
#include "region/handshake.hpp"
#include "region/layout.hpp"
#include "region/region.hpp"
#include "support.hpp"

namespace synchmess::it {
namespace {

// A descriptor of the client library, closed with synch_close_group().
class LibFd {
 public:
  LibFd(const TestGroup& group, int flags = O_RDWR)
      : fd_(synch_open_group(group.name().c_str(), flags)) {
    REQUIRE_MESSAGE(fd_ >= 0, "synch_open_group: " << errno_name(errno));
  }
  ~LibFd() {
    if (fd_ >= 0) synch_close_group(fd_);
  }
  LibFd(const LibFd&) = delete;
  LibFd& operator=(const LibFd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

Sys lib_send(int fd, std::string_view text) {
  return sys([&] { return synch_send(fd, text.data(), text.size()); });
}

Received lib_receive(int fd, size_t capacity = 1 << 17) {
  std::string buffer(capacity, '\0');
  errno = 0;
  const ssize_t rc = synch_receive(fd, buffer.data(), buffer.size());
  const int err = rc < 0 ? errno : 0;
  buffer.resize(rc > 0 ? static_cast<size_t>(rc) : 0);
  return Received{rc, err, buffer};
}

// The fast path is on only where the server offers it: a test that needs it says so.
bool fast(const LibFd& fd) {
  return synch_fast_path_active(fd.get()) == 1;
}

// A message of one byte with room for one descriptor (SCM_RIGHTS), as a process hands a group
// to another.
struct DescriptorMessage {
  char byte = 'f';
  iovec data{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  DescriptorMessage() {
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
  }
  DescriptorMessage(const DescriptorMessage&) = delete;
  DescriptorMessage& operator=(const DescriptorMessage&) = delete;
};

bool send_descriptor(int socket, int fd) {
  DescriptorMessage sent;
  cmsghdr* header = CMSG_FIRSTHDR(&sent.message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &fd, sizeof fd);
  return ::sendmsg(socket, &sent.message, MSG_NOSIGNAL) == 1;
}

// The descriptor sent by send_descriptor(), or -1.
int receive_descriptor(int socket) {
  DescriptorMessage got;
  if (::recvmsg(socket, &got.message, MSG_CMSG_CLOEXEC) != 1) return -1;
  const cmsghdr* header = CMSG_FIRSTHDR(&got.message);
  if (header == nullptr || header->cmsg_type != SCM_RIGHTS) return -1;
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(header), sizeof fd);
  return fd;
}

// A thread of this process in synch_receive() on `fd` with no timeout, counted by the server as
// a waiting reader before the constructor returns.
class WaitingReader {
 public:
  explicit WaitingReader(int fd)
      : fd_(without_timeout(fd)), thread_("reader", [this] { got_ = lib_receive(fd_); }) {
    REQUIRE(wait_for_stats(fd_, [](const auto& s) { return s.readers_waiting == 1; }));
  }
  // What the receive returned, once it has.
  Received join() {
    thread_.join();
    return got_;
  }

 private:
  static int without_timeout(int fd) {
    REQUIRE(synch_set_recv_timeout(fd, SYNCH_RECV_TIMEOUT_FOREVER) == 0);
    return fd;
  }
  const int fd_;
  Received got_{};
  BoundedThread thread_;
};

// A member gone bad (in a child: no threads): takes its group's region through the handshake as
// the library does, then writes random words at random places of it (header, client table,
// ring) until `deadline`. Returns "" or what failed.
std::string vandalize(const std::string& path, Clock::time_point deadline, unsigned seed) {
  const Membership member = join(path);
  if (!member.error.empty()) return member.error;
  struct stat st {};
  if (::fstat(member.grant.memfd, &st) != 0) return "fstat";
  const auto bytes = static_cast<size_t>(st.st_size);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, member.grant.memfd, 0);
  if (base == MAP_FAILED) return "mmap";
  auto* words = static_cast<uint64_t*>(base);
  std::mt19937_64 random(seed);
  const size_t count = bytes / sizeof(uint64_t);
  const size_t header_words = region::kHeaderBytes / sizeof(uint64_t);
  while (Clock::now() < deadline) {
    for (int i = 0; i < 1000; ++i) {
      // Mostly the header (positions, budget, flags, wait words): what the protocol trusts most.
      const size_t at = random() % 4 == 0 ? random() % count : random() % header_words;
      uint64_t value = random();
      if (random() % 2 == 0) value = words[at] + (random() % 64) - 32;  // plausible nearby values
      __atomic_store_n(&words[at], value, __ATOMIC_RELAXED);
    }
    const uint64_t one = 1;
    (void)!::write(member.grant.eventfd, &one, sizeof one);  // and the server's eventfd
  }
  return "";
}

}  // namespace

TEST_SUITE("fast path") {
  TEST_CASE("only descriptors opened O_RDWR take the shared memory") {
    TestGroup group("fpopen");
    LibFd both(group, O_RDWR);
    CHECK(fast(both));
    LibFd reading(group, O_RDONLY);
    CHECK_FALSE(fast(reading));
    LibFd writing(group, O_WRONLY);
    CHECK_FALSE(fast(writing));
    // The offer itself: refused to a descriptor that may not both read and write.
    synch_fastpath_offer offer{};
    Fd raw_read = group.open(O_RDONLY);
    CHECK_ERRNO(::ioctl(raw_read.get(), SYNCH_IOC_FASTPATH_OFFER, &offer), EACCES);
    Fd raw = group.open(O_RDWR);
    REQUIRE_SYS_OK(::ioctl(raw.get(), SYNCH_IOC_FASTPATH_OFFER, &offer));
    CHECK(std::string(offer.socket_name).rfind("synchmess-", 0) == 0);
    // SYNCHMESS_FASTPATH=0 keeps every descriptor on the device.
    ::setenv("SYNCHMESS_FASTPATH", "0", 1);
    LibFd off(group, O_RDWR);
    ::unsetenv("SYNCHMESS_FASTPATH");
    CHECK_FALSE(fast(off));
    CHECK(lib_send(off.get(), "device only").rc == 11);
    CHECK(lib_receive(both.get()).data == "device only");
  }

  TEST_CASE("both doors share one queue: FIFO and exactly once, whoever sends or reads") {
    TestGroup group("fpfifo");
    LibFd library(group);
    REQUIRE(fast(library));
    Fd device = group.open();
    std::vector<std::string> sent;
    for (int i = 0; i < 200; ++i) {
      sent.push_back("m" + std::to_string(i));
      if (i % 3 == 0) {
        REQUIRE(send(device.get(), sent.back()).rc == static_cast<long>(sent.back().size()));
      } else {
        REQUIRE(lib_send(library.get(), sent.back()).rc == static_cast<long>(sent.back().size()));
      }
    }
    CHECK(stats_of(device.get()).queued_messages == 200);
    {
      Fd control = must_open(control_path(), O_RDONLY);  // the listing counts both doors too
      CHECK(read_text(control.get(), 4096)
                .find(group.name() + " owner=" + std::to_string(::geteuid()) +
                      " queued_messages=200 ") != std::string::npos);
    }
    std::vector<std::string> got;
    for (int i = 0; i < 200; ++i) {
      const Received r = i % 2 == 0 ? receive(device.get()) : lib_receive(library.get());
      REQUIRE(r.rc > 0);
      got.push_back(r.data);
    }
    CHECK(got == sent);
    CHECK(lib_receive(library.get()).rc == 0);  // empty: 0 at once, as read() gives
    CHECK(receive(device.get()).rc == 0);
    const synch_group_stats stats = stats_of(device.get());
    CHECK(stats.queued_messages == 0);
    CHECK(stats.queued_bytes == 0);
  }

  TEST_CASE("short buffers, large messages, the limits: as the device does them") {
    if (needs_root("the parameters it sets")) return;
    TestGroup group("fplimits");
    ParamsGuard guard;
    LibFd library(group);
    REQUIRE(fast(library));
    Fd device = group.open();
    // A short buffer gets what fits, and the whole message is consumed.
    REQUIRE(lib_send(library.get(), "0123456789").rc == 10);
    REQUIRE(lib_send(library.get(), "next").rc == 4);
    char two[2];
    CHECK(synch_receive(library.get(), two, sizeof two) == 2);
    CHECK(lib_receive(library.get()).data == "next");
    // Larger than the ring takes: it goes through the server, still in order.
    REQUIRE(set_params(120000, 1 << 20).ok());
    const std::string big(100000, 'B');
    REQUIRE(lib_send(library.get(), "before").rc == 6);
    REQUIRE(lib_send(library.get(), big).rc == static_cast<long>(big.size()));
    REQUIRE(lib_send(library.get(), "after").rc == 5);
    CHECK(lib_receive(library.get()).data == "before");
    CHECK(lib_receive(library.get()).data == big);
    CHECK(receive(device.get()).data == "after");
    // max_message_size, max_storage_size.
    REQUIRE(set_params(100, 1000).ok());
    CHECK_ERRNO(synch_send(library.get(), big.data(), 101), EMSGSIZE);
    for (int i = 0; i < 10; ++i)
      REQUIRE(lib_send(library.get(), std::string(100, 'f')).rc == 100);
    CHECK_ERRNO(synch_send(library.get(), big.data(), 1), ENOSPC);
    CHECK_ERRNO(::write(device.get(), big.data(), 1), ENOSPC);  // one budget for both doors
    CHECK(stats_of(device.get()).queued_bytes == 1000);
    CHECK(receive(device.get()).rc == 100);
    CHECK(lib_send(library.get(), std::string(100, 'g')).rc == 100);  // room again
  }

  TEST_CASE("a library send wakes a device reader and a poll()er of other processes; and back") {
    TestGroup group("fpwake");
    LibFd library(group);
    REQUIRE(fast(library));
    const std::string path = group.path();
    // A device reader waiting in read() (receive timeout), in a process of its own.
    Child reader([path] {
      Fd fd = open_fd(path, O_RDWR);
      if (!fd) return "open: " + errno_name(errno);
      const uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
      if (::ioctl(fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &forever) != 0) return std::string("ioctl");
      const Received got = receive(fd.get());
      return got.data == "to the device" ? std::string() : "read gave '" + got.data + "'";
    });
    Fd device = group.open();
    REQUIRE(wait_for_stats(device.get(), [](const auto& s) { return s.readers_waiting == 1; }));
    REQUIRE(lib_send(library.get(), "to the device").rc == 13);
    REQUIRE(reader.finish());
    CHECK(reader.report() == "");
    // A poll()er in another process: POLLIN once the library sent.
    Child poller([path] {
      Fd fd = open_fd(path, O_RDWR);
      if (!fd) return "open: " + errno_name(errno);
      Child::progress("polling");
      const int events = poll_events(fd.get(), POLLIN, patience());
      if ((events & POLLIN) == 0) return "poll gave " + std::to_string(events);
      const Received got = receive(fd.get());
      return got.data == "to the poller" ? std::string() : "read gave '" + got.data + "'";
    });
    // The wake-up of a blocked poll() by a library send is the case under test (a send before
    // the poll would be seen by it as well, proving less): send once it sleeps in poll().
    REQUIRE_EVENTUALLY(poller.reported("polling") && asleep(poller.pid()),
                       "the poller process sleeps in poll()");
    REQUIRE(lib_send(library.get(), "to the poller").rc == 13);
    REQUIRE(poller.finish());
    CHECK(poller.report() == "polling");

    // A library reader waiting on the futex, woken by a device write.
    REQUIRE(synch_set_recv_timeout(library.get(), SYNCH_RECV_TIMEOUT_FOREVER) == 0);
    Received fast_got{};
    BoundedThread fast_reader("library reader", [&] { fast_got = lib_receive(library.get()); });
    REQUIRE(wait_for_stats(device.get(), [](const auto& s) { return s.readers_waiting == 1; }));
    REQUIRE(send(device.get(), "to the library").rc == 14);
    fast_reader.join();
    CHECK(fast_got.data == "to the library");
    CHECK(stats_of(device.get()).readers_waiting == 0);
  }

  TEST_CASE("receive timeouts, O_NONBLOCK and signals on the fast path") {
    TestGroup group("fptimeout");
    LibFd library(group);
    REQUIRE(fast(library));
    REQUIRE(synch_set_recv_timeout(library.get(), 150) == 0);
    const auto start = Clock::now();
    CHECK(lib_receive(library.get()).rc == 0);  // the timeout passed: nothing read
    CHECK(ms_since(start) >= 120);
    LibFd nonblocking(group, O_RDWR | O_NONBLOCK);
    REQUIRE(fast(nonblocking));
    REQUIRE(synch_set_recv_timeout(nonblocking.get(), 5000) == 0);
    CHECK_ERRNO(synch_receive(nonblocking.get(), nullptr, 0), EAGAIN);  // O_NONBLOCK wins

    InterruptingSignal interrupting;
    REQUIRE(synch_set_recv_timeout(library.get(), SYNCH_RECV_TIMEOUT_FOREVER) == 0);
    Received got{};
    BoundedThread reader("interrupted reader", [&] { got = lib_receive(library.get()); });
    REQUIRE(wait_for_stats(library.get(), [](const auto& s) { return s.readers_waiting == 1; }));
    // Counted as waiting above; a signal that comes before its futex wait only runs the handler,
    // so signals are repeated (5 ms apart: a retry interval, not a synchronization) until it
    // returns.
    while (!reader.done()) {
      pthread_kill(reader.native_handle(), InterruptingSignal::kSignal);
      std::this_thread::sleep_for(5ms);
    }
    reader.join();
    CHECK(got.rc == -1);
    CHECK(errno_name(got.err) == errno_name(EINTR));
    CHECK(stats_of(library.get()).readers_waiting == 0);
  }

  TEST_CASE("the barrier counts and wakes sleepers of both doors") {
    TestGroup group("fpbarrier");
    LibFd library(group);
    REQUIRE(fast(library));
    Fd device = group.open();
    std::atomic<long> device_rc{1};
    std::atomic<int> library_rc{1};
    BoundedThread device_sleeper(
        "device sleeper", [&] { device_rc = ::ioctl(device.get(), SYNCH_IOC_SLEEP_ON_BARRIER); });
    BoundedThread library_sleeper("library sleeper",
                                  [&] { library_rc = synch_sleep_on_barrier(library.get()); });
    REQUIRE(wait_for_stats(device.get(), [](const auto& s) { return s.sleepers == 2; }));
    CHECK(synch_awake_barrier(library.get()) == 2);
    device_sleeper.join();
    library_sleeper.join();
    CHECK(device_rc.load() == 0);
    CHECK(library_rc.load() == 0);
    // And the other way round: a device awake wakes a library sleeper.
    BoundedThread again("library sleeper 2",
                        [&] { library_rc = synch_sleep_on_barrier(library.get()); });
    REQUIRE(wait_for_stats(device.get(), [](const auto& s) { return s.sleepers == 1; }));
    CHECK(::ioctl(device.get(), SYNCH_IOC_AWAKE_BARRIER) == 1);
    again.join();
    CHECK(library_rc.load() == 0);
    CHECK(stats_of(device.get()).sleepers == 0);
  }

  TEST_CASE("a send delay goes through the server; flush and revoke see the library's sends") {
    TestGroup group("fpdelay");
    LibFd library(group);
    REQUIRE(fast(library));
    REQUIRE(synch_set_send_delay(library.get(), 10000) == 0);
    REQUIRE(lib_send(library.get(), "delayed 1").rc == 9);
    REQUIRE(lib_send(library.get(), "delayed 2").rc == 9);
    CHECK(stats_of(library.get()).delayed_messages == 2);
    CHECK(lib_receive(library.get()).rc == 0);
    CHECK(synch_flush(library.get()) == 2);
    CHECK(lib_receive(library.get()).data == "delayed 1");
    REQUIRE(lib_send(library.get(), "revoked").rc == 7);
    CHECK(synch_revoke_delayed_messages(library.get()) == 1);
    REQUIRE(synch_set_send_delay(library.get(), 0) == 0);
    REQUIRE(lib_send(library.get(), "immediate").rc == 9);
    CHECK(lib_receive(library.get()).data == "delayed 2");
    CHECK(lib_receive(library.get()).data == "immediate");
  }

  TEST_CASE("a send timeout waits for room that a library receive frees") {
    if (needs_root("the parameters it sets")) return;
    TestGroup group("fpsendwait");
    ParamsGuard guard;
    REQUIRE(set_params(100, 200).ok());
    LibFd producer(group);
    LibFd consumer(group);
    REQUIRE(fast(producer));
    REQUIRE(synch_set_send_timeout(producer.get(), SYNCH_SEND_TIMEOUT_FOREVER) == 0);
    REQUIRE(lib_send(producer.get(), std::string(100, '1')).rc == 100);
    REQUIRE(lib_send(producer.get(), std::string(100, '2')).rc == 100);
    Sys third{};
    BoundedThread waiting("waiting writer",
                          [&] { third = lib_send(producer.get(), std::string(100, '3')); });
    // No room: it waits in the server's queue of writers (the control listing counts it).
    REQUIRE_EVENTUALLY(writers_waiting(group.name()) == 1, group.name()
                                                               << " lists one writer waiting");
    CHECK_FALSE(waiting.done());
    CHECK(lib_receive(consumer.get()).data == std::string(100, '1'));
    waiting.join();
    CHECK(third.rc == 100);
    CHECK(lib_receive(consumer.get()).data == std::string(100, '2'));
    CHECK(lib_receive(consumer.get()).data == std::string(100, '3'));
  }

  TEST_CASE("removal: library waits end with EIDRM, later calls fail as the device's do") {
    TestGroup group("fpremove");
    LibFd library(group);
    Fd raw = group.open();
    REQUIRE(fast(library));
    REQUIRE(synch_set_recv_timeout(library.get(), SYNCH_RECV_TIMEOUT_FOREVER) == 0);
    Received got{};
    std::atomic<int> barrier_rc{1};
    std::atomic<int> barrier_err{0};
    BoundedThread reader("reader", [&] { got = lib_receive(library.get()); });
    BoundedThread sleeper("sleeper", [&] {
      barrier_rc = synch_sleep_on_barrier(library.get());
      barrier_err = errno;
    });
    REQUIRE(wait_for_stats(
        library.get(), [](const auto& s) { return s.readers_waiting == 1 && s.sleepers == 1; }));
    group.remove();
    reader.join();
    sleeper.join();
    CHECK(got.rc == -1);
    CHECK(errno_name(got.err) == errno_name(EIDRM));
    CHECK(barrier_rc.load() == -1);
    CHECK(errno_name(barrier_err.load()) == errno_name(EIDRM));
    // Later calls: what the device answers (ENODEV; ENOTCONN once a CUSE device is gone).
    const Sys device_send = sys([&] { return ::write(raw.get(), "x", 1); });
    REQUIRE(device_send.rc == -1);
    CHECK_ERRNO(synch_send(library.get(), "x", 1), device_send.err);
    char buffer[8];
    CHECK_ERRNO(synch_receive(library.get(), buffer, sizeof buffer), device_send.err);
  }

  TEST_CASE("synch_close_group ends a wait on the same descriptor (EBADF)") {
    TestGroup group("fpclose");
    LibFd library(group);
    REQUIRE(fast(library));
    WaitingReader reader(library.get());
    CHECK(synch_close_group(library.release()) == 0);
    const Received got = reader.join();
    CHECK(got.rc == -1);
    CHECK(errno_name(got.err) == errno_name(EBADF));
  }

  TEST_CASE("fork(): the child and its child take an inherited descriptor's fast path") {
    // Each process its own slot, one FIFO, exactly once; the parent keeps its own.
    TestGroup group("fpfork");
    LibFd library(group);
    REQUIRE(fast(library));
    const int fd = library.get();
    const std::string report = run_in_child([fd] {
      if (synch_fast_path_active(fd) != 1) return std::string("the child did not take the region");
      for (int i = 0; i < 100; ++i) {
        const std::string text = "child " + std::to_string(i);
        if (synch_send(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
          return "send: " + errno_name(errno);
        }
      }
      const pid_t grandchild = ::fork();
      if (grandchild < 0) return "fork: " + errno_name(errno);
      if (grandchild == 0) {
        const bool ok = synch_fast_path_active(fd) == 1 && synch_send(fd, "grandchild", 10) == 10;
        ::_exit(ok ? 0 : 1);
      }
      int status = 0;
      if (::waitpid(grandchild, &status, 0) != grandchild || !WIFEXITED(status) ||
          WEXITSTATUS(status) != 0) {
        return std::string("the grandchild did not send through the region");
      }
      return std::string();
    });
    CHECK(report == "");
    CHECK(fast(library));
    for (int i = 0; i < 100; ++i)
      REQUIRE(lib_receive(library.get()).data == "child " + std::to_string(i));
    CHECK(lib_receive(library.get()).data == "grandchild");
    const auto stats = stats_of(library.get());
    CHECK(stats.queued_messages == 0);
    CHECK(stats.queued_bytes == 0);
  }

  TEST_CASE("a descriptor received with SCM_RIGHTS takes the fast path in its new process") {
    TestGroup group("fpscm");
    int sockets[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) == 0);
    Fd ours(sockets[0]);
    Fd theirs(sockets[1]);
    // Forked before the group is opened: the receiver inherits nothing of it.
    Child receiver([socket = theirs.get()] {
      const int fd = receive_descriptor(socket);
      if (fd < 0) return "recvmsg: " + errno_name(errno);
      if (synch_fast_path_active(fd) != 1) return std::string("the receiver did not take it");
      // It waits by the receive timeout its sender set on the open file (the offer says it):
      // an empty group is waited on, not answered with 0 at once.
      Child::progress("waiting;");
      char buffer[64];
      const ssize_t got = synch_receive(fd, buffer, sizeof buffer);
      if (got != 15 || std::memcmp(buffer, "from the sender", 15) != 0) {
        return "receive gave " + std::to_string(got) + " " + errno_name(errno);
      }
      if (synch_send(fd, "from the receiver", 17) != 17) return "send: " + errno_name(errno);
      return std::string(synch_close_group(fd) == 0 ? "" : "close failed");
    });
    theirs.reset();
    LibFd library(group);
    REQUIRE(fast(library));
    // Both ends wait by it: long enough for anything that must happen, never for ever.
    REQUIRE(synch_set_recv_timeout(library.get(), static_cast<uint32_t>(patience().count())) == 0);
    REQUIRE(send_descriptor(ours.get(), library.get()));
    REQUIRE_EVENTUALLY(
        receiver.reported("waiting;") && stats_of(library.get()).readers_waiting == 1,
        "the receiver waits for a message");
    REQUIRE(lib_send(library.get(), "from the sender").rc == 15);
    REQUIRE(receiver.finish());
    CHECK(receiver.report() == "waiting;");
    CHECK(lib_receive(library.get()).data == "from the receiver");
    CHECK(fast(library));
    const auto stats = stats_of(library.get());
    CHECK(stats.queued_messages == 0);
    CHECK(stats.readers_waiting == 0);
  }

  TEST_CASE("a descriptor from open() takes the fast path at its first call; close() is caught") {
    TestGroup first("fpraw1");
    TestGroup second("fpraw2");
    LibFd reader_first(first);
    LibFd reader_second(second);
    const int fd = ::open(first.path().c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(synch_fast_path_active(fd) == 1);
    CHECK(lib_send(fd, "to the first").rc == 12);
    CHECK(lib_receive(reader_first.get()).data == "to the first");
    // The rule broken: close(), not synch_close_group(), and the number names the second group.
    REQUIRE(::close(fd) == 0);
    const int reused = ::open(second.path().c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(reused == fd);
    // The library looks at the descriptor's node at most every 10 ms: after that span (the
    // subject, nothing to wait on) its calls go where the number now points.
    std::this_thread::sleep_for(30ms);
    CHECK(lib_send(reused, "to the second").rc == 13);
    CHECK(synch_fast_path_active(reused) == 0);
    CHECK(lib_receive(reader_second.get()).data == "to the second");
    CHECK(stats_of(reader_first.get()).queued_messages == 0);
    // synch_close_group() forgets it: the next descriptor at that number is probed afresh.
    REQUIRE(synch_close_group(reused) == 0);
    const int again = ::open(second.path().c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(again >= 0);
    CHECK(synch_fast_path_active(again) == 1);
    CHECK(synch_close_group(again) == 0);
    // Not a group device: the call is the plain system call, no offer asked for.
    const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    REQUIRE(null_fd >= 0);
    CHECK(synch_fast_path_active(null_fd) == 0);
    CHECK(lib_send(null_fd, "nowhere").rc == 7);
    CHECK(synch_close_group(null_fd) == 0);
    // Read-only: the device.
    const int reading = ::open(first.path().c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(reading >= 0);
    CHECK(synch_fast_path_active(reading) == 0);
    CHECK(synch_close_group(reading) == 0);
  }

  TEST_CASE("fork() beside a waiting thread: the child's send wakes the parent's receive") {
    TestGroup group("fpforkmt");
    LibFd library(group);
    REQUIRE(fast(library));
    const int fd = library.get();
    WaitingReader reader(fd);
    // The child inherits a descriptor with a call in flight (the reader's use of it).
    const std::string report = run_in_child([fd] {
      if (synch_fast_path_active(fd) != 1) return std::string("the child did not take the region");
      if (synch_send(fd, "to the waiting parent", 21) != 21) return "send: " + errno_name(errno);
      return std::string();
    });
    const Received got = reader.join();
    CHECK(report == "");
    CHECK(got.data == "to the waiting parent");
    CHECK(fast(library));
  }

  TEST_CASE("a child killed after it took an inherited descriptor's fast path leaves nothing") {
    if (needs_root("the parameters it sets")) return;
    TestGroup group("fpforkkill");
    ParamsGuard guard;
    REQUIRE(set_params(4096, 4096).ok());
    LibFd library(group);
    REQUIRE(fast(library));
    const int fd = library.get();
    int sent[2];
    REQUIRE(::pipe(sent) == 0);
    {
      Child child([fd, &sent] {
        if (synch_fast_path_active(fd) != 1) return std::string("no fast path in the child");
        if (synch_send(fd, std::string(100, 'c').data(), 100) != 100) return std::string("send");
        (void)!::write(sent[1], "s", 1);
        for (;;)
          ::pause();  // killed here, its slot still held
      });
      pollfd ready{sent[0], POLLIN, 0};
      REQUIRE(::poll(&ready, 1, 10'000) == 1);
      ::kill(child.pid(), SIGKILL);
      child.finish();
    }
    ::close(sent[0]);
    ::close(sent[1]);
    CHECK(lib_receive(library.get()).data == std::string(100, 'c'));
    // The child's slot repaired: the whole budget is there again, for the parent's region too.
    CHECK(wait_for_stats(library.get(), [](const auto& s) { return s.queued_bytes == 0; }));
    const std::string whole(4096, 'w');
    CHECK(synch_send(library.get(), whole.data(), whole.size()) == 4096);
    CHECK(lib_receive(library.get()).data == whole);
  }

  TEST_CASE("processes killed at random points leave nothing held") {
    if (needs_root("the parameters it sets")) return;
    TestGroup group("fpkill");
    ParamsGuard guard;
    REQUIRE(set_params(512, 64 * 1024).ok());
    Fd device = group.open();
    std::mt19937 random(12345);
    const int rounds = in_sandbox() ? 6 : 20;
    for (int round = 0; round < rounds; ++round) {
      std::vector<std::unique_ptr<Child>> children;
      for (int i = 0; i < 3; ++i) {
        const std::string name = group.name();
        const bool consumer = i == 2;
        children.push_back(std::make_unique<Child>([name, consumer] {
          const int fd = synch_open_group(name.c_str(), O_RDWR);
          if (fd < 0) return "open: " + errno_name(errno);
          if (synch_fast_path_active(fd) != 1) return std::string("no fast path");
          Child::progress("attached");
          char buffer[512];
          for (unsigned n = 0;; ++n) {
            if (consumer) {
              (void)synch_receive(fd, buffer, sizeof buffer);
            } else {
              const size_t size = 1 + n % 500;
              std::memset(buffer, static_cast<int>(n), size);
              (void)synch_send(fd, buffer, size);
            }
          }
        }));
      }
      // The kill comes at a random point of their work, attached or not: the randomness is the
      // subject (no state to wait for), every point must leave nothing held.
      std::this_thread::sleep_for(milliseconds(5 + random() % 40));
      for (auto& child : children)
        ::kill(child->pid(), SIGKILL);
      for (auto& child : children)
        child->finish();
      // Within about a second: every slot repaired; then drain, and the budget is whole.
      while (receive(device.get()).rc > 0) {
      }
      INFO("round " << round);
      CHECK(wait_for_stats(device.get(), [&](const auto& s) {
        while (receive(device.get()).rc > 0) {
        }
        return s.queued_bytes == 0 && s.queued_messages == 0 && s.readers_waiting == 0;
      }));
    }
    // The whole budget is there to take: max_storage_size bytes fit again.
    for (int i = 0; i < 128; ++i)
      REQUIRE(send(device.get(), std::string(512, 'z')).ok());
    CHECK(stats_of(device.get()).queued_bytes == 64 * 1024);
  }

  TEST_CASE("a member writing garbage into its region costs its group only, never a crash") {
    TestGroup victim("fpvictim");
    TestGroup bystander("fpbystander");
    const int threads_before = server_thread_count();
    const auto deadline = Clock::now() + (in_sandbox() ? 1500ms : 3s);
    const std::string victim_path = victim.path();
    Child vandal([victim_path, deadline] { return vandalize(victim_path, deadline, 7); });

    // Well-behaved users of the victim: every call returns (bounded waits), whatever it gives.
    std::atomic<bool> stop{false};
    LibFd victim_library(victim);
    Fd victim_device = victim.open();
    REQUIRE(synch_set_recv_timeout(victim_library.get(), 20) == 0);
    BoundedThread victim_user("victim's library user", [&] {
      char buffer[512];
      for (unsigned n = 0; !stop.load(); ++n) {
        (void)synch_send(victim_library.get(), buffer, 1 + n % 200);
        (void)synch_receive(victim_library.get(), buffer, sizeof buffer);
        if (n % 64 == 0) (void)synch_awake_barrier(victim_library.get());
      }
    });
    BoundedThread victim_device_user("victim's device user", [&] {
      char buffer[512];
      for (unsigned n = 0; !stop.load(); ++n) {
        (void)::write(victim_device.get(), buffer, 1 + n % 100);
        (void)::read(victim_device.get(), buffer, sizeof buffer);
      }
    });

    // The bystander group: exact FIFO and exactly once, through both doors, all along.
    LibFd producer(bystander);
    LibFd consumer(bystander);
    Fd bystander_device = bystander.open();
    REQUIRE(fast(producer));
    uint64_t sent = 0;
    uint64_t received = 0;
    bool intact = true;
    while (Clock::now() < deadline) {
      for (int i = 0; i < 100; ++i) {
        const std::string text = "b" + std::to_string(sent);
        if (lib_send(producer.get(), text).rc == static_cast<long>(text.size())) ++sent;
      }
      for (;;) {
        const Received r =
            received % 3 == 0 ? receive(bystander_device.get()) : lib_receive(consumer.get());
        if (r.rc <= 0) break;
        intact = intact && r.data == "b" + std::to_string(received);
        ++received;
      }
    }
    REQUIRE(vandal.finish());
    CHECK(vandal.report() == "");
    stop.store(true);
    victim_user.join();
    victim_device_user.join();
    CHECK(intact);
    CHECK(received == sent);
    CHECK(sent > 0);

    // The server still serves the victim's device (its stats, a message through it) and both
    // groups go away cleanly; its threads are the same.
    synch_group_stats stats{};
    CHECK_SYS_OK(::ioctl(victim_device.get(), SYNCH_IOC_GET_STATS, &stats));
    Fd fresh = victim.open();
    const Sys answered = send(fresh.get(), "still served");  // garbled budget: ENOSPC is fair
    INFO("the write gave " << answered);
    CHECK((answered.ok() || answered.err == ENOSPC));
    if (threads_before > 0) CHECK(server_thread_count() == threads_before);
    victim.remove();
    bystander.remove();
  }

  TEST_CASE("a send still being copied into the ring is waited for, not read as an empty group") {
    // Regression: a receive without a timeout that met the oldest record still being written
    // (a producer mid-copy, or the server refilling the ring from its overflow) answered 0, as
    // for an empty group, although messages were queued behind it.
    TestGroup group("fppending");
    Membership member = join(group.path());
    REQUIRE(member.error == "");
    auto attached = region::Region::attach(member.grant.memfd);
    REQUIRE(attached.ok());
    region::Region& ring = attached.value();
    region::Header& header = ring.header();
    const auto slot = static_cast<uint16_t>(member.grant.grant.slot);
    const std::string text = "copied slowly";
    // What a send does up to its copy: the budget, the space, the tag RESERVED.
    REQUIRE(ring.reserve_budget(text.size(), 1 << 20));
    const uint64_t at = header.tail.fetch_add(region::record_span(text.size()));
    auto* record = reinterpret_cast<region::RecordHeader*>(
        reinterpret_cast<char*>(&header) + region::kRingOffset + (at & (ring.ring_bytes() - 1)));
    record->length.store(static_cast<uint32_t>(text.size()));
    record->budget.store(static_cast<uint32_t>(text.size()));
    record->tag.store(region::make_tag(at, slot, region::RecordState::kReserved));
    LibFd library(group);
    REQUIRE(fast(library));
    Fd device = group.open();
    Received by_device{};
    Received by_library{};
    const auto start = Clock::now();
    BoundedThread device_reader("device reader", [&] { by_device = receive(device.get()); });
    BoundedThread library_reader("library reader",
                                 [&] { by_library = lib_receive(library.get()); });
    // Both wait for the copy, and keep waiting: for 200 ms neither says "empty" (that span is
    // the subject). The synchronization: both asleep in their calls (the device reader in its
    // read(), the library reader on the futex). Not the group's readers_waiting: a read without
    // a timeout that waits for a copy under way is not a receive-timeout wait, and a CI run saw
    // the count at 1 for the whole patience.
    REQUIRE_EVENTUALLY(device_reader.blocked() && library_reader.blocked(),
                       "both readers asleep in their calls");
    std::this_thread::sleep_for(200ms);
    CHECK_FALSE(device_reader.done());
    CHECK_FALSE(library_reader.done());
    REQUIRE(send(device.get(), "behind it").ok());  // queued after the one being copied
    std::memcpy(reinterpret_cast<char*>(record) + region::kRecordHeaderBytes, text.data(),
                text.size());
    record->tag.store(region::make_tag(at, slot, region::RecordState::kCommitted));
    header.avail_seq.fetch_add(1);
    ::syscall(SYS_futex, &header.avail_seq, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
    const uint64_t one = 1;
    (void)!::write(member.grant.eventfd, &one, sizeof one);  // as a push tells the server
    device_reader.join();
    library_reader.join();
    CHECK(ms_since(start) >= 150);
    std::vector<std::string> got = {by_device.data, by_library.data};
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<std::string>{"behind it", text});
    ::close(member.socket);
    ::close(member.grant.memfd);
    ::close(member.grant.eventfd);
  }
}

}  // namespace synchmess::it
