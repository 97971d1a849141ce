// Where another thread or process is: what the kernel says of a task in /proc. Shared by the
// end-to-end suite and the unit tests (tests/unit/test_support.hpp includes it), so that a test
// that needs another task blocked in a call (parked in poll(), in epoll_wait(), on a futex) waits
// until the kernel shows it asleep instead of sleeping and hoping.
//
// How: the task says it is about to make the call (it publishes current_tid(), or the test knows
// its pid), and the test waits until /proc/<tid>/stat shows it in state S, interruptible sleep.
// Between the announcement and the call the task only runs, so asleep means in the call. Not
// /proc/<tid>/wchan or /proc/<tid>/syscall: the UML sandbox kernel names every sleeping task's
// function "um_set_signals" and has no syscall file (checked under tests/sandbox/uml-run).
//
// Plain system calls only, no doctest and no allocation-heavy streams: usable in a forked child
// of a multi-threaded test (which must not start threads).
#pragma once

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace synchmess::tasks {

// The calling thread's id (gettid()): what a thread tells the test so that it can be looked at.
inline pid_t current_tid() noexcept {
  return static_cast<pid_t>(::syscall(SYS_gettid));
}

// The state letter of task `tid` (a thread of any process, or a process by its pid) from
// /proc/<tid>/stat: 'R' running, 'S' asleep in an interruptible wait, 'D', 'Z', ...; '\0' when
// the task is gone or its file cannot be read.
inline char state_of(pid_t tid) noexcept {
  const std::string path = "/proc/" + std::to_string(tid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return '\0';
  char text[512];
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return '\0';
  text[n] = '\0';
  // "pid (comm) S ...": comm may hold spaces and parentheses, so the state follows the last ')'.
  const char* close_paren = std::strrchr(text, ')');
  if (close_paren == nullptr || close_paren[1] != ' ') return '\0';
  return close_paren[2];
}

// True while task `tid` sleeps in the kernel in an interruptible wait (state S): after it said it
// is about to block in a call, it is in that call and only a wake-up takes it out.
inline bool asleep(pid_t tid) noexcept {
  return tid > 0 && state_of(tid) == 'S';
}

}  // namespace synchmess::tasks
