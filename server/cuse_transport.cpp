#include "server/cuse_transport.hpp"

#include <cuse_lowlevel.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>

#include "server/log.hpp"

namespace synchmess::server {
namespace {

// Installs are user requests: a failure that repeats for every install (out of pthread keys,
// of minors, of descriptors) is logged at a bounded rate, as refusals at the limits are.
log::RateLimit device_failure_log{10, 2};

constexpr const char* kCusePath = "/dev/cuse";
constexpr std::chrono::seconds kStartTimeout{10};

OpenFile& file_of(const fuse_file_info* fi) noexcept {
  return *reinterpret_cast<OpenFile*>(fi->fh);
}

// The major:minor the kernel gave a CUSE device, from sysfs (the server never opens or stats its
// own nodes: devtmpfs may not even be mounted where it runs).
bool read_sysfs_devnum(const std::string& name, unsigned& major, unsigned& minor) {
  std::ifstream file("/sys/class/cuse/synch!" + name + "/dev");
  char colon = 0;
  return static_cast<bool>(file >> major >> colon >> minor) && colon == ':';
}

}  // namespace

// ---- Device ----

class CuseTransport::Device final : public EventSource,
                                    public std::enable_shared_from_this<Device> {
 public:
  Device(CuseTransport& transport, DeviceKind device_kind, std::string device_name,
         std::shared_ptr<core::Group> device_group, unsigned device_minor,
         std::function<void(core::Status)> on_created) noexcept
      : kind(device_kind),
        name(std::move(device_name)),
        group(std::move(device_group)),
        minor_number(device_minor),
        transport_(transport),
        on_created_(std::move(on_created)),
        udev_timer_(&Device::on_udev_timeout, this) {}

  ~Device() override {
    transport_.timers_.cancel_sync(udev_timer_);
    files.close_all();  // before the session: no poll notification may follow it
    if (session_ != nullptr) {
      fuse_session_destroy(session_);  // closes fd_: the kernel removes the node
    } else if (fd_ >= 0) {
      close(fd_);
    }
    transport_.release_minor(minor_number);
    log::debug("device synch/{} destroyed", name);
    if (discarded) transport_.on_device_gone(name);       // every destroyed device was discarded
    finish(core::make_error(std::errc::no_such_device));  // when creation never completed
    std::vector<std::function<void()>> destroyed;
    {
      std::lock_guard lock(mu_);
      destroyed.swap(on_destroyed_);
    }
    for (auto& callback : destroyed)
      callback();
  }

  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  core::Status open_session(unsigned major) {
    const std::string devname = "DEVNAME=synch/" + name;
    const char* dev_info[] = {devname.c_str()};
    cuse_info info{};
    info.dev_major = major;
    info.dev_minor = minor_number;
    info.dev_info_argc = 1;
    info.dev_info_argv = dev_info;
    info.flags = 0;  // restricted ioctls: the kernel copies the sizes the numbers encode

    char program[] = "synchmess-cuse";
    char* argv[] = {program, nullptr};
    fuse_args args = FUSE_ARGS_INIT(1, argv);
    session_ = cuse_lowlevel_new(&args, &info, &kOperations, this);
    fuse_opt_free_args(&args);
    if (session_ == nullptr) {
      log::limited(device_failure_log, log::Level::kError,
                   "synch/{}: cuse_lowlevel_new failed (out of memory, or out of pthread keys: "
                   "libfuse takes one per device and glibc allows 1024 per process)",
                   name);
      return core::make_error(std::errc::no_space_on_device);
    }
    fd_ = ::open(kCusePath, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) {
      const int error = errno;
      log::limited(device_failure_log, log::Level::kError, "synch/{}: cannot open {}: {}", name,
                   kCusePath, std::strerror(error));
      return core::make_error(static_cast<std::errc>(error));
    }
    // "/dev/fd/N" makes libfuse adopt our descriptor without mounting anything.
    const std::string adopt = "/dev/fd/" + std::to_string(fd_);
    if (fuse_session_mount(session_, adopt.c_str()) != 0) {
      log::limited(device_failure_log, log::Level::kError,
                   "synch/{}: fuse_session_mount({}) failed", name, adopt);
      return core::make_error(std::errc::io_error);
    }
    return {};
  }

  int fd() const noexcept { return fd_; }

  void on_readable(const Event& event, Worker& worker) noexcept override {
    const int received = fuse_session_receive_buf(session_, &worker.buffer);
    if (received > 0) {
      event.rearm();  // another worker may take the next request while we process this one
      fuse_session_process_buf(session_, &worker.buffer);
      return;
    }
    if (received == -EAGAIN || received == -EINTR) {
      event.rearm();
      return;
    }
    // 0: the kernel ended the connection (device creation refused, or aborted).
    log::debug("synch/{}: connection ended ({})", name, received);
    transport_.discard(shared_from_this());
  }

  // Reports the end of creation (once; later calls do nothing).
  void finish(core::Status status) noexcept {
    std::function<void(core::Status)> done;
    {
      std::lock_guard lock(mu_);
      done.swap(on_created_);
    }
    if (done) done(status);
  }

  void add_destroyed_callback(std::function<void()> callback) {
    std::lock_guard lock(mu_);
    on_destroyed_.push_back(std::move(callback));
  }

  void on_udev_added(dev_t devnum) noexcept {
    const unsigned major = transport_.major_.load();
    if (major != 0 && devnum != makedev(major, minor_number)) return;
    {
      std::lock_guard lock(mu_);
      udev_seen_ = true;
      if (state_ != State::kWaitingUdev) return;  // init_done will see udev_seen_
      state_ = State::kDone;
    }
    transport_.timers_.cancel(udev_timer_);
    log::debug("synch/{}: udev has applied its rules", name);
    finish({});
  }

  const DeviceKind kind;
  const std::string name;
  const std::shared_ptr<core::Group> group;
  const unsigned minor_number;
  uint64_t loop_id = 0;    // guarded by CuseTransport::mu_; set before the session is watched
  bool discarded = false;  // guarded by CuseTransport::mu_
  OpenFiles files;

 private:
  enum class State { kCreating, kWaitingUdev, kDone };

  static Device& of(fuse_req_t req) noexcept {
    return *static_cast<Device*>(fuse_req_userdata(req));
  }
  Service& service() noexcept { return transport_.service_; }

  // ---- CUSE operations: thin forwarding to the Service ----
  static void op_init_done(void* userdata) noexcept {
    static_cast<Device*>(userdata)->on_init_done();
  }
  static void op_open(fuse_req_t req, fuse_file_info* fi) {
    Device& device = of(req);
    device.service().open(req, device.kind, device.group, device.files, fi);
  }
  static void op_read(fuse_req_t req, size_t size, off_t offset, fuse_file_info* fi) {
    Device& device = of(req);
    device.service().read(req, file_of(fi), size, offset > 0, fi->flags, device.shared_from_this());
  }
  static void op_write(fuse_req_t req, const char* data, size_t size, off_t offset,
                       fuse_file_info* fi) {
    // CUSE offsets restart at 0 for every call: > 0 continues a split one.
    Device& device = of(req);
    device.service().write(req, file_of(fi), data, size, offset > 0, fi->flags,
                           device.shared_from_this());
  }
  static void op_release(fuse_req_t req, fuse_file_info* fi) {
    of(req).service().release(req, &file_of(fi));
  }
  static void op_ioctl(fuse_req_t req, int cmd, void*, fuse_file_info* fi, unsigned flags,
                       const void* in, size_t in_size, size_t out_size) {
    Device& device = of(req);
    if ((flags & FUSE_IOCTL_UNRESTRICTED) != 0) {
      fuse_reply_err(req, ENOTTY);  // we never ask for unrestricted ioctls
      return;
    }
    // libfuse 3.14 passes the command as int: compare it as the unsigned number it is.
    device.service().ioctl(req, file_of(fi), static_cast<unsigned>(cmd), in, in_size, out_size,
                           device.shared_from_this());
  }
  static void op_poll(fuse_req_t req, fuse_file_info* fi, fuse_pollhandle* handle) {
    of(req).service().poll(req, file_of(fi), handle);
  }

  static constexpr cuse_lowlevel_ops kOperations = {
      .init = nullptr,
      .init_done = &Device::op_init_done,
      .destroy = nullptr,
      .open = &Device::op_open,
      .read = &Device::op_read,
      .write = &Device::op_write,
      .flush = nullptr,  // the kernel's CUSE never sends flush (nor fsync)
      .release = &Device::op_release,
      .fsync = nullptr,
      .ioctl = &Device::op_ioctl,
      .poll = &Device::op_poll,
  };

  // Runs on the worker that processed CUSE_INIT, after the reply: the kernel has created the
  // node by now, or refused it (then the connection is aborted: POLLERR).
  void on_init_done() noexcept {
    pollfd state{fd_, POLLIN, 0};
    ::poll(&state, 1, 0);
    if ((state.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
      log::error(
          "the kernel refused device synch/{} (minor {}): its name or number is taken. "
          "Is another synchmess-cuse running?",
          name, minor_number);
      finish(core::make_error(std::errc::device_or_resource_busy));
      transport_.discard(shared_from_this());
      return;
    }
    if (transport_.major_.load() == 0) {
      unsigned major = 0;
      unsigned sysfs_minor = 0;
      if (!read_sysfs_devnum(name, major, sysfs_minor) || major == 0) {
        log::error("cannot read the major of synch/{} from sysfs", name);
        finish(core::make_error(std::errc::io_error));
        return;
      }
      transport_.major_ = major;  // published to the starter by its future
    }
    if (transport_.wait_for_udev()) {
      std::lock_guard lock(mu_);
      if (!udev_seen_) {
        state_ = State::kWaitingUdev;
        const auto timeout = std::chrono::milliseconds(transport_.settings_.udev_timeout_ms);
        transport_.timers_.arm(udev_timer_, transport_.timers_.now() + timeout);
        return;
      }
      state_ = State::kDone;
    }
    finish({});
  }

  static void on_udev_timeout(void* self) noexcept {
    // Keep the device alive through the callbacks; a device being destroyed is left alone.
    std::shared_ptr<Device> device = static_cast<Device*>(self)->weak_from_this().lock();
    if (!device) return;
    {
      std::lock_guard lock(device->mu_);
      if (device->state_ != State::kWaitingUdev) return;
      device->state_ = State::kDone;
    }
    log::warning(
        "synch/{}: no udev event within {} ms; answering without it (are the rules "
        "installed and udevd running?)",
        device->name, device->transport_.settings_.udev_timeout_ms);
    device->finish({});
  }

  CuseTransport& transport_;
  fuse_session* session_ = nullptr;
  int fd_ = -1;
  std::mutex mu_;
  State state_ = State::kCreating;                   // guarded by mu_
  bool udev_seen_ = false;                           // guarded by mu_
  std::function<void(core::Status)> on_created_;     // guarded by mu_; runs once
  std::vector<std::function<void()>> on_destroyed_;  // guarded by mu_
  core::Timer udev_timer_;
};

// ---- udev events ----

class CuseTransport::UdevSource final : public EventSource {
 public:
  explicit UdevSource(CuseTransport& transport) noexcept : transport_(transport) {}
  void on_readable(const Event& event, Worker&) noexcept override {
    transport_.udev_->drain([this](std::string_view sysname, dev_t devnum) {
      transport_.on_udev_added(sysname, devnum);
    });
    event.rearm();
  }

 private:
  CuseTransport& transport_;
};

// ---- CuseTransport ----

CuseTransport::CuseTransport(Service& service, EventLoop& loop, core::TimerQueue& timers,
                             Settings settings)
    : service_(service), loop_(loop), timers_(timers), settings_(settings) {
  minor_used_.assign(settings_.max_devices, false);
}

CuseTransport::~CuseTransport() {
  shutdown();
}

core::Status CuseTransport::start() {
  udev_ = UdevMonitor::create();
  if (udev_) {
    udevd_active_ = udev_->udevd_active();
    auto added = loop_.add(udev_->fd(), std::make_shared<UdevSource>(*this));
    if (added) udev_source_id_ = added.value();
  }
  if (wait_for_udev()) {
    log::info("udevd is running: installs wait up to {} ms for its rules",
              settings_.udev_timeout_ms);
  } else {
    log::warning(
        "udevd is not running: nodes keep the kernel's mode 0600 root:root "
        "(install udev and udev/50-synchmess.rules for other users)");
  }

  const auto create_and_wait = [this](DeviceKind kind, const char* name) -> core::Status {
    auto created = std::make_shared<std::promise<core::Status>>();
    auto result = created->get_future();
    create_device(kind, name, nullptr,
                  [created](core::Status status) { created->set_value(status); });
    if (result.wait_for(kStartTimeout) != std::future_status::ready) {
      log::error("the kernel did not create /dev/synch/{} within {} s", name,
                 kStartTimeout.count());
      return core::make_error(std::errc::timed_out);
    }
    return result.get();
  };
  if (auto control = create_and_wait(DeviceKind::kControl, "synchmess"); !control) {
    return control;
  }
  return create_and_wait(DeviceKind::kConfig, "config");
}

void CuseTransport::shutdown() noexcept {
  std::vector<std::shared_ptr<Device>> devices;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;  // deferred creations that wake up now stop at once
    for (auto& [name, device] : devices_)
      devices.push_back(device);
  }
  for (auto& device : devices)
    discard(device);
  devices.clear();  // destroys them (nothing else holds them once the service stopped)
  if (udev_source_id_ != 0) {
    loop_.remove(udev_source_id_, udev_->fd());
    udev_source_id_ = 0;
  }
}

std::string CuseTransport::path_of(std::string_view group) const {
  return std::string(SYNCH_DEV_DIR "/").append(group);
}

void CuseTransport::create_group_device(std::shared_ptr<core::Group> group,
                                        std::function<void(core::Status)> done) {
  std::string name = group->name();
  create_device(DeviceKind::kGroup, std::move(name), std::move(group), std::move(done));
}

void CuseTransport::remove_group_device(std::shared_ptr<core::Group> group,
                                        std::function<void()> done) {
  std::shared_ptr<Device> device;
  {
    std::lock_guard lock(mu_);
    if (auto found = devices_.find(group->name());
        found != devices_.end() && found->second->group == group) {
      device = found->second;
    }
  }
  if (!device) {
    // No device (creation failed, or still deferred: it will see the group closed and stop).
    done();
    return;
  }
  device->add_destroyed_callback(std::move(done));
  discard(device);
}

void CuseTransport::create_device(DeviceKind kind, std::string name,
                                  std::shared_ptr<core::Group> group,
                                  std::function<void(core::Status)> done) {
  std::shared_ptr<Device> device;
  {
    std::lock_guard lock(mu_);
    if (stopped_) {
      done(core::make_error(static_cast<std::errc>(ESHUTDOWN)));
      return;
    }
    if (group && group->closed()) {  // removed before its device was made
      done(core::make_error(std::errc::identifier_removed));
      return;
    }
    auto existing = devices_.find(name);
    const bool existing_going =
        existing != devices_.end() && existing->second->group && existing->second->group->closed();
    if (dying_.count(name) != 0 || existing_going) {
      // The previous device of this name is being torn down (the kernel refuses a second node
      // of one name): create after it is gone.
      dying_[name].waiting.push_back(
          [this, kind, name, group = std::move(group), done = std::move(done)]() mutable {
            create_device(kind, std::move(name), std::move(group), std::move(done));
          });
      return;
    }
    if (existing != devices_.end()) {
      done(core::make_error(std::errc::file_exists));
      return;
    }
    unsigned free_minor = 0;
    while (free_minor < minor_used_.size() && minor_used_[free_minor])
      ++free_minor;
    if (free_minor == minor_used_.size()) {
      log::limited(device_failure_log, log::Level::kError,
                   "no free minor for synch/{}: {} devices exist", name, minor_used_.size());
      done(core::make_error(std::errc::no_space_on_device));
      return;
    }
    minor_used_[free_minor] = true;
    device =
        std::make_shared<Device>(*this, kind, name, std::move(group), free_minor, std::move(done));
    devices_.emplace(name, device);  // reserves the name; discard() may take it back any time
  }
  if (auto opened = device->open_session(major_); !opened) {
    device->finish(opened);
    discard(device);
    return;
  }
  // Register before anything can discard it unseen: a discard that came first wins.
  const uint64_t id = loop_.register_source(device->fd(), device);
  bool discarded;
  {
    std::lock_guard lock(mu_);
    discarded = device->discarded;
    if (!discarded) device->loop_id = id;
  }
  if (discarded) {
    loop_.remove(id, device->fd());
    return;
  }
  if (auto watching = loop_.watch(id); !watching) {
    log::error("synch/{}: cannot watch its session: {}", device->name,
               std::strerror(core::to_errno(watching.error())));
    device->finish(core::make_error(watching.error()));
    discard(device);
  }
}

void CuseTransport::discard(const std::shared_ptr<Device>& device) noexcept {
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    if (device->discarded) return;
    device->discarded = true;
    if (auto found = devices_.find(device->name);
        found != devices_.end() && found->second == device) {
      devices_.erase(found);
    }
    ++dying_[device->name].devices;
    id = device->loop_id;
  }
  if (id != 0) loop_.remove(id, device->fd());
}

