#include "support.hpp"

#include <dirent.h>
#include <grp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <vector>

namespace synchmess::it {

// ---- configuration ----

const std::string& base_dir() {
  static const std::string dir = [] {
    const char* env = std::getenv("SYNCHMESS_DIR");
    std::string value = env != nullptr && *env != '\0' ? env : SYNCH_DEV_DIR;
    while (value.size() > 1 && value.back() == '/')
      value.pop_back();
    return value;
  }();
  return dir;
}

std::string dev_path(std::string_view leaf) {
  return base_dir() + "/" + std::string(leaf);
}
std::string control_path() {
  return dev_path("synchmess");
}
std::string config_path() {
  return dev_path("config");
}

bool cuse_nodes() {
  static const bool is_chr = [] {
    struct stat st {};
    return stat(control_path().c_str(), &st) == 0 && S_ISCHR(st.st_mode);
  }();
  return is_chr;
}

bool in_sandbox() {
  const char* env = std::getenv("UML_RUN");
  return env != nullptr && std::string_view(env) == "1";
}

int load_scale() {
  if (const char* env = std::getenv("SYNCHMESS_LOAD_SCALE"); env != nullptr) {
    const int value = std::atoi(env);
    if (value > 0) return value;
  }
  return in_sandbox() ? 1 : 4;
}

milliseconds patience() {
  if (const char* env = std::getenv("SYNCHMESS_PATIENCE_MS"); env != nullptr) {
    const long value = std::atol(env);
    if (value > 0) return milliseconds(value);
  }
  return in_sandbox() ? 30s : 10s;
}

namespace {

// "/proc/<pid>/task" of the one process named synchmess-cuse, or "" when not exactly one.
std::string server_task_dir_by_name() {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return "";
  int found = 0;
  std::string task_dir;
  while (const dirent* entry = ::readdir(proc)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    const std::string dir = std::string("/proc/") + entry->d_name;
    FILE* comm = std::fopen((dir + "/comm").c_str(), "r");
    if (comm == nullptr) continue;
    char name[64] = {};
    const bool read_ok = std::fgets(name, sizeof name, comm) != nullptr;
    std::fclose(comm);
    if (read_ok && std::string_view(name) == "synchmess-cuse\n") {
      ++found;
      task_dir = dir + "/task";
    }
  }
  ::closedir(proc);
  return found == 1 ? task_dir : "";
}

}  // namespace

// ---- skipped test cases ----

namespace {

struct Skip {
  std::string test_case;
  std::string why;
  bool counts;  // for the exit status (a missing privilege, not another transport's case)
};

struct SkipBook {
  std::mutex mu;
  std::string current;
  std::vector<Skip> skips;
};

SkipBook& skip_book() {
  static SkipBook book;
  return book;
}

// Books a skip of the running test case and says so in it. Always true (the caller returns).
bool skip_case(std::string why, bool counts) {
  MESSAGE("SKIPPED: " << why);
  SkipBook& book = skip_book();
  std::lock_guard lock(book.mu);
  book.skips.push_back(Skip{book.current, std::move(why), counts});
  return true;
}

}  // namespace

bool needs_root(std::string_view what) {
  if (::geteuid() == 0) return false;
  return skip_case(
      "needs root, runs as uid " + std::to_string(::geteuid()) + ": " + std::string(what),
      /*counts=*/true);
}

bool only_on_cuse(std::string_view what) {
  if (cuse_nodes()) return false;
  return skip_case("not CUSE character devices: " + std::string(what), /*counts=*/false);
}

bool only_on_fuse(std::string_view what) {
  if (!cuse_nodes()) return false;
  return skip_case("not a FUSE mount: " + std::string(what), /*counts=*/false);
}

void enter_test_case(std::string_view name) {
  SkipBook& book = skip_book();
  std::lock_guard lock(book.mu);
  book.current = name;
}

bool report_skips() {
  SkipBook& book = skip_book();
  std::lock_guard lock(book.mu);
  if (book.skips.empty()) return false;
  size_t counted = 0;
  for (const Skip& skip : book.skips)
    counted += skip.counts ? 1 : 0;
  std::printf("SKIPPED: %zu test case(s) of this run did not run their checks%s\n",
              book.skips.size(), counted == 0 ? " (another transport's run covers them)" : "");
  for (const Skip& skip : book.skips) {
    std::printf("  SKIPPED%s \"%s\": %s\n", skip.counts ? "" : " here", skip.test_case.c_str(),
                skip.why.c_str());
  }
  if (counted != 0) {
    std::printf(
        "SKIPPED: %zu of them need what this run lacks: exit status %d, not 0 "
        "(run the suite as root to run them)\n",
        counted, kSkipExitCode);
  }
  std::fflush(stdout);
  return counted != 0;
}

int server_thread_count() {
  std::string task_dir;
  if (const char* pid = std::getenv("SYNCHMESS_SERVER_PID"); pid != nullptr && pid[0] != '\0') {
    task_dir = std::string("/proc/") + pid + "/task";
  } else {
    task_dir = server_task_dir_by_name();
  }
  if (task_dir.empty()) return -1;
  DIR* tasks = ::opendir(task_dir.c_str());
  if (tasks == nullptr) return -1;
  int count = 0;
  while (const dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(tasks);
  return count;
}

// ---- errors ----

std::string errno_name(int error) {
  if (error == 0) return "0 (no error)";
  if (const char* name = strerrorname_np(error); name != nullptr) return name;
  return "errno " + std::to_string(error);
}

// ---- descriptors ----

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

int Fd::reset() noexcept {
  if (fd_ < 0) return 0;
  const int rc = ::close(fd_);
  fd_ = -1;
  return rc;
}

Fd open_fd(const std::string& path, int flags) {
  return Fd(::open(path.c_str(), flags | O_CLOEXEC));
}

Fd must_open(const std::string& path, int flags) {
  Fd fd = open_fd(path, flags);
  const int error = errno;
  INFO("open(" << path << ") -> " << (fd ? "ok" : errno_name(error)));
  REQUIRE(static_cast<bool>(fd));
  return fd;
}

// ---- messages ----

Sys send(int fd, std::string_view text) {
  return sys([&] { return ::write(fd, text.data(), text.size()); });
}

Received receive(int fd, size_t capacity) {
  std::string buffer(capacity, '\0');
  errno = 0;
  const ssize_t rc = ::read(fd, buffer.data(), buffer.size());
  const int error = rc < 0 ? errno : 0;
  buffer.resize(rc > 0 ? static_cast<size_t>(rc) : 0);
  return Received{static_cast<long>(rc), error, std::move(buffer)};
}

std::string read_text(int fd, size_t chunk) {
  std::string text;
  for (int i = 0; i < 100000; ++i) {  // a bound: a device that never ends is a failure, not a hang
    const Received r = receive(fd, chunk);
    if (r.rc <= 0) {
      if (r.rc < 0) text += "<read error " + errno_name(r.err) + ">";
      break;
    }
    text += r.data;
  }
  return text;
}

int poll_events(int fd, short events, milliseconds timeout) {
  pollfd entry{fd, events, 0};
  const int rc = ::poll(&entry, 1, static_cast<int>(timeout.count()));
  if (rc < 0) return -1;
  return rc == 0 ? 0 : entry.revents;
}

// ---- ioctls ----

group_t group_name(std::string_view name) {
  group_t group{};
  std::memcpy(group.name, name.data(), std::min(name.size(), sizeof group.name - 1));
  return group;
}

Sys install_group(std::string_view name, synch_install* out) {
  Fd control = open_fd(control_path(), O_RDWR);
  if (!control) return Sys{-1, errno};
  synch_install request{};
  request.group = group_name(name);
  const Sys result = sys([&] { return ::ioctl(control.get(), SYNCH_IOC_INSTALL_GROUP, &request); });
  if (out != nullptr) *out = request;
  return result;
}

Sys remove_group(std::string_view name) {
  Fd control = open_fd(control_path(), O_RDWR);
  if (!control) return Sys{-1, errno};
  group_t group = group_name(name);
  return sys([&] { return ::ioctl(control.get(), SYNCH_IOC_REMOVE_GROUP, &group); });
}

synch_group_stats stats_of(int fd) {
  synch_group_stats stats{};
  const Sys result = sys([&] { return ::ioctl(fd, SYNCH_IOC_GET_STATS, &stats); });
  INFO("GET_STATS -> " << result);
  REQUIRE(result.ok());
  return stats;
}

synch_params get_params() {
  Fd config = must_open(config_path(), O_RDONLY);
  synch_params params{};
  const Sys result = sys([&] { return ::ioctl(config.get(), SYNCH_IOC_GET_PARAMS, &params); });
  INFO("GET_PARAMS -> " << result);
  REQUIRE(result.ok());
  return params;
}

Sys set_params(uint64_t max_message_size, uint64_t max_storage_size) {
  Fd config = open_fd(config_path(), O_RDONLY);
  if (!config) return Sys{-1, errno};
  synch_params params{max_message_size, max_storage_size};
  return sys([&] { return ::ioctl(config.get(), SYNCH_IOC_SET_PARAMS, &params); });
}

std::string unique_name(std::string_view tag) {
  static std::atomic<unsigned> counter{0};
  const std::string prefix = "it" + std::to_string(::getpid()) + "-";
  const std::string suffix = "-" + std::to_string(counter.fetch_add(1));
  const size_t room = SYNCH_NAME_MAX - 1 - prefix.size() - suffix.size();
  return prefix + std::string(tag.substr(0, room)) + suffix;
}

TestGroup::TestGroup(std::string_view tag) : name_(unique_name(tag)), path_(dev_path(name_)) {
  synch_install reply{};
  const Sys result = install_group(name_, &reply);
  INFO("INSTALL_GROUP(" << name_ << ") -> " << result);
  REQUIRE(result.ok());
  installed_ = true;
  REQUIRE(reply.created == 1);
}

TestGroup::~TestGroup() {
  if (!installed_) return;
  const Sys result = remove_group(name_);
  if (!result.ok() && result.err != ENOENT) {
    std::fprintf(stderr, "warning: cleanup of group %s failed: %s\n", name_.c_str(),
                 errno_name(result.err).c_str());
  }
}

void TestGroup::remove() {
  const Sys result = remove_group(name_);
  INFO("REMOVE_GROUP(" << name_ << ") -> " << result);
  REQUIRE(result.ok());
  installed_ = false;
}

ParamsGuard::ParamsGuard() : saved_(get_params()) {}

ParamsGuard::~ParamsGuard() {
  const Sys restored = set_params(saved_.max_message_size, saved_.max_storage_size);
  CHECK_MESSAGE(restored.ok(), "restoring the parameters failed: " << errno_name(restored.err));
  const synch_params now = get_params();
  CHECK(now.max_message_size == saved_.max_message_size);
  CHECK(now.max_storage_size == saved_.max_storage_size);
}

// ---- waiting ----

bool wait_until(const std::function<bool()>& done, milliseconds timeout, milliseconds step) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

bool wait_for_stats(int fd, const std::function<bool(const synch_group_stats&)>& pred,
                    synch_group_stats* last, milliseconds timeout) {
  synch_group_stats seen{};
  const bool reached = wait_until(
      [&] {
        if (::ioctl(fd, SYNCH_IOC_GET_STATS, &seen) != 0) return false;
        return pred(seen);
      },
      timeout);
  if (last != nullptr) *last = seen;
  return reached;
}

long writers_waiting(const std::string& name) {
  Fd control = must_open(control_path(), O_RDONLY);
  std::istringstream lines(read_text(control.get(), 4096));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + " ", 0) != 0) continue;
    const size_t at = line.find(" writers_waiting=");
    if (at == std::string::npos) return -1;
    return std::stol(line.substr(at + 17));
  }
  return -1;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void abort_run(const std::string& why) {
  std::fflush(stdout);
  std::fprintf(stderr, "\nFATAL: %s: ending the test run\n", why.c_str());
  std::fflush(stderr);
  ::_exit(3);
}

