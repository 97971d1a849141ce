#include "core/quotas.hpp"

#include <limits>

namespace synchmess::core {
namespace {
constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();
constexpr std::size_t kSlotMask = Quotas::kUserSlots - 1;  // kUserSlots is a power of two
}  // namespace

Quotas& Quotas::unlimited() noexcept {
  static Quotas quotas(
      {.max_memory = kNoLimit, .max_user_memory = kNoLimit, .max_user_groups = kNoLimit});
  return quotas;
}

bool Quotas::reserve(std::atomic<uint64_t>& counter, uint64_t amount, uint64_t limit) noexcept {
  uint64_t used = counter.load(std::memory_order_relaxed);
  do {
    if (amount > limit || used > limit - amount) return false;
  } while (!counter.compare_exchange_weak(used, used + amount, std::memory_order_relaxed));
  return true;
}

Quotas::UserSlot& Quotas::slot_of(uid_t uid) noexcept {
  const uint64_t key = uint64_t{uid} + 1;
  const std::size_t start = first_slot(uid);
  for (std::size_t probe = 0; probe < kUserSlots; ++probe) {
    UserSlot& slot = slots_[(start + probe) & kSlotMask];
    uint64_t seen = slot.key.load(std::memory_order_acquire);
    if (seen == 0 && slot.key.compare_exchange_strong(seen, key, std::memory_order_acq_rel)) {
      return slot;
    }
    if (seen == key) return slot;
  }
  return overflow_;
}

const Quotas::UserSlot* Quotas::find_slot(uid_t uid) const noexcept {
  const uint64_t key = uint64_t{uid} + 1;
  const std::size_t start = first_slot(uid);
  for (std::size_t probe = 0; probe < kUserSlots; ++probe) {
    const UserSlot& slot = slots_[(start + probe) & kSlotMask];
    const uint64_t seen = slot.key.load(std::memory_order_acquire);
    if (seen == key) return &slot;
    if (seen == 0) return nullptr;
  }
  return &overflow_;
}

void Quotas::refused(QuotaKind kind, uid_t uid, uint64_t requested) noexcept {
  if (QuotaObserver* observer = observer_.load()) observer->on_refused(kind, uid, requested);
}

Status Quotas::charge_memory(uid_t uid, uint64_t bytes) noexcept {
  UserSlot* slot = uid == 0 ? nullptr : &slot_of(uid);
  if (slot != nullptr && !reserve(slot->memory, bytes, limits_.max_user_memory)) {
    refused(QuotaKind::kUserMemory, uid, bytes);
    return make_error(kQuotaExceeded);
  }
  const bool counted = reserve(memory_, bytes, limits_.max_memory);
  ResidentGuard* guard = guard_.load();
  if (!counted || (guard != nullptr && !guard->admits(bytes))) {
    if (counted) memory_.fetch_sub(bytes, std::memory_order_relaxed);
    if (slot != nullptr) slot->memory.fetch_sub(bytes, std::memory_order_relaxed);
    refused(counted ? QuotaKind::kResidentMemory : QuotaKind::kGlobalMemory, uid, bytes);
    return make_error(std::errc::no_space_on_device);
  }
  return {};
}

void Quotas::uncharge_memory(uid_t uid, uint64_t bytes) noexcept {
  memory_.fetch_sub(bytes, std::memory_order_relaxed);
  memory_freed_.fetch_add(bytes, std::memory_order_relaxed);
  if (uid != 0) slot_of(uid).memory.fetch_sub(bytes, std::memory_order_relaxed);
}

Status Quotas::charge_group(uid_t uid) noexcept {
  if (uid == 0) return {};
  UserSlot& slot = slot_of(uid);
  if (slot.lingering.load(std::memory_order_relaxed) >= limits_.max_user_groups ||
      !reserve(slot.groups, 1, limits_.max_user_groups)) {
    refused(QuotaKind::kUserGroups, uid, 1);
    return make_error(kQuotaExceeded);
  }
  return {};
}

void Quotas::uncharge_group(uid_t uid) noexcept {
  if (uid != 0) slot_of(uid).groups.fetch_sub(1, std::memory_order_relaxed);
}

void Quotas::group_removed(uid_t uid) noexcept {
  if (uid == 0) return;
  UserSlot& slot = slot_of(uid);
  slot.lingering.fetch_add(1, std::memory_order_relaxed);  // a removal never fails
  slot.groups.fetch_sub(1, std::memory_order_relaxed);
}

void Quotas::lingering_group_gone(uid_t uid) noexcept {
  if (uid != 0) slot_of(uid).lingering.fetch_sub(1, std::memory_order_relaxed);
}

uint64_t Quotas::user_memory(uid_t uid) const noexcept {
  const UserSlot* slot = uid == 0 ? nullptr : find_slot(uid);
  return slot == nullptr ? 0 : slot->memory.load(std::memory_order_relaxed);
}

uint64_t Quotas::user_groups(uid_t uid) const noexcept {
  const UserSlot* slot = uid == 0 ? nullptr : find_slot(uid);
  return slot == nullptr ? 0 : slot->groups.load(std::memory_order_relaxed);
}

uint64_t Quotas::user_lingering_groups(uid_t uid) const noexcept {
  const UserSlot* slot = uid == 0 ? nullptr : find_slot(uid);
  return slot == nullptr ? 0 : slot->lingering.load(std::memory_order_relaxed);
}

}  // namespace synchmess::core
