#include "server/udev_monitor.hpp"

#include <libudev.h>

#include <cstring>

#include "server/log.hpp"

namespace synchmess::server {

std::unique_ptr<UdevMonitor> UdevMonitor::create() {
  struct udev* udev = udev_new();
  if (udev == nullptr) {
    log::warning("udev: libudev unavailable; installs will not wait for udev rules");
    return nullptr;
  }
  struct udev_monitor* monitor = udev_monitor_new_from_netlink(udev, "udev");
  if (monitor == nullptr ||
      udev_monitor_filter_add_match_subsystem_devtype(monitor, "cuse", nullptr) < 0 ||
      udev_monitor_enable_receiving(monitor) < 0) {
    log::warning("udev: cannot monitor udev events; installs will not wait for udev rules");
    if (monitor != nullptr) udev_monitor_unref(monitor);
    udev_unref(udev);
    return nullptr;
  }
  return std::unique_ptr<UdevMonitor>(new UdevMonitor(udev, monitor));
}

UdevMonitor::~UdevMonitor() {
  udev_monitor_unref(monitor_);
  udev_unref(udev_);
}

bool UdevMonitor::udevd_active() const {
  struct udev_queue* queue = udev_queue_new(udev_);
  if (queue == nullptr) return false;
  const bool active = udev_queue_get_udev_is_active(queue) != 0;
  udev_queue_unref(queue);
  return active;
}

int UdevMonitor::fd() const noexcept {
  return udev_monitor_get_fd(monitor_);
}

void UdevMonitor::drain(
    const std::function<void(std::string_view sysname, dev_t devnum)>& on_added) {
  // The monitor's socket is non-blocking: receive until it is empty.
  while (struct udev_device* device = udev_monitor_receive_device(monitor_)) {
    const char* action = udev_device_get_action(device);
    const char* sysname = udev_device_get_sysname(device);
    log::debug("udev: {} {}", action != nullptr ? action : "?", sysname != nullptr ? sysname : "?");
    if (action != nullptr && sysname != nullptr && std::strcmp(action, "add") == 0) {
      on_added(sysname, udev_device_get_devnum(device));
    }
    udev_device_unref(device);
  }
}

}  // namespace synchmess::server