BoundedThread::BoundedThread(std::string what, std::function<void()> body)
    : what_(std::move(what)),
      done_(std::make_shared<std::atomic<bool>>(false)),
      tid_(std::make_shared<std::atomic<pid_t>>(0)) {
  thread_ = std::thread([done = done_, tid = tid_, body = std::move(body)] {
    tid->store(tasks::current_tid());
    body();
    done->store(true);
  });
}

BoundedThread::~BoundedThread() {
  if (thread_.joinable()) join();
}

void BoundedThread::join(milliseconds timeout) {
  if (!thread_.joinable()) return;
  if (!wait_until([this] { return done_->load(); }, timeout, 1ms)) {
    abort_run("thread '" + what_ + "' did not finish within " + std::to_string(timeout.count()) +
              " ms");
  }
  thread_.join();
}

// ---- child processes ----

namespace {

std::string drop_to_nobody() {
  constexpr uid_t kNobody = 65534;
  if (::setgroups(0, nullptr) != 0) return "setgroups: " + errno_name(errno);
  if (::setresgid(kNobody, kNobody, kNobody) != 0) return "setresgid: " + errno_name(errno);
  if (::setresuid(kNobody, kNobody, kNobody) != 0) return "setresuid: " + errno_name(errno);
  if (::geteuid() != kNobody) return "still not uid 65534";
  return {};
}

}  // namespace

