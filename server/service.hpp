// Service: the request handlers of the control, config and group devices, on top of the core.
//
// Transports (CUSE devices, or the files of a FUSE mount) receive kernel requests as libfuse
// low-level requests (fuse_req_t, whatever the transport) and call these handlers; the handlers
// answer with libfuse's reply functions, now or later. One implementation of every behaviour,
// whatever the transport.
#pragma once

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/group.hpp"
#include "core/params.hpp"
#include "core/quotas.hpp"
#include "core/registry.hpp"
#include "core/timer_queue.hpp"
#include "server/fast_path.hpp"
#include "server/log.hpp"

namespace synchmess::server {

enum class DeviceKind { kControl, kConfig, kGroup };

class OpenFiles;

// The state of one open file (fuse_file_info::fh). Created by Service::open, freed by
// Service::release or, when the device goes away first, by OpenFiles::close_all.
class OpenFile final : public core::ReadyWatcher {
 public:
  OpenFile(DeviceKind device_kind, std::shared_ptr<core::Group> device_group,
           OpenFiles& owner_files) noexcept
      : kind(device_kind), group(std::move(device_group)), owner(owner_files) {}
  ~OpenFile() override;

  const DeviceKind kind;
  const std::shared_ptr<core::Group> group;  // group devices only
  OpenFiles& owner;
  std::atomic<uint32_t> recv_timeout_ms{0};  // SYNCH_IOC_SET_RECV_TIMEOUT, per open file
  std::atomic<uint32_t> send_timeout_ms{0};  // SYNCH_IOC_SET_SEND_TIMEOUT, per open file
  int access_mode = O_RDONLY;  // the open's O_ACCMODE (set by Service::open, before any request)

  // Poll: the latest handle the kernel gave us; notified (once) at the next readiness change.
  void set_poll_handle(fuse_pollhandle* handle) noexcept;
  void on_ready_changed() noexcept override;
  std::atomic<bool> watching{false};  // registered with group->watch()

  // Control and config reads: a snapshot taken at the first read, then read sequentially
  // (CUSE gives no file position: every read() starts at offset 0).
  std::string take_text(size_t size, const std::function<std::string()>& snapshot);

  // Config writes: per calling thread (a split write's continuation comes from the thread that
  // made it; threads sharing the descriptor write independently), the values its last write
  // replaced and set, so that a continuation can undo it. take_config_undo() forgets it; a new
  // write takes its thread's entry before it remembers its own.
  struct ConfigUndo {
    synch_params before;
    synch_params after;
  };
  void remember_config(pid_t thread, const ConfigUndo& undo) noexcept;
  std::optional<ConfigUndo> take_config_undo(pid_t thread) noexcept;

 private:
  std::mutex mu_;
  static constexpr std::size_t kConfigUndoThreads = 8;     // the oldest entry goes beyond
  std::vector<std::pair<pid_t, ConfigUndo>> config_undo_;  // guarded by mu_
  fuse_pollhandle* poll_handle_ = nullptr;                 // guarded by mu_
  bool text_taken_ = false;                                // guarded by mu_
  std::string text_;                                       // guarded by mu_
  size_t text_offset_ = 0;                                 // guarded by mu_
};

// The open files of one device. A device that goes away (group removed, server stopping) never
// gets their RELEASE from the kernel, so it frees them here, before its session is destroyed
// (no poll notification may follow the session).
class OpenFiles {
 public:
  OpenFiles() = default;
  ~OpenFiles() { close_all(); }
  OpenFiles(const OpenFiles&) = delete;
  OpenFiles& operator=(const OpenFiles&) = delete;

  void add(OpenFile* file);
  void remove(OpenFile* file) noexcept;
  void close_all() noexcept;

 private:
  std::mutex mu_;
  std::set<OpenFile*> files_;  // guarded by mu_
};

// How a transport makes group devices appear and disappear.
class DeviceDirectory {
 public:
  virtual ~DeviceDirectory() = default;
  // The path applications open for `group` ("/dev/synch/<name>" for CUSE).
  virtual std::string path_of(std::string_view group) const = 0;
  // Creates the device of `group`. Calls done() once, later and from any thread: ok when the
  // node can be opened (and udev has applied its rules), or the error.
  virtual void create_group_device(std::shared_ptr<core::Group> group,
                                   std::function<void(core::Status)> done) = 0;
  // Destroys the device of `group` (closed by now; a newer group of the same name keeps its
  // own device); calls done() once it is gone. A device still in creation is not created.
  virtual void remove_group_device(std::shared_ptr<core::Group> group,
                                   std::function<void()> done) = 0;
};

struct Caller {
  uid_t uid;
  gid_t gid;
  pid_t pid;
};

// Contract: every handler answers its request exactly once, before it returns or later (a
// parked SLEEP_ON_BARRIER, a read waiting with a receive timeout, an install waiting for its
// device). Requests are checked before they touch any state. Handlers never block: waits park.
// Thread-safety: handlers run concurrently on the transport's workers.
class Service final : public core::QuotaObserver, public core::GroupObserver {
 public:
  // Logs the refusals of `quotas` and the corrupt regions of the registry's groups (rate-limited)
  // while it lives.
  Service(core::Params& params, core::Registry& registry, core::Quotas& quotas) noexcept;
  ~Service() override;
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  void set_directory(DeviceDirectory* directory) noexcept { directory_ = directory; }
  // The fast path's server side (nullptr: SYNCH_IOC_FASTPATH_OFFER answers EOPNOTSUPP). Set
  // before the devices are served; installed groups are added to it, removed ones taken off.
  void set_fast_path(FastPath* fast_path) noexcept { fast_path_ = fast_path; }

