// FuseTransport: the synchmess devices as files of a FUSE mount, for hosts without CUSE.
//
// DIR/synchmess, DIR/config and DIR/<group> behave like the /dev/synch nodes: the same Service
// handles every request; only the file system around them is new (lookup, getattr, readdir).
// Same ioctl numbers (restricted ioctls on regular files), same modes (a root server mounts with
// allow_other,default_permissions so the kernel enforces them for every user).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "core/result.hpp"
#include "server/event_loop.hpp"
#include "server/service.hpp"

struct fuse_session;

namespace synchmess::server {

class FuseTransport final : public DeviceDirectory {
 public:
  struct Settings {
    std::string mount_dir;        // absolute path of an empty directory
    bool allow_nonempty = false;  // mount even over files (they are hidden meanwhile)
  };
  // The longest mount directory: DIR + '/' + a 63-byte group name + NUL fit SYNCH_PATH_MAX.
  static constexpr std::size_t kMaxMountDirLength = SYNCH_PATH_MAX - 1 - (SYNCH_NAME_MAX - 1) - 1;
  // The mount is one session; one thread reads it with blocking reads, the kernel's cheapest
  // path (no epoll round per request, no hand-off between idle threads: see docs/DESIGN.md).
  // Handlers never block, so one reader keeps up; waits park as everywhere else.
  // At shutdown the reader is interrupted by kWakeSignal (its blocked read fails with EINTR), so
  // it leaves before the session fd is closed. The process should block kWakeSignal in every
  // thread (main.cpp does); the reader unblocks it for itself only.
  static constexpr int kWakeSignal = SIGUSR2;

  FuseTransport(Service& service, Settings settings);
  ~FuseTransport() override;
  FuseTransport(const FuseTransport&) = delete;
  FuseTransport& operator=(const FuseTransport&) = delete;

  // Checks the directory (exists, is a directory, is not a stale or live mount), mounts and
  // starts serving. Fails with a logged reason that says what to do.
  core::Status start();
  // Unmounts and destroys the session. Call after the event loop stopped.
  void shutdown() noexcept;

  // A FUSE connection opened by someone else (a mount helper's descriptor, or the request
  // fuzzer's socket, tests/fuzz/): no mount and no reader thread; the caller hands each request
  // to process(), and replies go to `fd`. Nothing of the mount directory is checked.
  core::Status attach(int fd);
  // Decodes and serves one request (a FUSE message as the kernel would write it).
  void process(const void* request, size_t size) noexcept;

  // DeviceDirectory
  std::string path_of(std::string_view group) const override;
  void create_group_device(std::shared_ptr<core::Group> group,
                           std::function<void(core::Status)> done) override;
  void remove_group_device(std::shared_ptr<core::Group> group, std::function<void()> done) override;

  class Operations;  // the libfuse low-level operation table

 private:
  void serve() noexcept;  // the reader thread
  struct Node {
    DeviceKind kind;
    std::string name;
    std::shared_ptr<core::Group> group;
  };

  core::Status check_mount_dir() const;
  core::Status new_session();
  bool find(fuse_ino_t ino, Node& out) const;
  struct stat attributes(fuse_ino_t ino, const Node& node) const noexcept;

  Service& service_;
  const Settings settings_;
  const uid_t owner_uid_;
  const gid_t owner_gid_;
  const time_t started_;
  fuse_session* session_ = nullptr;
  bool mounted_ = false;
  std::atomic<bool> unmounting_{false};   // set before our own unmount: not "from outside"
  std::atomic<bool> reader_done_{false};  // set by the reader as it leaves
  std::thread reader_;
  OpenFiles files_;  // every open file of the mount (released by the kernel, or at shutdown)

  mutable std::mutex mu_;
  std::map<fuse_ino_t, Node> nodes_;                        // guarded by mu_
  std::map<std::string, fuse_ino_t, std::less<>> by_name_;  // guarded by mu_
  fuse_ino_t next_ino_ = 4;  // guarded by mu_; never reused: a stale inode never aliases
};

}  // namespace synchmess::server