namespace {
int g_child_report_fd = -1;  // in a child: its end of the report pipe

void write_all(int fd, std::string_view text) noexcept {
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
}

// Reaps `pid` within `timeout` after it was SIGKILLed; false if it is still there.
bool reap_killed(pid_t pid, int& status, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const pid_t rc = ::waitpid(pid, &status, WNOHANG);
    if (rc == pid || (rc < 0 && errno != EINTR)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
}
}  // namespace

void Child::progress(std::string_view text) noexcept {
  if (g_child_report_fd >= 0) write_all(g_child_report_fd, text);
}

Child::Child(std::function<std::string()> body, bool as_nobody) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    ::close(fds[0]);
    g_child_report_fd = fds[1];
    std::string report;
    try {
      report = as_nobody ? drop_to_nobody() : std::string();
      if (report.empty()) report = body();
    } catch (const std::exception& e) {
      report = std::string("exception: ") + e.what();
    } catch (...) {
      report = "exception (a doctest assertion in a child?)";
    }
    write_all(fds[1], report);
    ::_exit(0);
  }
  ::close(fds[1]);
  pipe_ = fds[0];
}

Child::~Child() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    if (!reap_killed(pid_, status_, 5s)) {
      std::fprintf(stderr,
                   "warning: child %d survives SIGKILL (stuck in the kernel): left behind\n",
                   static_cast<int>(pid_));
    }
  }
  if (pipe_ >= 0) ::close(pipe_);
}

