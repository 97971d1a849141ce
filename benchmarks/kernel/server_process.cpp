// A FUSE server as a child process (see server_process.hpp).
#include "server_process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace synchmess::bench {
namespace {

std::string errno_text(const std::string& what, int error) {
  return what + ": " + std::strerror(error);
}

// "exited with status 0", "was killed by signal 9 (Killed)".
std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

}  // namespace

ServerProcess::~ServerProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
}

bool ServerProcess::start(const std::vector<std::string>& argv, const std::string& log_path,
                          std::string& error) {
  name_ = argv.at(0).substr(argv.at(0).rfind('/') + 1);
  log_path_ = log_path;
  // Everything the child needs is prepared before fork(): after it, only async-signal-safe calls.
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    error = errno_text("cannot create " + log_path, errno);
    return false;
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    error = errno_text("cannot open /dev/null", errno);
    close(log_fd);
    return false;
  }
  std::vector<char*> args;
  for (const std::string& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) {
    error = errno_text("fork", errno);
    close(log_fd);
    close(null_fd);
    return false;
  }
  if (pid == 0) {
    // The child: dies with the benchmark (SIGTERM: the server unmounts cleanly).
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // the parent already died
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execv(args[0], args.data());
    static const char kFailed[] = "synchmess_kernel_bench: execv of the server failed\n";
    [[maybe_unused]] const ssize_t written = write(STDERR_FILENO, kFailed, sizeof kFailed - 1);
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  pid_ = pid;
  has_cpu_clock_ = clock_getcpuclockid(pid_, &cpu_clock_) == 0;
  return true;
}

bool ServerProcess::wait_for_file(const std::string& path, std::chrono::milliseconds timeout,
                                  std::string& error) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    struct stat st {};
    if (stat(path.c_str(), &st) == 0) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error = name_ + " " + describe_status(status) + " before " + path + " appeared";
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      error = path + " did not appear within " + std::to_string(timeout.count()) + " ms";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool ServerProcess::set_affinity(const cpu_set_t& cpus, std::string& error) const {
  const std::string task_dir = "/proc/" + std::to_string(pid_) + "/task";
  DIR* dir = opendir(task_dir.c_str());
  if (dir == nullptr) {
    error = errno_text("cannot list " + task_dir, errno);
    return false;
  }
  bool ok = true;
  int threads = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    const pid_t tid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (sched_setaffinity(tid, sizeof cpus, &cpus) != 0 && errno != ESRCH) {
      error = errno_text("sched_setaffinity of " + name_ + " thread " + entry->d_name, errno);
      ok = false;
      break;
    }
    ++threads;
  }
  closedir(dir);
  if (ok && threads == 0) {
    error = name_ + " has no threads (did it exit?)";
    ok = false;
  }
  return ok;
}

double ServerProcess::cpu_seconds() const noexcept {
  timespec now{};
  if (!has_cpu_clock_ || clock_gettime(cpu_clock_, &now) != 0) return -1;
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

bool ServerProcess::stop(std::chrono::milliseconds timeout, std::string& report) {
  if (pid_ <= 0) {
    report = name_ + " was not running";
    return false;
  }
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (done < 0 && errno != EINTR) {
      report = errno_text("waitpid of " + name_, errno);
      pid_ = -1;
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      pid_ = -1;
      report = name_ + " did not exit within " + std::to_string(timeout.count()) +
               " ms of SIGTERM (killed)";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  pid_ = -1;
  const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  report = name_ + " " + describe_status(status) +
           (clean ? " after SIGTERM" : " (on SIGTERM it should exit with status 0)");
  return clean;
}

std::string ServerProcess::log_text() const {
  std::ifstream file(log_path_);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

bool is_mount_point(const std::string& dir) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) return errno == ENOTCONN;
  struct stat parent {};
  if (stat((dir + "/..").c_str(), &parent) != 0) return false;
  return st.st_dev != parent.st_dev;
}

bool lazy_unmount(const std::string& dir) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  const char* args[] = {"fusermount3", "-u", "-z", dir.c_str(), nullptr};
  pid_t pid = -1;
  const int spawned =
      posix_spawnp(&pid, "fusermount3", &actions, nullptr, const_cast<char* const*>(args), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return false;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace synchmess::bench
