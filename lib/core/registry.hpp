// Registry: the installed groups, by name.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/group.hpp"
#include "core/params.hpp"
#include "core/quotas.hpp"
#include "core/result.hpp"
#include "core/timer_queue.hpp"

namespace synchmess::core {

inline constexpr std::size_t kDefaultMaxGroups = 1024;

// A group name is 1..63 bytes of [A-Za-z0-9_.-], not starting with '.', and neither "synchmess"
// nor "config" (the control and config devices). EINVAL otherwise.
Status validate_group_name(std::string_view name) noexcept;

// Contract: install() is idempotent (a second install of a name returns the same group with
// created == false; concurrent installs of one name create one group). remove() is allowed to
// root (uid 0) and to the uid that installed the group; it closes the group (waiters get
// EIDRM, later operations ENODEV). At most `max_groups` groups exist (ENOSPC beyond), and each
// installer's groups count against its share in `quotas` (EDQUOT beyond) until removed.
// Thread-safety: all methods, any thread. Install and remove are rare; they take one mutex, and
// no region is touched under it (a group is closed after it is let go).
// The hot paths (send, receive) never touch the registry: callers keep the shared_ptr.
class Registry {
 public:
  // Each group gets a shared region with a ring of `ring_bytes` (region::kMinRingBytes ..
  // kMaxRingBytes, a power of two).
  Registry(const Params& params, TimerQueue& timers, std::size_t max_groups = kDefaultMaxGroups,
           Quotas& quotas = Quotas::unlimited(),
           uint64_t ring_bytes = region::kDefaultRingBytes) noexcept;
  ~Registry();  // closes every group still installed
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  struct Installed {
    std::shared_ptr<Group> group;
    bool created = false;
  };

  // EINVAL (bad name), EDQUOT (the owner's share of groups is full), ENOSPC (max_groups), or
  // what creating its region failed with (ENOMEM, EMFILE).
  Result<Installed> install(std::string_view name, uid_t owner) noexcept;
  // ENOENT (no such group), EPERM (caller is neither root nor the installer).
  Status remove(std::string_view name, uid_t caller) noexcept;
  // remove() in two steps, for callers that hold a lock of their own around the first: takes
  // the group out of the registry (counted as removed and lingering) and returns it, still
  // open; the caller closes it (Group::close) after letting go of its lock, since closing
  // touches the group's region, which members may have made slow to drain.
  Result<std::shared_ptr<Group>> take_out(std::string_view name, uid_t caller) noexcept;

  std::shared_ptr<Group> find(std::string_view name) const noexcept;
  std::vector<std::shared_ptr<Group>> groups() const;  // sorted by name
  std::size_t size() const noexcept;
  std::size_t max_groups() const noexcept { return max_groups_; }
  // How many removals there have been (a count that only grows).
  uint64_t removals() const noexcept { return removals_.load(std::memory_order_relaxed); }

  // One line per group, sorted by name: the control device's read() text.
  //   <name> owner=<uid> queued_messages=N queued_bytes=N delayed_messages=N delayed_bytes=N
  //   sleepers=N readers_waiting=N writers_waiting=N
  std::string list_text() const;

  // Closes every group with `reason` and forgets them (server shutdown).
  void close_all(std::errc reason) noexcept;

  // Where the groups it installs report a corrupt region (nullptr: nowhere).
  void set_group_observer(GroupObserver* observer) noexcept { observer_.store(observer); }

  // The parameters changed: every group admits the writers a raised budget lets in and tells
  // its watchers that readiness may have changed.
  void params_changed() noexcept;

 private:
  const Params& params_;
  TimerQueue& timers_;
  const std::size_t max_groups_;
  Quotas& quotas_;
  const uint64_t ring_bytes_;
  std::atomic<uint64_t> removals_{0};
  std::atomic<GroupObserver*> observer_{nullptr};
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Group>, std::less<>> groups_;  // guarded by mu_
};

}  // namespace synchmess::core