void Child::read_report(const std::function<int()>& wait_ms) {
  char buffer[4096];
  while (pipe_ >= 0) {
    pollfd entry{pipe_, POLLIN, 0};
    const int ready = ::poll(&entry, 1, wait_ms());
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return;
    const ssize_t n = ::read(pipe_, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // EOF: the child exited or closed its end
      ::close(pipe_);
      pipe_ = -1;
      return;
    }
    report_.append(buffer, static_cast<size_t>(n));
  }
}

bool Child::reported(std::string_view marker) {
  read_report([] { return 0; });
  return report_.find(marker) != std::string::npos;
}

bool Child::finish(milliseconds timeout) {
  if (reaped_) return true;
  const auto deadline = Clock::now() + timeout;
  const auto left_ms = [&] {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::max<long>(0, left));
  };
  read_report(left_ms);  // the report: until EOF, or the timeout
  for (;;) {
    const pid_t rc = ::waitpid(pid_, &status_, WNOHANG);
    if (rc == pid_) {
      reaped_ = true;
      return true;
    }
    if (rc < 0 && errno != EINTR) {
      reaped_ = true;
      status_ = -1;
      return true;
    }
    if (left_ms() == 0) break;
    std::this_thread::sleep_for(1ms);
  }
  ::kill(pid_, SIGKILL);
  const bool gone = reap_killed(pid_, status_, 5s);
  reaped_ = true;
  if (!gone) status_ = -1;
  report_ += "[child " + std::to_string(pid_) + " did not finish within " +
             std::to_string(timeout.count()) + " ms: " +
             (gone ? "killed]"
                   : "even SIGKILL does not end it: it is blocked in a request the server never "
                     "answers]");
  return false;
}

bool Child::exited_normally() const noexcept {
  return reaped_ && status_ != -1 && WIFEXITED(status_) && WEXITSTATUS(status_) == 0;
}

std::string Child::describe_status() const {
  if (!reaped_) return "running";
  if (status_ == -1) return "lost";
  if (WIFEXITED(status_)) return "exit " + std::to_string(WEXITSTATUS(status_));
  if (WIFSIGNALED(status_)) return std::string("killed by ") + sigabbrev_np(WTERMSIG(status_));
  return "status " + std::to_string(status_);
}

std::string run_in_child(const std::function<std::string()>& body, bool as_nobody,
                         milliseconds timeout) {
  Child child(body, as_nobody);
  const bool finished = child.finish(timeout);
  std::string report = child.report();
  if (finished && !child.exited_normally()) {
    report += "[child ended abnormally: " + child.describe_status() + "]";
  }
  return report;
}

std::string expect_errno(const char* what, const Sys& s, int expected) {
  if (s.rc == -1 && s.err == expected) return {};
  return std::string(what) + ": expected " + errno_name(expected) +
         ", got rc=" + std::to_string(s.rc) + (s.rc < 0 ? " " + errno_name(s.err) : "") + "; ";
}

std::string expect_ok(const char* what, const Sys& s) {
  if (s.ok()) return {};
  return std::string(what) + ": failed with " + errno_name(s.err) + "; ";
}

// ---- signals ----

namespace {
void ignore_signal(int) {}
}  // namespace

InterruptingSignal::InterruptingSignal() {
  struct sigaction action {};
  action.sa_handler = &ignore_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: the interrupted call returns EINTR
  REQUIRE(::sigaction(kSignal, &action, &previous_) == 0);
}

InterruptingSignal::~InterruptingSignal() {
  ::sigaction(kSignal, &previous_, nullptr);
}

}  // namespace synchmess::it
