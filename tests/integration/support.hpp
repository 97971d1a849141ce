// Helpers of the end-to-end suite: raw system calls on the synchmess ABI, nothing else.
//
// The scenarios are written once against a base directory (SYNCHMESS_DIR, default /dev/synch)
// so that they run against the CUSE devices and, later, against a FUSE mount of the same files.
// Checks that only hold for CUSE character devices (st_rdev, fsync's EINVAL, udev modes) ask
// cuse_nodes() first.
//
// Rules every test follows:
//  - every group it installs has a unique name (pid + tag + counter) and is removed at the end
//    (TestGroup's destructor), so tests are independent and leave nothing behind;
//  - every wait is bounded: poll() timeouts, wait_until() deadlines, children reaped with a
//    deadline and SIGKILLed after it, threads joined with a deadline (a thread that does not
//    finish ends the run with a message naming it); the per-test-case watchdog (main.cpp) is
//    the last resort;
//  - timing assertions are lower bounds ("did not return before ~80% of the timeout"); upper
//    bounds are generous guards against hangs only;
//  - doctest assertions run on the test's main thread; threads and child processes report back
//    (atomics, a pipe), and forked children never start threads (ThreadSanitizer forbids it
//    after a multi-threaded fork).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <synchmess/synchmess.h>

#include "task_state.hpp"

namespace synchmess::it {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---- configuration ----

// The device directory under test: $SYNCHMESS_DIR or /dev/synch.
const std::string& base_dir();
std::string dev_path(std::string_view leaf);  // base_dir() + "/" + leaf
std::string control_path();
std::string config_path();
// True when the control device is a character device (CUSE), false for a FUSE mount.
bool cuse_nodes();

// ---- skipped test cases ----
//
// A test case that cannot run here returns at its start: `if (needs_root("what")) return;`.
// doctest 2.4 has no run-time skip, so the suite keeps the account: the case says "SKIPPED: ..."
// (a doctest MESSAGE), the run lists every skipped case at its end (report_skips(), main.cpp),
// and a run that passed but skipped a case for want of root exits with kSkipExitCode (CTest's
// SKIP_RETURN_CODE convention, as host-no-cuse.sh), never 0: a run that skipped checks does not
// read as a plain pass. Cases of one transport only (CUSE nodes, a FUSE mount) are listed too,
// without changing the status: the other transport's run (sandbox.cuse.* or host.fuse.*) runs
// them.
inline constexpr int kSkipExitCode = 77;
// True, after a "SKIPPED: needs root, runs as uid N: <what>" message, when the suite is not root.
bool needs_root(std::string_view what);
// True, after a "SKIPPED" message naming `what`, when the devices are not CUSE nodes.
bool only_on_cuse(std::string_view what);
// True, after a "SKIPPED" message naming `what`, when the devices are CUSE nodes.
bool only_on_fuse(std::string_view what);
// For main.cpp: the test case now running (its skips are booked to it).
void enter_test_case(std::string_view name);
// For main.cpp, after the run: prints the skipped cases; true when the exit status must say so.
bool report_skips();
// True inside the UML sandbox (uml-run sets UML_RUN=1): slower system calls, smaller loads.
bool in_sandbox();
// Multiplies message counts: 1 in the sandbox, 4 natively (SYNCHMESS_LOAD_SCALE overrides).
int load_scale();
// Generous bound for things that must happen "soon" (a wake-up, a child's exit).
milliseconds patience();

// The number of threads of the synchmess-cuse process serving the devices: the process of
// $SYNCHMESS_SERVER_PID when the harness sets it (other servers may run beside ours, e.g. tests
// of another transport in parallel), else the one found by name in /proc. -1 when that process
// is not visible (gone, another pid namespace, or not exactly one by name).
int server_thread_count();

// ---- errors ----

// "ENOENT" (strerrorname_np) or the number.
std::string errno_name(int error);

// The outcome of one system call: its return value and errno when it failed.
struct Sys {
  long rc;
  int err;
  bool ok() const noexcept { return rc >= 0; }
};
// Runs `call` with errno cleared and captures rc and errno.
template <class F>
Sys sys(F&& call) {
  errno = 0;
  const long rc = static_cast<long>(call());
  return Sys{rc, rc < 0 ? errno : 0};
}

}  // namespace synchmess::it

namespace doctest {
template <>
struct StringMaker<synchmess::it::Sys> {
  static String convert(const synchmess::it::Sys& s) {
    std::string text = "rc=" + std::to_string(s.rc);
    if (s.rc < 0) text += " errno=" + synchmess::it::errno_name(s.err);
    return String(text.c_str());
  }
};
}  // namespace doctest

