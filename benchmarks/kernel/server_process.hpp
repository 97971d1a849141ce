// A FUSE server run as a child process of synchmess_kernel_bench: started with its output in a
// log file, awaited until its mount serves a given file, pinned or unpinned (every one of its
// threads), its CPU time read, stopped with SIGTERM and its exit status checked; and the clean-up
// of a mount that a failed server left behind.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace synchmess::bench {

class ServerProcess {
 public:
  ServerProcess() = default;
  ~ServerProcess();  // a server still running gets SIGKILL (stop() is the orderly way)
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts `argv[0]` with `argv`, stdin from /dev/null, stdout and stderr appended to `log_path`.
  // The child gets SIGTERM when this process dies (PR_SET_PDEATHSIG), so a crashed benchmark does
  // not leave a server, or its mount, behind. Returns false with `error` set on failure.
  bool start(const std::vector<std::string>& argv, const std::string& log_path, std::string& error);

  // Waits until `path` exists (the mount serves it), the child dies, or `timeout` passes.
  bool wait_for_file(const std::string& path, std::chrono::milliseconds timeout,
                     std::string& error);

  // Sets the CPU affinity of every thread the server has now (/proc/PID/task/*); threads it
  // creates later inherit the mask of their creator.
  bool set_affinity(const cpu_set_t& cpus, std::string& error) const;

  // CPU time used by the whole server process so far (all threads, user + system), in seconds;
  // -1 when it cannot be read.
  double cpu_seconds() const noexcept;

  // SIGTERM, then waits up to `timeout` for the exit. True when it exited with status 0;
  // `report` says how it ended either way. A server that does not exit in time gets SIGKILL.
  bool stop(std::chrono::milliseconds timeout, std::string& report);

  bool running() const noexcept { return pid_ > 0; }
  pid_t pid() const noexcept { return pid_; }
  const std::string& name() const noexcept { return name_; }
  const std::string& log_path() const noexcept { return log_path_; }
  // The log file's text (for error messages).
  std::string log_text() const;

 private:
  pid_t pid_ = -1;
  clockid_t cpu_clock_{};
  bool has_cpu_clock_ = false;
  std::string name_;
  std::string log_path_;
};

// True when `dir` is a mount point now, or a dead FUSE mount (stat fails with ENOTCONN).
bool is_mount_point(const std::string& dir);
// `fusermount3 -u -z dir` (lazy unmount), output discarded; true when it exited 0.
bool lazy_unmount(const std::string& dir);

}  // namespace synchmess::bench
