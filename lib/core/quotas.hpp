// Quotas: what the server lets each user hold (SPEC "Limits and quotas").
//
// - A global bound on message memory, `max_memory`: the bytes the server spends on stored
//   messages, counted honestly (Group::footprint(): payload, header, allocator rounding and
//   container slots), whoever sent them, root included. Past it: ENOSPC.
// - Per-uid shares: an unprivileged uid may hold at most `max_user_memory` of that memory in
//   stored messages across all groups (charged to the sender, like RLIMIT_MSGQUEUE) and install
//   at most `max_user_groups` groups; its removed groups that open files still keep alive
//   ("lingering": a FUSE mount keeps a file until its release) are bounded the same way, or
//   install, open, remove, repeat would pin server memory without end. uid 0 is exempt from
//   all of these. Past them: EDQUOT.
// - Optionally a ResidentGuard (the server's): the global bound held against what the process
//   really holds, so that what the allocator keeps beyond the count (fragmentation) cannot take
//   the server past the bound either. Past it: ENOSPC, like the global bound.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/resident_guard.hpp"
#include "core/result.hpp"

namespace synchmess::core {

struct QuotaLimits {
  uint64_t max_memory = uint64_t{256} << 20;
  uint64_t max_user_memory = uint64_t{64} << 20;
  uint64_t max_user_groups = 64;
};

// kResidentMemory: the global bound held by the ResidentGuard (what the heap really holds).
enum class QuotaKind { kGlobalMemory, kResidentMemory, kUserMemory, kUserGroups };

// Told of every refusal (the server logs them, rate-limited). Runs on the refused caller's
// thread; must be quick and must not call back into the Quotas.
class QuotaObserver {
 public:
  virtual ~QuotaObserver() = default;
  virtual void on_refused(QuotaKind kind, uid_t uid, uint64_t requested) noexcept = 0;
};

// Contract: charge_memory() charges both the uid's share and the global bound, or neither and
// refuses: EDQUOT when the uid's share would pass max_user_memory (checked first), ENOSPC when
// the global bound would pass max_memory or the guard (if set) does not admit the bytes.
// uncharge_memory() gives back what one successful charge of the same uid and bytes took.
// charge_group()/uncharge_group() likewise, EDQUOT only (also when the uid has max_user_groups
// lingering groups); group_removed() moves one installed group of the uid to its lingering
// ones, lingering_group_gone() ends one.
// Thread-safety: every method, any thread, lock-free (the guard's own reading aside). The per-uid
// table holds kUserSlots distinct uids; uids beyond that share one overflow slot (one share for all
// of them: stricter, never looser). Lifetime: outlives everything charged to it (the server's
// groups and their messages). Memory ordering: every counter is reserved by its own CAS loop and
// compared only with its own limit, so relaxed order suffices for them; a uid's slot is claimed by
// a CAS on its key (acquire/release), after which it never changes hands.
class Quotas {
 public:
  static constexpr unsigned kUserSlotBits = 10;
  static constexpr std::size_t kUserSlots = std::size_t{1} << kUserSlotBits;

  explicit Quotas(QuotaLimits limits = {}) noexcept : limits_(limits) {}
  Quotas(const Quotas&) = delete;
  Quotas& operator=(const Quotas&) = delete;

  // No bound at all: for in-process users of the core (tests, benchmarks).
  static Quotas& unlimited() noexcept;

  void set_observer(QuotaObserver* observer) noexcept { observer_.store(observer); }
  // The guard must outlive every later charge; nullptr removes it.
  void set_guard(ResidentGuard* guard) noexcept { guard_.store(guard); }
  const QuotaLimits& limits() const noexcept { return limits_; }

  Status charge_memory(uid_t uid, uint64_t bytes) noexcept;
  void uncharge_memory(uid_t uid, uint64_t bytes) noexcept;
  Status charge_group(uid_t uid) noexcept;
  void uncharge_group(uid_t uid) noexcept;
  void group_removed(uid_t uid) noexcept;
  void lingering_group_gone(uid_t uid) noexcept;

  uint64_t memory_used() const noexcept { return memory_.load(std::memory_order_relaxed); }
  // Every byte ever given back (uncharge_memory): what was freed since an earlier look, however
  // briefly it was held.
  uint64_t memory_freed() const noexcept { return memory_freed_.load(std::memory_order_relaxed); }
  uint64_t user_memory(uid_t uid) const noexcept;            // 0 for root (not counted)
  uint64_t user_groups(uid_t uid) const noexcept;            // 0 for root (not counted)
  uint64_t user_lingering_groups(uid_t uid) const noexcept;  // 0 for root (not counted)

 private:
  struct alignas(64) UserSlot {    // one line each: different users never share a line
    std::atomic<uint64_t> key{0};  // uid + 1; 0 = free
    std::atomic<uint64_t> memory{0};
    std::atomic<uint64_t> groups{0};
    std::atomic<uint64_t> lingering{0};  // removed groups not destroyed yet
  };

  // Where the probe for `uid` starts (Fibonacci hashing: consecutive uids spread out).
  static std::size_t first_slot(uid_t uid) noexcept {
    return static_cast<std::size_t>((uint64_t{uid} * 0x9E3779B97F4A7C15ull) >>
                                    (64 - kUserSlotBits));
  }
  // The slot of `uid`, claimed on first use.
  UserSlot& slot_of(uid_t uid) noexcept;
  const UserSlot* find_slot(uid_t uid) const noexcept;
  static bool reserve(std::atomic<uint64_t>& counter, uint64_t amount, uint64_t limit) noexcept;
  void refused(QuotaKind kind, uid_t uid, uint64_t requested) noexcept;

  const QuotaLimits limits_;
  std::atomic<QuotaObserver*> observer_{nullptr};
  std::atomic<ResidentGuard*> guard_{nullptr};
  alignas(64) std::atomic<uint64_t> memory_{0};
  std::atomic<uint64_t> memory_freed_{0};  // on memory_'s line: touched by the same calls
  UserSlot slots_[kUserSlots];
  UserSlot overflow_;
};

}  // namespace synchmess::core
