// Exactly once with dying readers (SPEC "Messages"): a reader killed or interrupted while it
// waits never takes a message with it. Each round parks readers, signals them, writes at once
// (the signal may not even have been delivered yet: that is the race that lost messages), and
// then finds every message either received by a reader that lived to report it or still queued.
#include <poll.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include <synchmess/client.h>

#include "support.hpp"

extern char** environ;

namespace synchmess::it {
namespace {

constexpr int kRounds = 12;

// Takes every queued message (non-blocking reads) and returns them.
std::vector<std::string> drain(const TestGroup& group) {
  Fd fd = group.open(O_RDWR | O_NONBLOCK);
  std::vector<std::string> messages;
  for (;;) {
    Received r = receive(fd.get(), 256);
    if (r.rc <= 0) break;
    messages.push_back(r.data);
  }
  return messages;
}

// synchmess_load_client, built beside this suite.
std::string load_client_path() {
  char self[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  REQUIRE(n > 0);
  std::string path(self, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/')) + "/synchmess_load_client";
}

// A multi-threaded reader process: synchmess_load_client waiters PATH THREADS, its stdout on a
// pipe. (Forked children of this suite never start threads, so it is a program of its own.)
class WaitersProcess {
 public:
  WaitersProcess(const std::string& path, int threads) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    const std::string program = load_client_path();
    const std::string count = std::to_string(threads);
    const char* argv[] = {program.c_str(), "waiters", path.c_str(), count.c_str(), nullptr};
    const int rc = ::posix_spawn(&pid_, program.c_str(), &actions, nullptr,
                                 const_cast<char* const*>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    pipe_ = fds[0];
    REQUIRE_MESSAGE(rc == 0, "posix_spawn " << program << ": " << errno_name(rc));
  }
  ~WaitersProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
    if (pipe_ >= 0) ::close(pipe_);
  }
  WaitersProcess(const WaitersProcess&) = delete;
  WaitersProcess& operator=(const WaitersProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }

  // Waits for the process to end (it was killed); returns its output.
  std::string reap() {
    std::string output;
    char buffer[512];
    for (;;) {
      pollfd entry{pipe_, POLLIN, 0};
      if (::poll(&entry, 1, static_cast<int>(patience().count())) <= 0) break;
      const ssize_t n = ::read(pipe_, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      output.append(buffer, static_cast<size_t>(n));
    }
    int status = 0;
    const bool reaped = wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; });
    REQUIRE_MESSAGE(reaped, "the killed reader process " << pid_ << " did not end");
    pid_ = -1;
    return output;
  }

 private:
  pid_t pid_ = -1;
  int pipe_ = -1;
};

// "received <message>" lines of a waiters process.
std::vector<std::string> received_lines(const std::string& output) {
  std::vector<std::string> messages;
  size_t start = 0;
  while (start < output.size()) {
    size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(start, end - start);
    if (line.rfind("received ", 0) == 0) messages.push_back(line.substr(9));
    start = end + 1;
  }
  return messages;
}

}  // namespace

TEST_SUITE("dying readers") {
  TEST_CASE("a reader killed while it waits takes no message with it (single-threaded)") {
    // SIGKILL; SIGTERM and SIGINT at their default action (the kernel turns them into a group
    // kill at once); SIGQUIT, whose default action dumps core (it is not turned into SIGKILL:
    // the reader dies only when it runs).
    for (const int signal : {SIGKILL, SIGTERM, SIGINT, SIGQUIT}) {
      const std::string signal_name = sigabbrev_np(signal);
      CAPTURE(signal_name);
      TestGroup group("dying1");
      Fd writer = group.open();
      for (int round = 0; round < kRounds; ++round) {
        CAPTURE(round);
        Child reader([&group]() -> std::string {
          ::prctl(PR_SET_DUMPABLE, 0);  // SIGQUIT: no core file
          ::signal(SIGINT, SIG_DFL);
          ::signal(SIGTERM, SIG_DFL);
          ::signal(SIGQUIT, SIG_DFL);
          Fd fd = open_fd(group.path(), O_RDWR);
          if (!fd) return "open: " + errno_name(errno);
          uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
          if (::ioctl(fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &forever) != 0) return "timeout";
          Received r = receive(fd.get(), 256);
          return "survived and read '" + r.data + "'";
        });
        REQUIRE(wait_for_stats(writer.get(), [](const auto& s) { return s.readers_waiting == 1; }));
        const std::string message = "m" + std::to_string(round);
        REQUIRE(::kill(reader.pid(), signal) == 0);
        REQUIRE(send(writer.get(), message).ok());  // right after kill(): no waiting
        REQUIRE(reader.finish());
        CHECK(reader.describe_status() == std::string("killed by ") + sigabbrev_np(signal));
        CHECK(reader.report() == "");
        const std::vector<std::string> left = drain(group);
        CHECK(left == std::vector<std::string>{message});
      }
    }
  }

  TEST_CASE("a multi-threaded reader killed while its threads wait takes no message with it") {
    constexpr int kThreads = 4;
    for (const int signal : {SIGKILL, SIGTERM}) {
      const std::string signal_name = sigabbrev_np(signal);
      CAPTURE(signal_name);
      TestGroup group("dyingmt");
      Fd writer = group.open();
      for (int round = 0; round < kRounds / 2; ++round) {
        CAPTURE(round);
        WaitersProcess readers(group.path(), kThreads);
        REQUIRE(wait_for_stats(writer.get(),
                               [](const auto& s) { return s.readers_waiting == kThreads; }));
        REQUIRE(::kill(readers.pid(), signal) == 0);
        std::vector<std::string> sent;
        for (int i = 0; i < kThreads; ++i) {
          sent.push_back("r" + std::to_string(round) + "m" + std::to_string(i));
          REQUIRE(send(writer.get(), sent.back()).ok());
        }
        const std::vector<std::string> taken = received_lines(readers.reap());
        CHECK(taken.empty());
        CHECK(drain(group) == sent);
      }
    }
  }

  TEST_CASE("a library reader killed while it waits on the fast path takes no message with it") {
    // The client library waits on the region's futex word, not in a request to the server: a
    // message written after its death, by a device writer or a library one, stays in the ring.
    TestGroup group("dyingfast");
    Fd writer = group.open();
    const int library_writer = synch_open_group(group.name().c_str(), O_RDWR);
    REQUIRE(library_writer >= 0);
    REQUIRE(synch_fast_path_active(library_writer) == 1);
    for (const int signal : {SIGKILL, SIGTERM}) {
      const std::string signal_name = sigabbrev_np(signal);
      CAPTURE(signal_name);
      for (int round = 0; round < kRounds / 2; ++round) {
        CAPTURE(round);
        Child reader([&group]() -> std::string {
          ::signal(SIGTERM, SIG_DFL);
          const int fd = synch_open_group(group.name().c_str(), O_RDWR);
          if (fd < 0) return "open: " + errno_name(errno);
          if (synch_fast_path_active(fd) != 1) return "no fast path";
          if (synch_set_recv_timeout(fd, SYNCH_RECV_TIMEOUT_FOREVER) != 0) return "timeout";
          char buffer[256];
          const ssize_t n = synch_receive(fd, buffer, sizeof buffer);
          return "survived and read " + std::to_string(n) + " bytes";
        });
        REQUIRE(wait_for_stats(writer.get(), [](const auto& s) { return s.readers_waiting == 1; }));
        REQUIRE(wait_until([&] { return asleep(reader.pid()); }));
        const std::string by_device = "d" + std::to_string(round);
        const std::string by_library = "l" + std::to_string(round);
        REQUIRE(::kill(reader.pid(), signal) == 0);
        REQUIRE(send(writer.get(), by_device).ok());  // right after kill(): no waiting
        REQUIRE(synch_send(library_writer, by_library.data(), by_library.size()) ==
                static_cast<ssize_t>(by_library.size()));
        REQUIRE(reader.finish());
        CHECK(reader.describe_status() == std::string("killed by ") + sigabbrev_np(signal));
        CHECK(reader.report() == "");
        CHECK(drain(group) == std::vector<std::string>{by_device, by_library});
        // Its waiter count is taken back once the server sees its connection end.
        CHECK(wait_for_stats(writer.get(), [](const auto& s) { return s.readers_waiting == 0; }));
      }
    }
    synch_close_group(library_writer);
  }

  TEST_CASE("a reader interrupted by a handled signal either returns the message or leaves it") {
    TestGroup group("interrupted");
    Fd writer = group.open();
    for (int round = 0; round < kRounds; ++round) {
      CAPTURE(round);
      Child reader([&group]() -> std::string {
        struct sigaction action {};
        action.sa_handler = [](int) {};
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGUSR1, &action, nullptr);  // no SA_RESTART: the read may end with EINTR
        Fd fd = open_fd(group.path(), O_RDWR);
        if (!fd) return "open: " + errno_name(errno);
        uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
        if (::ioctl(fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &forever) != 0) return "timeout";
        Received r = receive(fd.get(), 256);
        if (r.rc < 0) return "error " + errno_name(r.err);
        return "read " + r.data;
      });
      REQUIRE(wait_for_stats(writer.get(), [](const auto& s) { return s.readers_waiting == 1; }));
      const std::string message = "h" + std::to_string(round);
      REQUIRE(::kill(reader.pid(), SIGUSR1) == 0);
      REQUIRE(send(writer.get(), message).ok());
      REQUIRE(reader.finish());
      const std::vector<std::string> left = drain(group);
      if (reader.report() == "read " + message) {
        CHECK(left.empty());
      } else {
        CHECK(reader.report() == "error EINTR");
        CHECK(left == std::vector<std::string>{message});
      }
    }
  }
}

}  // namespace synchmess::it