void CuseTransport::release_minor(unsigned number) noexcept {
  std::lock_guard lock(mu_);
  if (number < minor_used_.size()) minor_used_[number] = false;
}

void CuseTransport::on_device_gone(const std::string& name) noexcept {
  std::vector<std::function<void()>> waiting;
  {
    std::lock_guard lock(mu_);
    auto dying = dying_.find(name);
    if (dying == dying_.end() || --dying->second.devices != 0) return;
    waiting.swap(dying->second.waiting);
    dying_.erase(dying);
  }
  for (auto& create : waiting)
    create();
}

void CuseTransport::on_udev_added(std::string_view sysname, dev_t devnum) {
  // sysfs names the device "synch!<name>"; libudev reports it as "synch/<name>".
  constexpr std::string_view kPrefix = "synch/";
  constexpr std::string_view kSysfsPrefix = "synch!";
  if (sysname.substr(0, kPrefix.size()) != kPrefix &&
      sysname.substr(0, kSysfsPrefix.size()) != kSysfsPrefix) {
    return;
  }
  const std::string_view name = sysname.substr(kPrefix.size());
  std::shared_ptr<Device> device;
  {
    std::lock_guard lock(mu_);
    if (auto found = devices_.find(name); found != devices_.end()) device = found->second;
  }
  if (device) device->on_udev_added(devnum);
}

}  // namespace synchmess::server
