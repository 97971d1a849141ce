// UdevMonitor: tells when udevd has processed (applied its rules to) a new CUSE device.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string_view>

struct udev;
struct udev_monitor;

namespace synchmess::server {

// Contract: the monitor receives the "udev" netlink events of subsystem "cuse", which udevd
// sends after it ran the rules for a device (so MODE/GROUP are in place). Receiving is enabled at
// creation, before any device of ours exists, so no event is missed.
class UdevMonitor {
 public:
  // nullptr when libudev cannot monitor (no netlink, no memory); the reason is logged.
  static std::unique_ptr<UdevMonitor> create();
  ~UdevMonitor();
  UdevMonitor(const UdevMonitor&) = delete;
  UdevMonitor& operator=(const UdevMonitor&) = delete;

  // Whether udevd runs now (its control socket exists). Without it, nobody applies rules and no
  // event will come: installs do not wait.
  bool udevd_active() const;
  int fd() const noexcept;
  // Receives every pending event; calls on_added(sysname, devnum) for each "add".
  void drain(const std::function<void(std::string_view sysname, dev_t devnum)>& on_added);

 private:
  UdevMonitor(struct udev* udev, struct udev_monitor* monitor) noexcept
      : udev_(udev), monitor_(monitor) {}
  struct udev* udev_;
  struct udev_monitor* monitor_;
};

}  // namespace synchmess::server
