// synchmess_load_client: a small client for the shell-level lifecycle checks in tests/sandbox/
// (install/remove groups, keep a device busy until the server goes away, wait for stats).
//
//   synchmess_load_client install NAME          prints the path; on error "error=<ERRNO>", exit 1
//   synchmess_load_client remove NAME           exit 0, or "error=<ERRNO>" and exit 1
//   synchmess_load_client MODE PATH             MODE: writer, reader, sleeper, waiter, poller.
//       Loops on PATH until a call fails (the server stopped, the group was removed), then prints
//       "<MODE>: <n> operations, ended with <ERRNO>" and exits 0. Prints "<MODE>: started" once
//       the first operation was made (for a sleeper or waiter: just before it blocks).
//   synchmess_load_client fast-writer|fast-reader|fast-waiter|fast-sleeper PATH
//       The same through the client library on its fast path (the group's shared region): PATH's
//       last component is the group's name, in SYNCHMESS_DIR (or /dev/synch). Exits 1 when the
//       server offers no fast path. fast-waiter receives with the receive timeout forever.
//   synchmess_load_client churner NAME
//       Installs and removes group NAME in a loop until a call fails; prints like a MODE.
//   synchmess_load_client wait-stats PATH SLEEPERS WAITING TIMEOUT_MS
//       Waits until the group has at least SLEEPERS sleepers and WAITING waiting readers.
//   synchmess_load_client install-many PREFIX
//       Installs PREFIX-0, PREFIX-1, ... until an install fails; prints
//       "install-many: <n> groups, ended with <ERRNO>". For the quota checks.
//   synchmess_load_client flood SIZE REFUSALS PATH...
//       Writes SIZE-byte messages round-robin into the groups at PATH... until a write fails,
//       then tries REFUSALS more writes (each must fail the same way); prints
//       "flood: <n> messages, ended with <ERRNO>, <r> more refused".
//   synchmess_load_client drain PATH...
//       Reads every group at PATH... until it is empty; prints "drain: <n> messages".
//   synchmess_load_client burst NAME SIZE
//       Installs NAME, sets a send delay of an hour, writes SIZE-byte messages until a write
//       fails, revokes them and removes NAME, all at once (well within a second); prints
//       "burst: <n> messages, ended with <ERRNO>, <r> revoked".
//   synchmess_load_client fragment PREFIX SIZE...
//       Fragments the server's heap on purpose: for each SIZE (growing), installs PREFIX-<i>-a
//       and PREFIX-<i>-b with a send delay of an hour (their messages stay on the server's
//       heap), writes SIZE-byte messages into them in turn until a write fails, then revokes
//       -b's: every other message is freed, leaving holes too small for the next SIZE. Prints
//       "fragment: <n> messages in <k> rounds, ended with <ERRNO>" (the last round's error)
//       and one "round <i>: ..." line each, then holds its descriptors (a close would flush the
//       delayed messages) until a signal ends it. The global bound must come before
//       max_storage_size.
//   synchmess_load_client waiters PATH THREADS
//       THREADS threads, each on a descriptor of its own with the receive timeout set to
//       forever, read PATH in a loop and print "received <message>" for each message; for the
//       checks that kill a multi-threaded reader while it waits. Exits when a read fails.
//   synchmess_load_client forge-endless|forge-budget PATH
//       A hostile member of the group at PATH (tests/integration/hostile.hpp): does the fast
//       path's handshake by hand and forges the group's region (forge-endless: a ring that never
//       empties; forge-budget: a broken ring and its budget counter held at 0).
//       Prints "<MODE>: started" once the forgery is in place, forges until a signal ends it
//       (or for 120 s), then prints "<MODE>: ended".
//
// Exit status 0 as described, 1 on an unexpected outcome, 2 on a bad command line.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <synchmess/client.h>
#include <synchmess/synchmess.h>

#include "hostile.hpp"

