#include "server/service.hpp"

#include <linux/fuse.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "server/log.hpp"
#include "server/parked_request.hpp"

namespace synchmess::server {
namespace {

// How long a read without a receive timeout waits for a send under way in the ring (its
// producer stopped, or killed and not yet repaired: repairs take at most about a second).
constexpr std::chrono::milliseconds kPendingSendWait{2000};

int clamp_count(uint64_t count) noexcept {
  return count > static_cast<uint64_t>(INT_MAX) ? INT_MAX : static_cast<int>(count);
}

void reply_errc(fuse_req_t req, std::errc error) noexcept {
  fuse_reply_err(req, core::to_errno(error));
}

// A NUL-terminated name inside a fixed-size field, or nothing when it is not terminated.
std::optional<std::string_view> terminated_name(const char (&field)[SYNCH_NAME_MAX]) noexcept {
  const void* nul = std::memchr(field, '\0', sizeof field);
  if (nul == nullptr) return std::nullopt;
  return std::string_view(field, static_cast<const char*>(nul) - field);
}

const char* kind_name(DeviceKind kind) noexcept {
  switch (kind) {
    case DeviceKind::kControl:
      return "control";
    case DeviceKind::kConfig:
      return "config";
    case DeviceKind::kGroup:
      return "group";
  }
  return "?";
}

}  // namespace

Caller caller_of(fuse_req_t req) noexcept {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{ctx->uid, ctx->gid, ctx->pid};
}

// ---- OpenFile, OpenFiles ----

OpenFile::~OpenFile() {
  if (watching.load()) group->unwatch(*this);
  std::lock_guard lock(mu_);
  if (poll_handle_ != nullptr) fuse_pollhandle_destroy(poll_handle_);
}

void OpenFile::set_poll_handle(fuse_pollhandle* handle) noexcept {
  std::lock_guard lock(mu_);
  if (poll_handle_ != nullptr) fuse_pollhandle_destroy(poll_handle_);
  poll_handle_ = handle;
}

void OpenFile::on_ready_changed() noexcept {
  std::lock_guard lock(mu_);
  if (poll_handle_ == nullptr) return;
  fuse_lowlevel_notify_poll(poll_handle_);
  fuse_pollhandle_destroy(poll_handle_);
  poll_handle_ = nullptr;
}

void OpenFile::remember_config(pid_t thread, const ConfigUndo& undo) noexcept {
  std::lock_guard lock(mu_);
  if (config_undo_.size() == kConfigUndoThreads) config_undo_.erase(config_undo_.begin());
  config_undo_.emplace_back(thread, undo);
}

std::optional<OpenFile::ConfigUndo> OpenFile::take_config_undo(pid_t thread) noexcept {
  std::lock_guard lock(mu_);
  for (auto entry = config_undo_.begin(); entry != config_undo_.end(); ++entry) {
    if (entry->first != thread) continue;
    const ConfigUndo undo = entry->second;
    config_undo_.erase(entry);
    return undo;
  }
  return std::nullopt;
}

std::string OpenFile::take_text(size_t size, const std::function<std::string()>& snapshot) {
  std::lock_guard lock(mu_);
  if (!text_taken_) {
    text_ = snapshot();
    text_taken_ = true;
  }
  const size_t count = std::min(size, text_.size() - text_offset_);
  std::string chunk = text_.substr(text_offset_, count);
  text_offset_ += count;
  return chunk;
}

void OpenFiles::add(OpenFile* file) {
  std::lock_guard lock(mu_);
  files_.insert(file);
}

void OpenFiles::remove(OpenFile* file) noexcept {
  std::lock_guard lock(mu_);
  files_.erase(file);
}

void OpenFiles::close_all() noexcept {
  std::set<OpenFile*> files;
  {
    std::lock_guard lock(mu_);
    files.swap(files_);
  }
  for (OpenFile* file : files)
    delete file;
}

// ---- Service ----

Service::Service(core::Params& params, core::Registry& registry, core::Quotas& quotas) noexcept
    : params_(params), registry_(registry), quotas_(quotas) {
  quotas_.set_observer(this);
  registry_.set_group_observer(this);
}

Service::~Service() {
  stop();
  registry_.set_group_observer(nullptr);
  quotas_.set_observer(nullptr);
}

void Service::on_region_corrupt(const core::Group& group, std::string_view what) noexcept {
  log::limited(region_log_, log::Level::kWarning, "group '{}' (owner uid {}): {}", group.name(),
               group.owner(), what);
}

void Service::on_refused(core::QuotaKind kind, uid_t uid, uint64_t requested) noexcept {
  const core::QuotaLimits& limits = quotas_.limits();
  switch (kind) {
    case core::QuotaKind::kUserMemory:
      log::limited(refusal_log_, log::Level::kWarning,
                   "uid {}: a send of {} bytes of message memory refused (EDQUOT): the uid holds "
                   "{} of its {} bytes (--max-user-memory)",
                   uid, requested, quotas_.user_memory(uid), limits.max_user_memory);
      return;
    case core::QuotaKind::kGlobalMemory:
      log::limited(refusal_log_, log::Level::kWarning,
                   "uid {}: a send of {} bytes of message memory refused (ENOSPC): stored "
                   "messages take {} of the server's {} bytes (--max-memory)",
                   uid, requested, quotas_.memory_used(), limits.max_memory);
      return;
    case core::QuotaKind::kResidentMemory:
      log::limited(refusal_log_, log::Level::kWarning,
                   "uid {}: a send of {} bytes of message memory refused (ENOSPC): the server's "
                   "heap holds more than its messages count (fragmented), up to its limit for "
                   "--max-memory {} (stored messages count {})",
                   uid, requested, limits.max_memory, quotas_.memory_used());
      return;
    case core::QuotaKind::kUserGroups:
      log::limited(refusal_log_, log::Level::kWarning,
                   "uid {}: an install refused (EDQUOT): the uid has installed {} groups, its "
                   "limit (--max-user-groups)",
                   uid, quotas_.user_groups(uid));
      return;
  }
}

void Service::open(fuse_req_t req, DeviceKind kind, const std::shared_ptr<core::Group>& group,
                   OpenFiles& files, fuse_file_info* fi, OpenFlags open_flags) {
  if (stopping() || (kind == DeviceKind::kGroup && (!group || group->closed()))) {
    fuse_reply_err(req, ENODEV);
    return;
  }
  auto* file = new OpenFile(kind, group, files);
  file->access_mode = fi->flags & O_ACCMODE;
  files.add(file);
  fi->fh = reinterpret_cast<uint64_t>(file);
  fi->direct_io = 1;    // a message device: no page cache (FUSE; CUSE always is)
  fi->nonseekable = 1;  // positions mean nothing here
  int replied;
  if (open_flags == OpenFlags::kStandard) {
    replied = fuse_reply_open(req, fi);
  } else {
    // libfuse 3.14's fuse_file_info can say neither FOPEN_STREAM nor
    // FOPEN_PARALLEL_DIRECT_WRITES: the reply is built here (fuse_open_out, as
    // fuse_reply_open builds it). FOPEN_STREAM: no file position, so offsets restart at 0 for
    // every call (a continuation of a split one has offset > 0) and a write never passes the
    // file's size. FOPEN_PARALLEL_DIRECT_WRITES: the kernel takes the inode lock around every
    // write unless the open says it (and the write does not pass the file's size), so one
    // write waiting for room would hold every other writer of the group in the kernel.
    fuse_open_out out{};
    out.fh = fi->fh;
    out.open_flags = FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_STREAM;
    if (open_flags == OpenFlags::kFuseStreamParallelWrites) {
      out.open_flags |= FOPEN_PARALLEL_DIRECT_WRITES;
    }
    replied = fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof out);
  }
  if (replied != 0) {
    // The caller went away before the open completed: the kernel will never release it.
    files.remove(file);
    delete file;
  }
  log::debug("open {} device{}{}", kind_name(kind), group ? " " : "", group ? group->name() : "");
}

