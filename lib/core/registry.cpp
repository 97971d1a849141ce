#include "core/registry.hpp"

namespace synchmess::core {

Status validate_group_name(std::string_view name) noexcept {
  constexpr Error kInvalid{std::errc::invalid_argument};
  if (name.empty() || name.size() >= SYNCH_NAME_MAX) return kInvalid;
  if (name.front() == '.') return kInvalid;  // no ".", "..", or hidden files in /dev/synch
  for (const char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!allowed) return kInvalid;
  }
  if (name == "synchmess" || name == "config") return kInvalid;
  return {};
}

Registry::Registry(const Params& params, TimerQueue& timers, std::size_t max_groups, Quotas& quotas,
                   uint64_t ring_bytes) noexcept
    : params_(params),
      timers_(timers),
      max_groups_(max_groups),
      quotas_(quotas),
      ring_bytes_(ring_bytes) {}

Registry::~Registry() {
  close_all(std::errc::identifier_removed);
}

Result<Registry::Installed> Registry::install(std::string_view name, uid_t owner) noexcept {
  if (auto valid = validate_group_name(name); !valid) return make_error(valid.error());
  std::lock_guard lock(mu_);
  if (auto found = groups_.find(name); found != groups_.end()) {
    return Installed{found->second, false};
  }
  if (auto charged = quotas_.charge_group(owner); !charged) return make_error(charged.error());
  if (groups_.size() >= max_groups_) {
    quotas_.uncharge_group(owner);
    return make_error(std::errc::no_space_on_device);
  }
  auto region = region::Region::create(name, ring_bytes_);
  if (!region) {
    quotas_.uncharge_group(owner);
    return make_error(region.error());
  }
  auto group = std::make_shared<Group>(std::string(name), owner, params_, timers_, quotas_,
                                       std::move(region.value()));
  group->count_lingering();  // once removed, it counts as lingering until destroyed
  group->set_observer(observer_.load());
  groups_.emplace(std::string(name), group);
  return Installed{std::move(group), true};
}

Status Registry::remove(std::string_view name, uid_t caller) noexcept {
  auto group = take_out(name, caller);
  if (!group) return make_error(group.error());
  group.value()->close(std::errc::identifier_removed);  // outside the lock: completes waiters
  return {};
}

Result<std::shared_ptr<Group>> Registry::take_out(std::string_view name, uid_t caller) noexcept {
  std::shared_ptr<Group> group;
  {
    std::lock_guard lock(mu_);
    auto found = groups_.find(name);
    if (found == groups_.end()) return make_error(std::errc::no_such_file_or_directory);
    if (caller != 0 && caller != found->second->owner()) {
      return make_error(std::errc::operation_not_permitted);
    }
    group = std::move(found->second);
    groups_.erase(found);
  }
  removals_.fetch_add(1, std::memory_order_relaxed);
  quotas_.group_removed(group->owner());  // lingering until the last reference goes
  return group;
}

std::shared_ptr<Group> Registry::find(std::string_view name) const noexcept {
  std::lock_guard lock(mu_);
  auto found = groups_.find(name);
  return found == groups_.end() ? nullptr : found->second;
}

std::vector<std::shared_ptr<Group>> Registry::groups() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Group>> all;
  all.reserve(groups_.size());
  for (const auto& [name, group] : groups_)
    all.push_back(group);
  return all;
}

std::size_t Registry::size() const noexcept {
  std::lock_guard lock(mu_);
  return groups_.size();
}

std::string Registry::list_text() const {
  std::string text;
  for (const auto& group : groups()) {
    const synch_group_stats stats = group->stats();
    text += group->name();
    text += " owner=" + std::to_string(group->owner());
    text += " queued_messages=" + std::to_string(stats.queued_messages);
    text += " queued_bytes=" + std::to_string(stats.queued_bytes);
    text += " delayed_messages=" + std::to_string(stats.delayed_messages);
    text += " delayed_bytes=" + std::to_string(stats.delayed_bytes);
    text += " sleepers=" + std::to_string(stats.sleepers);
    text += " readers_waiting=" + std::to_string(stats.readers_waiting);
    text += " writers_waiting=" + std::to_string(group->writers_waiting());
    text += '\n';
  }
  return text;
}

void Registry::close_all(std::errc reason) noexcept {
  std::map<std::string, std::shared_ptr<Group>, std::less<>> closing;
  {
    std::lock_guard lock(mu_);
    closing.swap(groups_);
  }
  for (auto& [name, group] : closing) {
    quotas_.group_removed(group->owner());
    group->close(reason);
  }
}

void Registry::params_changed() noexcept {
  for (const auto& group : groups())
    group->on_params_changed();
}

}  // namespace synchmess::core