namespace {

std::string errno_name(int error) {
  const char* name = strerrorname_np(error);
  return name != nullptr ? name : std::to_string(error);
}

// One line on stdout, flushed at once (the harness watches the log while the client runs).
template <class... Args>
void say(const char* format, Args... args) {
  std::printf(format, args...);
  std::fflush(stdout);
}

int usage() {
  std::fprintf(stderr,
               "usage: synchmess_load_client install|remove NAME\n"
               "       synchmess_load_client writer|reader|sleeper|waiter|poller PATH\n"
               "       synchmess_load_client fast-writer|fast-reader|fast-waiter|fast-sleeper "
               "PATH\n"
               "       synchmess_load_client churner NAME\n"
               "       synchmess_load_client wait-stats PATH SLEEPERS WAITING TIMEOUT_MS\n"
               "       synchmess_load_client waiters PATH THREADS\n"
               "       synchmess_load_client install-many PREFIX\n"
               "       synchmess_load_client flood SIZE REFUSALS PATH...\n"
               "       synchmess_load_client drain PATH...\n"
               "       synchmess_load_client burst NAME SIZE\n"
               "       synchmess_load_client forge-endless|forge-budget PATH\n"
               "       synchmess_load_client fragment PREFIX SIZE...\n");
  return 2;
}

std::string control_path() {
  const char* dir = std::getenv("SYNCHMESS_DIR");
  return std::string(dir != nullptr && *dir != '\0' ? dir : SYNCH_DEV_DIR) + "/synchmess";
}

// One request to the control device: installs or removes `name`. 0, or the errno; `request`
// holds the answer (path, created).
int control_request(bool install, const std::string& name, synch_install& request) {
  const int fd = ::open(control_path().c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno;
  std::snprintf(request.group.name, sizeof request.group.name, "%s", name.c_str());
  const int rc = install ? ::ioctl(fd, SYNCH_IOC_INSTALL_GROUP, &request)
                         : ::ioctl(fd, SYNCH_IOC_REMOVE_GROUP, &request.group);
  const int error = rc == 0 ? 0 : errno;
  ::close(fd);
  return error;
}

int control_call(bool install, const char* name) {
  synch_install request{};
  if (const int error = control_request(install, name, request); error != 0) {
    std::printf("error=%s\n", errno_name(error).c_str());
    return 1;
  }
  if (install) std::printf("%s created=%u\n", request.path, request.created);
  return 0;
}

// One operation of a mode: >= 0 on success, -1 with errno on failure.
long operate(std::string_view mode, int fd) {
  if (mode == "writer") {
    for (;;) {
      const long rc = ::write(fd, "load", 4);
      if (rc >= 0 || (errno != ENOSPC && errno != EAGAIN)) return rc;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // full: readers will drain
    }
  }
  if (mode == "reader" || mode == "waiter") {
    char buffer[256];
    return ::read(fd, buffer, sizeof buffer);
  }
  if (mode == "sleeper") return ::ioctl(fd, SYNCH_IOC_SLEEP_ON_BARRIER);
  if (mode == "poller") {
    pollfd entry{fd, POLLIN, 0};
    const int rc = ::poll(&entry, 1, -1);
    if (rc < 0) return -1;
    if ((entry.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
      errno = 0;  // reported as "ended with POLLERR/POLLHUP/POLLNVAL"
      return -1;
    }
    char buffer[256];
    return ::read(fd, buffer, sizeof buffer) < 0 ? -1 : 0;
  }
  errno = EINVAL;
  return -1;
}

int run_mode(const char* mode_text, const char* path) {
  const std::string_view mode = mode_text;
  const int fd = ::open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    say("%s: cannot open %s: %s\n", mode_text, path, errno_name(errno).c_str());
    return 1;
  }
  if (mode == "waiter") {
    uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
    if (::ioctl(fd, SYNCH_IOC_SET_RECV_TIMEOUT, &forever) != 0) {
      say("%s: SET_RECV_TIMEOUT failed: %s\n", mode_text, errno_name(errno).c_str());
      return 1;
    }
  }
  const bool blocks = mode == "sleeper" || mode == "waiter" || mode == "poller";
  long count = 0;
  for (;;) {
    if (count == 0 && blocks) say("%s: started\n", mode_text);
    if (operate(mode, fd) < 0) break;
    if (count == 0 && !blocks) say("%s: started\n", mode_text);
    ++count;
  }
  const int error = errno;
  const std::string ending = error == 0 ? "POLLERR/POLLHUP/POLLNVAL" : errno_name(error);
  say("%s: %ld operations, ended with %s\n", mode_text, count, ending.c_str());
  ::close(fd);
  return 0;
}

// The library's modes: one library call each, on the fast path.
long operate_fast(std::string_view mode, int fd) {
  char buffer[256];
  if (mode == "fast-writer") {
    for (;;) {
      const long rc = synch_send(fd, "load", 4);
      if (rc >= 0 || errno != ENOSPC) return rc;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  if (mode == "fast-reader" || mode == "fast-waiter")
    return synch_receive(fd, buffer, sizeof buffer);
  return synch_sleep_on_barrier(fd);  // fast-sleeper
}

int run_fast_mode(const char* mode_text, const char* path) {
  const std::string_view mode = mode_text;
  const char* slash = std::strrchr(path, '/');
  const char* name = slash != nullptr ? slash + 1 : path;
  const int fd = synch_open_group(name, O_RDWR);
  if (fd < 0) {
    say("%s: cannot open %s: %s\n", mode_text, name, errno_name(errno).c_str());
    return 1;
  }
  if (synch_fast_path_active(fd) != 1) {
    say("%s: the server offered no fast path for %s\n", mode_text, name);
    return 1;
  }
  if (mode == "fast-waiter" && synch_set_recv_timeout(fd, SYNCH_RECV_TIMEOUT_FOREVER) != 0) {
    say("%s: synch_set_recv_timeout failed: %s\n", mode_text, errno_name(errno).c_str());
    return 1;
  }
  const bool blocks = mode == "fast-sleeper" || mode == "fast-waiter";
  long count = 0;
  for (;;) {
    if (count == 0 && blocks) say("%s: started\n", mode_text);
    if (operate_fast(mode, fd) < 0) break;
    if (count == 0 && !blocks) say("%s: started\n", mode_text);
    ++count;
  }
  const int error = errno;
  say("%s: %ld operations, ended with %s\n", mode_text, count, errno_name(error).c_str());
  synch_close_group(fd);
  return 0;
}

int churn(const char* name) {
  long count = 0;
  int error = 0;
  for (;;) {
    const int fd = ::open(control_path().c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      error = errno;
      break;
    }
    synch_install request{};
    std::strncpy(request.group.name, name, sizeof request.group.name - 1);
    int rc = ::ioctl(fd, SYNCH_IOC_INSTALL_GROUP, &request);
    if (rc == 0) rc = ::ioctl(fd, SYNCH_IOC_REMOVE_GROUP, &request.group);
    error = errno;
    ::close(fd);
    if (rc != 0) break;
    if (count++ == 0) say("churner: started\n");
  }
  say("churner: %ld operations, ended with %s\n", count, errno_name(error).c_str());
  return 0;
}

int wait_stats(const char* path, long sleepers, long waiting, long timeout_ms) {
  const int fd = ::open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::printf("wait-stats: cannot open %s: %s\n", path, errno_name(errno).c_str());
    return 1;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  synch_group_stats stats{};
  for (;;) {
    if (::ioctl(fd, SYNCH_IOC_GET_STATS, &stats) == 0 &&
        stats.sleepers >= static_cast<uint64_t>(sleepers) &&
        stats.readers_waiting >= static_cast<uint64_t>(waiting)) {
      ::close(fd);
      return 0;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::printf("wait-stats: timed out with sleepers=%llu readers_waiting=%llu\n",
              static_cast<unsigned long long>(stats.sleepers),
              static_cast<unsigned long long>(stats.readers_waiting));
  ::close(fd);
  return 1;
}

int install_many(const char* prefix) {
  long count = 0;
  int error = 0;
  for (;; ++count) {
    synch_install request{};
    error = control_request(true, std::string(prefix) + "-" + std::to_string(count), request);
    if (error != 0) break;
  }
  say("install-many: %ld groups, ended with %s\n", count, errno_name(error).c_str());
  return 0;
}

std::vector<int> open_all(int count, char** paths, int flags) {
  std::vector<int> fds;
  for (int i = 0; i < count; ++i) {
    fds.push_back(::open(paths[i], flags | O_CLOEXEC));
    if (fds.back() < 0) {
      say("cannot open %s: %s\n", paths[i], errno_name(errno).c_str());
      std::exit(1);
    }
  }
  return fds;
}

int flood(long size, long refusals, int count, char** paths) {
  if (size < 1 || size > 65536 || refusals < 0) return usage();
  const std::vector<int> fds = open_all(count, paths, O_WRONLY);
  const std::string message(static_cast<size_t>(size), 'f');
  long sent = 0;
  int error = 0;
  for (;; ++sent) {
    if (::write(fds[static_cast<size_t>(sent) % fds.size()], message.data(), message.size()) < 0) {
      error = errno;
      break;
    }
  }
  long refused = 0;
  for (; refused < refusals; ++refused) {
    if (::write(fds[0], message.data(), message.size()) >= 0 || errno != error) break;
  }
  say("flood: %ld messages, ended with %s, %ld more refused\n", sent, errno_name(error).c_str(),
      refused);
  return 0;
}

int drain(int count, char** paths) {
  const std::vector<int> fds = open_all(count, paths, O_RDONLY | O_NONBLOCK);
  long received = 0;
  char buffer[65536];
  for (const int fd : fds) {
    while (::read(fd, buffer, sizeof buffer) > 0)
      ++received;
  }
  say("drain: %ld messages\n", received);
  return 0;
}

// Installs `name` and opens it with a send delay of an hour (its messages stay on the server's
// heap): the descriptor, or -1 with errno set.
int open_delayed_group(const std::string& name) {
  constexpr uint32_t kHour = 3600 * 1000;
  synch_install request{};
  if (const int error = control_request(true, name, request); error != 0) {
    errno = error;
    return -1;
  }
  const int fd = ::open(request.path, O_RDWR | O_CLOEXEC);
  if (fd >= 0 && ::ioctl(fd, SYNCH_IOC_SET_SEND_DELAY, &kHour) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

int burst(const char* name, long size) {
  if (size < 1 || size > 65536) return usage();
  const int fd = open_delayed_group(name);
  if (fd < 0) {
    say("burst: cannot set up %s: %s\n", name, errno_name(errno).c_str());
    return 1;
  }
  const std::string message(static_cast<size_t>(size), 'B');
  long sent = 0;
  while (::write(fd, message.data(), message.size()) >= 0)
    ++sent;
  const int error = errno;
  const int revoked = ::ioctl(fd, SYNCH_IOC_REVOKE_DELAYED_MESSAGES);
  ::close(fd);
  if (control_call(false, name) != 0) return 1;
  say("burst: %ld messages, ended with %s, %d revoked\n", sent, errno_name(error).c_str(), revoked);
  return 0;
}

int fragment(const char* prefix, int count, char** sizes) {
  long total = 0;
  int error = 0;
  for (int round = 0; round < count; ++round) {
    const long size = std::atol(sizes[round]);
    if (size < 1 || size > 65536) return usage();
    int fds[2];
    for (int i = 0; i < 2; ++i) {
      fds[i] = open_delayed_group(std::string(prefix) + "-" + std::to_string(round) +
                                  (i == 0 ? "-a" : "-b"));
      if (fds[i] < 0) {
        say("fragment: round %d: cannot set up its groups: %s\n", round, errno_name(errno).c_str());
        return 1;
      }
    }
    const std::string message(static_cast<size_t>(size), 'F');
    long sent = 0;
    while (::write(fds[sent % 2], message.data(), message.size()) >= 0)
      ++sent;
    error = errno;
    const int revoked = ::ioctl(fds[1], SYNCH_IOC_REVOKE_DELAYED_MESSAGES);
    say("round %d: %ld messages of %ld bytes, ended with %s, %d revoked\n", round, sent, size,
        errno_name(error).c_str(), revoked);
    total += sent;
    // fds stay open: closing the last descriptor of a group would flush its delayed messages.
  }
  say("fragment: %ld messages in %d rounds, ended with %s\n", total, count,
      errno_name(error).c_str());
  for (;;)
    ::pause();
}

int run_waiters(const char* path, long threads) {
  if (threads < 1 || threads > 64) return usage();
  std::vector<std::thread> readers;
  for (long i = 0; i < threads; ++i) {
    readers.emplace_back([path] {
      const int fd = ::open(path, O_RDWR | O_CLOEXEC);
      uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
      if (fd < 0 || ::ioctl(fd, SYNCH_IOC_SET_RECV_TIMEOUT, &forever) != 0) {
        say("waiters: cannot open %s: %s\n", path, errno_name(errno).c_str());
        return;
      }
      char buffer[256];
      for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0) break;
        if (n > 0) say("received %.*s\n", static_cast<int>(n), buffer);
      }
      ::close(fd);
    });
  }
  for (auto& reader : readers)
    reader.join();
  return 0;
}

int run_forger(std::string_view mode, const char* path) {
  const auto forgery = mode == "forge-endless" ? synchmess::it::Forgery::kEndlessRing
                                               : synchmess::it::Forgery::kBrokenRingZeroBudget;
  const std::string mode_text(mode);
  const std::string failed = synchmess::it::forge(
      path, forgery, std::chrono::steady_clock::now() + std::chrono::seconds(120), [&] {
        std::printf("%s: started\n", mode_text.c_str());
        std::fflush(stdout);
      });
  if (!failed.empty()) {
    std::printf("%s: %s\n", mode_text.c_str(), failed.c_str());
    return 1;
  }
  std::printf("%s: ended\n", mode_text.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string_view mode = argv[1];
  if (mode == "install" || mode == "remove") {
    return argc == 3 ? control_call(mode == "install", argv[2]) : usage();
  }
  if (mode == "churner") return argc == 3 ? churn(argv[2]) : usage();
  if (mode == "wait-stats") {
    if (argc != 6) return usage();
    return wait_stats(argv[2], std::atol(argv[3]), std::atol(argv[4]), std::atol(argv[5]));
  }
  if (mode == "install-many") return argc == 3 ? install_many(argv[2]) : usage();
  if (mode == "flood") {
    if (argc < 5) return usage();
    return flood(std::atol(argv[2]), std::atol(argv[3]), argc - 4, argv + 4);
  }
  if (mode == "drain") return drain(argc - 2, argv + 2);
  if (mode == "burst") return argc == 4 ? burst(argv[2], std::atol(argv[3])) : usage();
  if (mode == "fragment") return argc >= 4 ? fragment(argv[2], argc - 3, argv + 3) : usage();
  if (mode == "waiters") return argc == 4 ? run_waiters(argv[2], std::atol(argv[3])) : usage();
  if (argc != 3) return usage();
  if (mode == "writer" || mode == "reader" || mode == "sleeper" || mode == "waiter" ||
      mode == "poller") {
    return run_mode(argv[1], argv[2]);
  }
  if (mode == "fast-writer" || mode == "fast-reader" || mode == "fast-waiter" ||
      mode == "fast-sleeper") {
    return run_fast_mode(argv[1], argv[2]);
  }
  if (mode == "forge-endless" || mode == "forge-budget") return run_forger(mode, argv[2]);
  return usage();
}