void Service::read(fuse_req_t req, OpenFile& file, size_t size, bool continuation, int flags,
                   std::shared_ptr<void> keep_alive) {
  switch (file.kind) {
    case DeviceKind::kControl: {
      const std::string chunk = file.take_text(size, [this] { return registry_.list_text(); });
      fuse_reply_buf(req, chunk.data(), chunk.size());
      return;
    }
    case DeviceKind::kConfig: {
      const std::string chunk = file.take_text(size, [this] { return params_.text(); });
      fuse_reply_buf(req, chunk.data(), chunk.size());
      return;
    }
    case DeviceKind::kGroup:
      break;
  }
  if (continuation) {
    // One read() the kernel split: its first request already took the message.
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  auto received = file.group->try_receive();
  if (!received) {
    reply_errc(req, received.error());
    return;
  }
  if (core::MessagePtr& message = received.value()) {
    const auto bytes = message->data();
    fuse_reply_buf(req, reinterpret_cast<const char*>(bytes.data()), std::min(size, bytes.size()));
    return;
  }
  if ((flags & O_NONBLOCK) != 0) {
    fuse_reply_err(req, EAGAIN);
    return;
  }
  const uint32_t timeout_ms = file.recv_timeout_ms.load(std::memory_order_relaxed);
  if (timeout_ms == 0) {
    if (file.group->message_pending()) {
      // Not empty: a client's send is being copied into the ring. Its commit (or, its sender
      // dead, the repair) answers this read; the bound only covers a sender that stopped.
      ParkedRequest::read(req, file.group, size, kPendingSendWait, std::move(keep_alive));
      return;
    }
    fuse_reply_buf(req, nullptr, 0);  // empty group: read() returns 0 at once
    return;
  }
  const auto timeout = timeout_ms == SYNCH_RECV_TIMEOUT_FOREVER
                           ? core::Group::kWaitForever
                           : std::chrono::milliseconds(timeout_ms);
  ParkedRequest::read(req, file.group, size, timeout, std::move(keep_alive));
}

void Service::write(fuse_req_t req, OpenFile& file, const char* data, size_t size,
                    bool continuation, int flags, std::shared_ptr<void> keep_alive) {
  switch (file.kind) {
    case DeviceKind::kControl:
      log::debug("write to the control device refused: it takes ioctls");
      fuse_reply_err(req, EINVAL);
      return;
    case DeviceKind::kConfig: {
      if (caller_of(req).uid != 0) {
        fuse_reply_err(req, EPERM);
        return;
      }
      // A write longer than kMaxConfigWrite is refused whole: the kernel splits long writes
      // into several requests, and applying the first would break all-or-nothing. A request
      // that continues a split write (a writev of more pieces than one request holds) is
      // refused too, and what its first part applied is undone: nothing of the write stays.
      const pid_t thread = caller_of(req).pid;
      if (continuation) {
        undo_config(file, thread);
        fuse_reply_err(req, EINVAL);
        return;
      }
      file.take_config_undo(thread);  // a new write: this thread's last one is complete
      if (size > core::kMaxConfigWrite) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      OpenFile::ConfigUndo undo{};
      if (auto applied = params_.set_text(std::string_view(data, size), &undo.before, &undo.after);
          !applied) {
        reply_errc(req, applied.error());
        return;
      }
      file.remember_config(thread, undo);
      log::info("parameters set by uid 0: max_message_size={} max_storage_size={}",
                undo.after.max_message_size, undo.after.max_storage_size);
      registry_.params_changed();  // writers may fit now; POLLOUT may change everywhere
      fuse_reply_write(req, size);
      return;
    }
    case DeviceKind::kGroup:
      break;
  }
  if (continuation) {
    // The kernel split one write()/writev() into several requests (more than 32 pages): a
    // message is one request, so the rest is refused and the write returns short.
    fuse_reply_err(req, EMSGSIZE);
    return;
  }
  const auto bytes = std::as_bytes(std::span(data, size));
  const uint32_t timeout_ms = file.send_timeout_ms.load(std::memory_order_relaxed);
  if (timeout_ms != 0 && (flags & O_NONBLOCK) == 0) {
    const auto timeout = timeout_ms == SYNCH_SEND_TIMEOUT_FOREVER
                             ? core::Group::kWaitForever
                             : std::chrono::milliseconds(timeout_ms);
    ParkedRequest::write(req, file.group, bytes, caller_of(req).uid, timeout,
                         std::move(keep_alive));
    return;
  }
  auto sent = file.group->send(bytes, caller_of(req).uid);
  if (!sent) {
    reply_errc(req, sent.error());
    return;
  }
  fuse_reply_write(req, sent.value());
}

void Service::undo_config(OpenFile& file, pid_t thread) noexcept {
  const auto undo = file.take_config_undo(thread);
  if (!undo) return;
  if (params_.replace_if(undo->after, undo->before)) {
    log::warning(
        "a config write split by the kernel into several requests (a writev of many pieces) "
        "was refused whole: its first part is undone, max_message_size={} max_storage_size={}",
        undo->before.max_message_size, undo->before.max_storage_size);
    registry_.params_changed();
  }
}

void Service::poll(fuse_req_t req, OpenFile& file, fuse_pollhandle* handle) {
  if (file.kind != DeviceKind::kGroup) {
    if (handle != nullptr) fuse_pollhandle_destroy(handle);  // readiness never changes
    fuse_reply_poll(req, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
    return;
  }
  // Register, then compute: a change after the computation notifies the handle.
  if (handle != nullptr) {
    file.set_poll_handle(handle);
    if (!file.watching.exchange(true)) file.group->watch(file);
  }
  const core::Readiness ready = file.group->readiness();
  unsigned events = 0;
  if (ready.readable) events |= POLLIN | POLLRDNORM;
  if (ready.writable) events |= POLLOUT | POLLWRNORM;
  if (ready.closed) events |= POLLERR | POLLHUP;
  fuse_reply_poll(req, events);
}

void Service::release(fuse_req_t req, OpenFile* file) {
  if (file->kind == DeviceKind::kGroup && !file->group->closed()) {
    const std::size_t flushed = file->group->flush();
    if (flushed != 0) log::debug("release flushed {} delayed messages", flushed);
  }
  file->owner.remove(file);
  delete file;
  fuse_reply_err(req, 0);
}

void Service::flush(fuse_req_t req, OpenFile& file) {
  if (file.kind == DeviceKind::kGroup && !file.group->closed()) file.group->flush();
  fuse_reply_err(req, 0);
}

// ---- ioctl ----

void Service::ioctl(fuse_req_t req, OpenFile& file, unsigned cmd, const void* in, size_t in_size,
                    size_t out_size, std::shared_ptr<void> keep_alive) {
  const Caller caller = caller_of(req);
  switch (file.kind) {
    case DeviceKind::kControl:
      control_ioctl(req, caller, cmd, in, in_size, out_size);
      return;
    case DeviceKind::kConfig:
      config_ioctl(req, caller, cmd, in, in_size, out_size);
      return;
    case DeviceKind::kGroup:
      group_ioctl(req, file, cmd, in, in_size, out_size, std::move(keep_alive));
      return;
  }
}

namespace {

// Restricted ioctls carry exactly the size their number encodes; anything else is a bug or an
// attack, and is refused before it touches state.
template <class T>
const T* input_of(const void* in, size_t in_size) noexcept {
  return in_size == sizeof(T) && in != nullptr ? static_cast<const T*>(in) : nullptr;
}

}  // namespace

void Service::control_ioctl(fuse_req_t req, const Caller& caller, unsigned cmd, const void* in,
                            size_t in_size, size_t out_size) {
  switch (cmd) {
    case SYNCH_IOC_INSTALL_GROUP: {
      const auto* request = input_of<synch_install>(in, in_size);
      if (request == nullptr || out_size != sizeof(synch_install)) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      install(req, caller, *request);
      return;
    }
    case SYNCH_IOC_REMOVE_GROUP: {
      const auto* request = input_of<group_t>(in, in_size);
      if (request == nullptr) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      remove(req, caller, *request);
      return;
    }
    default:
      fuse_reply_err(req, ENOTTY);
  }
}

void Service::config_ioctl(fuse_req_t req, const Caller& caller, unsigned cmd, const void* in,
                           size_t in_size, size_t out_size) {
  switch (cmd) {
    case SYNCH_IOC_GET_PARAMS: {
      if (out_size != sizeof(synch_params)) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      const synch_params current = params_.get();
      fuse_reply_ioctl(req, 0, &current, sizeof current);
      return;
    }
    case SYNCH_IOC_SET_PARAMS: {
      const auto* changes = input_of<synch_params>(in, in_size);
      if (changes == nullptr) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      if (caller.uid != 0) {
        fuse_reply_err(req, EPERM);
        return;
      }
      if (auto applied = params_.set(*changes); !applied) {
        reply_errc(req, applied.error());
        return;
      }
      log::info("parameters set by ioctl: max_message_size={} max_storage_size={}",
                params_.max_message_size(), params_.max_storage_size());
      registry_.params_changed();
      fuse_reply_ioctl(req, 0, nullptr, 0);
      return;
    }
    default:
      fuse_reply_err(req, ENOTTY);
  }
}

void Service::group_ioctl(fuse_req_t req, OpenFile& file, unsigned cmd, const void* in,
                          size_t in_size, size_t out_size, std::shared_ptr<void> keep_alive) {
  core::Group& group = *file.group;
  switch (cmd) {
    case SYNCH_IOC_SLEEP_ON_BARRIER:
      ParkedRequest::sleep_on_barrier(req, file.group, std::move(keep_alive));
      return;
    case SYNCH_IOC_AWAKE_BARRIER: {
      auto woken = group.awake_barrier();
      if (!woken) {
        reply_errc(req, woken.error());
        return;
      }
      fuse_reply_ioctl(req, clamp_count(woken.value()), nullptr, 0);
      return;
    }
    case SYNCH_IOC_SET_SEND_DELAY: {
      const auto* delay = input_of<uint32_t>(in, in_size);
      if (delay == nullptr) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      if (group.closed()) {
        fuse_reply_err(req, ENODEV);
        return;
      }
      group.set_send_delay(*delay);
      fuse_reply_ioctl(req, 0, nullptr, 0);
      return;
    }
    case SYNCH_IOC_GET_SEND_DELAY: {
      if (out_size != sizeof(uint32_t)) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      const uint32_t delay = group.send_delay();
      fuse_reply_ioctl(req, 0, &delay, sizeof delay);
      return;
    }
    case SYNCH_IOC_REVOKE_DELAYED_MESSAGES:
      if (group.closed()) {
        fuse_reply_err(req, ENODEV);
        return;
      }
      fuse_reply_ioctl(req, clamp_count(group.revoke_delayed()), nullptr, 0);
      return;
    case SYNCH_IOC_FLUSH:
      if (group.closed()) {
        fuse_reply_err(req, ENODEV);
        return;
      }
      fuse_reply_ioctl(req, clamp_count(group.flush()), nullptr, 0);
      return;
    case SYNCH_IOC_SET_RECV_TIMEOUT:
    case SYNCH_IOC_SET_SEND_TIMEOUT: {
      const auto* timeout = input_of<uint32_t>(in, in_size);
      if (timeout == nullptr) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      (cmd == SYNCH_IOC_SET_RECV_TIMEOUT ? file.recv_timeout_ms : file.send_timeout_ms)
          .store(*timeout, std::memory_order_relaxed);
      fuse_reply_ioctl(req, 0, nullptr, 0);
      return;
    }
    case SYNCH_IOC_FASTPATH_OFFER: {
      if (out_size != sizeof(synch_fastpath_offer)) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      if (group.closed()) {
        fuse_reply_err(req, ENODEV);
        return;
      }
      // The region lets its holder read and write the queue: the device's permission check
      // for both (an open for reading and writing) is what authorizes it.
      if (file.access_mode != O_RDWR) {
        fuse_reply_err(req, EACCES);
        return;
      }
      if (fast_path_ == nullptr) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
      }
      auto offer = fast_path_->offer(file.group, caller_of(req).uid);
      if (!offer) {
        reply_errc(req, offer.error());
        return;
      }
      offer.value().recv_timeout_ms = file.recv_timeout_ms.load(std::memory_order_relaxed);
      offer.value().send_timeout_ms = file.send_timeout_ms.load(std::memory_order_relaxed);
      fuse_reply_ioctl(req, 0, &offer.value(), sizeof offer.value());
      return;
    }
    case SYNCH_IOC_GET_STATS: {
      if (out_size != sizeof(synch_group_stats)) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      if (group.closed()) {
        fuse_reply_err(req, ENODEV);
        return;
      }
      const synch_group_stats stats = group.stats();
      fuse_reply_ioctl(req, 0, &stats, sizeof stats);
      return;
    }
    default:
      fuse_reply_err(req, ENOTTY);
  }
}

// ---- install / remove ----

void Service::install(fuse_req_t req, const Caller& caller, const synch_install& request) {
  const auto name = terminated_name(request.group.name);
  if (!name || request.reserved != 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  install_name(req, caller, *name);
}

void Service::install_name(fuse_req_t req, const Caller& caller, std::string_view name) {
  if (stopping()) {
    fuse_reply_err(req, ESHUTDOWN);
    return;
  }
  std::shared_ptr<core::Group> created_group;
  {
    std::lock_guard lock(entries_mu_);
    auto installed = registry_.install(name, caller.uid);
    if (!installed) {
      if (installed.error() == std::errc::no_space_on_device) {
        log::limited(refusal_log_, log::Level::kWarning,
                     "uid {}: install of '{}' refused (ENOSPC): {} groups exist, the limit "
                     "(--max-groups)",
                     caller.uid, name, registry_.max_groups());
      }
      reply_errc(req, installed.error());
      return;
    }
    if (!installed->created) {
      auto entry = entries_.find(name);
      if (entry != entries_.end() && !entry->second.device_ready) {
        entry->second.waiting.push_back({req, caller, false});  // its device is being created
        return;
      }
    } else {
      GroupEntry entry{installed->group, false, {}};
      entry.waiting.push_back({req, caller, true});
      entries_.emplace(std::string(name), std::move(entry));
      created_group = installed->group;
    }
  }
  if (!created_group) {
    reply_install(req, std::string(name), false);
    return;
  }
  log::limited(group_log_, log::Level::kInfo, "installing group '{}' for uid {}", name, caller.uid);
  directory_->create_group_device(created_group, [this, created_group](core::Status status) {
    on_device_created(created_group, status);
  });
}

void Service::on_device_created(const std::shared_ptr<core::Group>& group, core::Status status) {
  const std::string& name = group->name();
  std::vector<PendingInstall> waiting;
  {
    std::lock_guard lock(entries_mu_);
    auto entry = entries_.find(name);
    // Removed meanwhile (its installs were answered), perhaps installed again: not ours.
    if (entry == entries_.end() || entry->second.group != group) return;
    waiting.swap(entry->second.waiting);
    if (status) {
      entry->second.device_ready = true;
      if (fast_path_ != nullptr) fast_path_->add_group(group);
    } else {
      entries_.erase(entry);
      // Roll back: no group without a device. The registry holds this very group (install and
      // remove change both under entries_mu_).
      (void)registry_.take_out(name, 0);
    }
  }
  if (status) {
    log::limited(group_log_, log::Level::kInfo, "group '{}' ready at {}", name,
                 directory_->path_of(name));
  } else {
    group->close(std::errc::identifier_removed);  // outside entries_mu_, as remove
    log::limited(refusal_log_, log::Level::kError, "group '{}': device creation failed: {}", name,
                 std::strerror(core::to_errno(status.error())));
  }
  for (const PendingInstall& pending : waiting) {
    if (status) {
      reply_install(pending.req, name, pending.created);
    } else {
      reply_errc(pending.req, status.error());
    }
  }
}

void Service::reply_install(fuse_req_t req, const std::string& name, bool created) {
  synch_install reply{};
  std::memcpy(reply.group.name, name.data(), name.size());
  const std::string path = directory_->path_of(name);
  if (path.size() >= sizeof reply.path) {  // never a truncated path (transports check at start)
    fuse_reply_err(req, ENAMETOOLONG);
    return;
  }
  std::memcpy(reply.path, path.data(), path.size());
  reply.created = created ? 1 : 0;
  fuse_reply_ioctl(req, 0, &reply, sizeof reply);
}

void Service::remove(fuse_req_t req, const Caller& caller, const group_t& request) {
  const auto name = terminated_name(request.name);
  if (!name) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  std::vector<PendingInstall> waiting;
  std::shared_ptr<core::Group> group;
  {
    std::lock_guard lock(entries_mu_);
    auto taken = registry_.take_out(*name, caller.uid);
    if (!taken) {
      reply_errc(req, taken.error());
      return;
    }
    group = std::move(taken.value());
    if (auto entry = entries_.find(*name); entry != entries_.end()) {
      waiting.swap(entry->second.waiting);
      entries_.erase(entry);
    }
  }
  // Closed outside entries_mu_, which every install takes: closing touches the group's region,
  // and no lock shared between groups is held while a region is touched (SPEC "Trust").
  group->close(std::errc::identifier_removed);
  if (fast_path_ != nullptr) fast_path_->remove_group(group);
  log::limited(group_log_, log::Level::kInfo, "removing group '{}' (uid {})", *name, caller.uid);
  directory_->remove_group_device(std::move(group),
                                  [req] { fuse_reply_ioctl(req, 0, nullptr, 0); });
  // Installs that waited for the removed group's device lost a race with this remove: they
  // install afresh (SPEC: an install racing a remove never fails because of it). The new
  // device is made once the old one is gone.
  for (const PendingInstall& pending : waiting)
    install_name(pending.req, pending.caller, *name);
}

// ---- lifecycle ----

void Service::stop() noexcept {
  if (stopping_.exchange(true)) return;
  std::vector<PendingInstall> waiting;
  {
    std::lock_guard lock(entries_mu_);
    for (auto& [name, entry] : entries_) {
      waiting.insert(waiting.end(), entry.waiting.begin(), entry.waiting.end());
      entry.waiting.clear();
    }
  }
  for (const PendingInstall& pending : waiting)
    fuse_reply_err(pending.req, ESHUTDOWN);
  registry_.close_all(std::errc::identifier_removed);  // every waiter gets EIDRM
  if (fast_path_ != nullptr) fast_path_->stop();       // clients' connections end
}

}  // namespace synchmess::server
