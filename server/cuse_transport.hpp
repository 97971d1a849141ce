// CuseTransport: every synchmess device as a real character device through CUSE.
//
// One CUSE session per device (a /dev/cuse connection each, as the kernel requires), all on one
// character major: the control device takes a dynamic major, every later device registers the
// next free minor under it, so the machine's ~150 dynamic majors are never the limit. All
// sessions are served by the shared EventLoop's fixed worker pool; no thread per device.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/group.hpp"
#include "core/result.hpp"
#include "core/timer_queue.hpp"
#include "server/event_loop.hpp"
#include "server/service.hpp"
#include "server/udev_monitor.hpp"

namespace synchmess::server {

class CuseTransport final : public DeviceDirectory {
 public:
  struct Settings {
    unsigned udev_timeout_ms = 5000;
    uint64_t max_devices = 1026;  // control + config + max_groups
  };

  CuseTransport(Service& service, EventLoop& loop, core::TimerQueue& timers, Settings settings);
  ~CuseTransport() override;
  CuseTransport(const CuseTransport&) = delete;
  CuseTransport& operator=(const CuseTransport&) = delete;

  // Creates /dev/synch/synchmess and /dev/synch/config and returns once both exist (the event
  // loop must be running). Fails with a logged reason.
  core::Status start();
  // Destroys every device. Call after the event loop stopped and the service released its
  // waiters.
  void shutdown() noexcept;
  unsigned major() const noexcept { return major_.load(); }

  // DeviceDirectory
  std::string path_of(std::string_view group) const override;
  void create_group_device(std::shared_ptr<core::Group> group,
                           std::function<void(core::Status)> done) override;
  void remove_group_device(std::shared_ptr<core::Group> group, std::function<void()> done) override;

  class Device;

 private:
  friend class Device;
  class UdevSource;

  // Creates a device: registers it, opens its session, starts serving it. `done` runs when the
  // kernel has created the node (and udev has handled it), or creation failed.
  void create_device(DeviceKind kind, std::string name, std::shared_ptr<core::Group> group,
                     std::function<void(core::Status)> done);
  // Forgets a device: no new requests reach it; it is destroyed when the last user lets go.
  void discard(const std::shared_ptr<Device>& device) noexcept;
  void release_minor(unsigned number) noexcept;
  // A discarded device's node lives until its last user lets go; a new device of that name
  // must wait for it (the kernel refuses a second node of one name).
  void on_device_gone(const std::string& name) noexcept;
  void on_udev_added(std::string_view sysname, dev_t devnum);
  bool wait_for_udev() const noexcept {
    return udev_ && udevd_active_ && settings_.udev_timeout_ms;
  }

  Service& service_;
  EventLoop& loop_;
  core::TimerQueue& timers_;
  const Settings settings_;
  std::unique_ptr<UdevMonitor> udev_;
  bool udevd_active_ = false;
  uint64_t udev_source_id_ = 0;
  std::atomic<unsigned> major_{0};  // set once the control device exists, before any other

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Device>, std::less<>> devices_;  // guarded by mu_
  std::vector<bool> minor_used_;                                         // guarded by mu_
  struct Dying {
    unsigned devices = 0;                        // discarded, not yet destroyed
    std::vector<std::function<void()>> waiting;  // creations of this name, run when none is left
  };
  std::map<std::string, Dying, std::less<>> dying_;  // guarded by mu_
  bool stopped_ = false;                             // guarded by mu_
};

}  // namespace synchmess::server