// CHECK that `expr` (a system call returning -1 on failure) fails with errno `E`; on mismatch the
// report names both errnos.
#define CHECK_ERRNO(expr, E)                                                               \
  do {                                                                                     \
    const ::synchmess::it::Sys sys_result_ = ::synchmess::it::sys([&] { return (expr); }); \
    INFO(#expr " -> " << sys_result_);                                                     \
    CHECK(sys_result_.rc == -1);                                                           \
    CHECK(::synchmess::it::errno_name(sys_result_.err) == ::synchmess::it::errno_name(E)); \
  } while (0)

// REQUIRE that `condition` comes to hold within patience(), polled by wait_until(): the state a
// test's next step needs (a thread parked, a count reached). The failure says what it waited for.
#define REQUIRE_EVENTUALLY(condition, what)                                      \
  REQUIRE_MESSAGE(                                                               \
      ::synchmess::it::wait_until([&] { return static_cast<bool>(condition); }), \
      "gave up after " << ::synchmess::it::patience().count() << " ms waiting until " << what)

// CHECK that `expr` succeeds (returns >= 0); the report shows errno otherwise.
#define CHECK_SYS_OK(expr)                                                                 \
  do {                                                                                     \
    const ::synchmess::it::Sys sys_result_ = ::synchmess::it::sys([&] { return (expr); }); \
    INFO(#expr " -> " << sys_result_);                                                     \
    CHECK(sys_result_.rc >= 0);                                                            \
  } while (0)

#define REQUIRE_SYS_OK(expr)                                                               \
  do {                                                                                     \
    const ::synchmess::it::Sys sys_result_ = ::synchmess::it::sys([&] { return (expr); }); \
    INFO(#expr " -> " << sys_result_);                                                     \
    REQUIRE(sys_result_.rc >= 0);                                                          \
  } while (0)

namespace synchmess::it {

// ---- descriptors ----

class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes now; returns close()'s result (0, or -1 with errno).
  int reset() noexcept;

 private:
  int fd_ = -1;
};

// open(path, flags | O_CLOEXEC). The Fd is invalid on failure, with errno set.
Fd open_fd(const std::string& path, int flags);
// Like open_fd, but a failure is a REQUIRE failure naming the path and errno.
Fd must_open(const std::string& path, int flags);

// ---- messages ----

// write() of one message; rc and errno.
Sys send(int fd, std::string_view text);
// One read() of up to `capacity` bytes; the bytes read (empty at 0), or the error in `err`.
struct Received {
  long rc;
  int err;
  std::string data;
};
Received receive(int fd, size_t capacity = 1 << 17);
// A text device (control, config) read to its end in reads of `chunk` bytes, as cat does; a read
// error is appended as "<read error ENAME>".
std::string read_text(int fd, size_t chunk);
// poll() for `events` within `timeout`; the revents, 0 on timeout, -1 on error.
int poll_events(int fd, short events, milliseconds timeout);

// ---- ioctls ----

Sys install_group(std::string_view name, synch_install* out = nullptr);
// REMOVE_GROUP on a fresh control descriptor.
Sys remove_group(std::string_view name);
group_t group_name(std::string_view name);
// GET_STATS; REQUIRE-fails on error.
synch_group_stats stats_of(int fd);
synch_params get_params();
Sys set_params(uint64_t max_message_size, uint64_t max_storage_size);

// A unique group name: "it<pid>-<tag>-<counter>" (at most 63 bytes).
std::string unique_name(std::string_view tag);

// An installed group, removed (as root, or as whoever installed it) when the object goes.
class TestGroup {
 public:
  explicit TestGroup(std::string_view tag);
  ~TestGroup();
  TestGroup(const TestGroup&) = delete;
  TestGroup& operator=(const TestGroup&) = delete;

  const std::string& name() const noexcept { return name_; }
  const std::string& path() const noexcept { return path_; }
  Fd open(int flags = O_RDWR) const { return must_open(path_, flags); }
  // Removes now (REQUIRE success); the destructor then does nothing.
  void remove();

 private:
  std::string name_;
  std::string path_;
  bool installed_ = false;
};

// Saves the parameters at construction, restores them at destruction (and checks it worked).
class ParamsGuard {
 public:
  ParamsGuard();
  ~ParamsGuard();
  ParamsGuard(const ParamsGuard&) = delete;
  ParamsGuard& operator=(const ParamsGuard&) = delete;
  const synch_params& saved() const noexcept { return saved_; }

 private:
  synch_params saved_{};
};

// ---- waiting ----

// Calls `done` until it returns true or `timeout` passes (sleeping `step` in between).
bool wait_until(const std::function<bool()>& done, milliseconds timeout = patience(),
                milliseconds step = 2ms);
// Waits until GET_STATS on `fd` satisfies `pred`; the last stats seen go to `last`.
bool wait_for_stats(int fd, const std::function<bool(const synch_group_stats&)>& pred,
                    synch_group_stats* last = nullptr, milliseconds timeout = patience());
// writers_waiting=N of group `name` in the control device's listing (writes parked for room:
// GET_STATS has no such field); -1 when the group is not listed.
long writers_waiting(const std::string& name);

// Where another thread or process is blocked (task_state.hpp): a test that needs it parked in
// poll(), epoll_wait() or on a futex before its step waits for the kernel to show it asleep
// (REQUIRE_EVENTUALLY), never sleeps and hopes.
using tasks::asleep;
using tasks::current_tid;

double ms_since(Clock::time_point start);

// Ends the whole run with a message: something that must have finished did not (a hung thread
// cannot be joined, so there is no other safe way out).
[[noreturn]] void abort_run(const std::string& why);

// A thread joined with a deadline (abort_run() naming it if it does not finish).
class BoundedThread {
 public:
  BoundedThread(std::string what, std::function<void()> body);
  ~BoundedThread();
  BoundedThread(BoundedThread&&) = delete;
  BoundedThread& operator=(BoundedThread&&) = delete;
  bool done() const noexcept { return done_->load(); }
  // True while the thread sleeps in the kernel (task_state.hpp): a body that goes straight into
  // a blocking call is then in that call, which a test waits for before its next step.
  bool blocked() const noexcept {
    const pid_t tid = tid_->load();
    return tid != 0 && !done() && tasks::asleep(tid);
  }
  pthread_t native_handle() { return thread_.native_handle(); }
  void join(milliseconds timeout = patience());

 private:
  std::string what_;
  std::shared_ptr<std::atomic<bool>> done_;
  std::shared_ptr<std::atomic<pid_t>> tid_;  // the thread's id, once it runs
  std::thread thread_;
};

// ---- child processes ----

// A forked child running `body`; what `body` returns is sent back through a pipe. Children never
// start threads. `as_nobody`: the child drops to uid/gid 65534 first (setresgid/setresuid).
class Child {
 public:
  Child(std::function<std::string()> body, bool as_nobody = false);
  ~Child();  // SIGKILLs and reaps a child still running (never waits for long)
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // In the child: sends `text` to the parent at once (progress markers that tell, if the child
  // hangs, where). The parent finds them at the start of report().
  static void progress(std::string_view text) noexcept;

  pid_t pid() const noexcept { return pid_; }
  // In the parent: takes what the child has sent so far (never blocks) and says whether it holds
  // `marker`, a progress() text: how a test waits until the child reached a step.
  bool reported(std::string_view marker);
  // Waits for the exit and the report. False on timeout: the child is then SIGKILLed and reaped
  // within a few seconds, or left behind when even SIGKILL cannot end it (blocked in a request
  // the server never answers: the kernel waits for the answer); report() then says so.
  bool finish(milliseconds timeout = patience());
  // After finish(): the report, and the raw wait status.
  const std::string& report() const noexcept { return report_; }
  int status() const noexcept { return status_; }
  bool exited_normally() const noexcept;
  std::string describe_status() const;

 private:
  // Appends to report_ what the child sent while poll() waits `wait_ms()` for more; closes the
  // pipe at its end.
  void read_report(const std::function<int()>& wait_ms);

  pid_t pid_ = -1;
  int pipe_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string report_;
};

// Runs `body` in a child (optionally as nobody) and returns its report; a child that crashed,
// hung or was killed yields a report saying so.
std::string run_in_child(const std::function<std::string()>& body, bool as_nobody = false,
                         milliseconds timeout = patience());

// Child-side helper: "" when `s` failed with `expected`, else a description.
std::string expect_errno(const char* what, const Sys& s, int expected);
// Child-side helper: "" when `s` succeeded, else a description.
std::string expect_ok(const char* what, const Sys& s);

// ---- signals ----

// Installs an empty SIGUSR1 handler without SA_RESTART for the object's lifetime.
class InterruptingSignal {
 public:
  InterruptingSignal();
  ~InterruptingSignal();
  InterruptingSignal(const InterruptingSignal&) = delete;
  InterruptingSignal& operator=(const InterruptingSignal&) = delete;
  static constexpr int kSignal = SIGUSR1;

 private:
  struct sigaction previous_ {};
};

}  // namespace synchmess::it