  // ---- request handlers ----
  // kStandard: CUSE (its files have no position). kFuseStream (FUSE files): opened
  // FOPEN_STREAM, no file position either, so offsets restart at 0 for every read()/write()
  // and a continuation is seen as on CUSE. kFuseStreamParallelWrites (FUSE group files): and
  // writes of one file do not exclude each other in the kernel; the transport must give the
  // file a size of at least SYNCH_MAX_MESSAGE_SIZE_LIMIT.
  enum class OpenFlags { kStandard, kFuseStream, kFuseStreamParallelWrites };
  void open(fuse_req_t req, DeviceKind kind, const std::shared_ptr<core::Group>& group,
            OpenFiles& files, fuse_file_info* fi, OpenFlags open_flags = OpenFlags::kStandard);
  // `continuation`: the request continues one read()/write() the kernel split into several:
  // offset > 0, since offsets restart at 0 for every call (CUSE has no file position; a FUSE
  // mount opens every file FOPEN_STREAM).
  void read(fuse_req_t req, OpenFile& file, size_t size, bool continuation, int flags,
            std::shared_ptr<void> keep_alive);
  // `flags`: the open file's current flags (O_NONBLOCK: a write never waits for room).
  void write(fuse_req_t req, OpenFile& file, const char* data, size_t size, bool continuation,
             int flags, std::shared_ptr<void> keep_alive);
  void ioctl(fuse_req_t req, OpenFile& file, unsigned cmd, const void* in, size_t in_size,
             size_t out_size, std::shared_ptr<void> keep_alive);
  void poll(fuse_req_t req, OpenFile& file, fuse_pollhandle* handle);
  // Flushes the group's delayed messages (SPEC: flush on release), frees the open file.
  void release(fuse_req_t req, OpenFile* file);
  // FUSE delivers flush on every close() and on fsync(): both flush delayed messages.
  void flush(fuse_req_t req, OpenFile& file);

  // ---- lifecycle ----
  // Refuses new work, releases every waiter (EIDRM) and every pending install (ESHUTDOWN).
  void stop() noexcept;
  bool stopping() const noexcept { return stopping_.load(); }

  core::Params& params() noexcept { return params_; }
  core::Registry& registry() noexcept { return registry_; }

  void on_refused(core::QuotaKind kind, uid_t uid, uint64_t requested) noexcept override;
  // Logs it (rate-limited; once per group: the group reports it once).
  void on_region_corrupt(const core::Group& group, std::string_view what) noexcept override;

 private:
  // A continuation of a config write: undoes what its first part applied (if nobody changed
  // the parameters since).
  void undo_config(OpenFile& file, pid_t thread) noexcept;

  struct PendingInstall {
    fuse_req_t req;
    Caller caller;
    bool created;
  };
  // Server-side state of an installed group: its device may still be in creation.
  struct GroupEntry {
    std::shared_ptr<core::Group> group;
    bool device_ready = false;
    std::vector<PendingInstall> waiting;  // installs answered when the device is ready
  };

  void control_ioctl(fuse_req_t req, const Caller& caller, unsigned cmd, const void* in,
                     size_t in_size, size_t out_size);
  void config_ioctl(fuse_req_t req, const Caller& caller, unsigned cmd, const void* in,
                    size_t in_size, size_t out_size);
  void group_ioctl(fuse_req_t req, OpenFile& file, unsigned cmd, const void* in, size_t in_size,
                   size_t out_size, std::shared_ptr<void> keep_alive);
  void install(fuse_req_t req, const Caller& caller, const synch_install& request);
  // Installs the (valid, terminated) `name`; also re-runs installs that a remove overtook.
  void install_name(fuse_req_t req, const Caller& caller, std::string_view name);
  void remove(fuse_req_t req, const Caller& caller, const group_t& request);
  void on_device_created(const std::shared_ptr<core::Group>& group, core::Status status);
  void reply_install(fuse_req_t req, const std::string& name, bool created);

  core::Params& params_;
  core::Registry& registry_;
  core::Quotas& quotas_;
  DeviceDirectory* directory_ = nullptr;
  FastPath* fast_path_ = nullptr;
  // What users can make the server log, each at a bounded rate: installs and removes, and
  // refusals at a limit.
  log::RateLimit group_log_{20, 5};
  log::RateLimit refusal_log_{10, 2};
  log::RateLimit region_log_{10, 1};  // corrupt regions: once per group, these across groups
  std::atomic<bool> stopping_{false};

  std::mutex entries_mu_;  // install/remove: registry change + device state move together
  std::map<std::string, GroupEntry, std::less<>> entries_;  // guarded by entries_mu_
};

Caller caller_of(fuse_req_t req) noexcept;

}  // namespace synchmess::server
