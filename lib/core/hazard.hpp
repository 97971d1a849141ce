// Hazard pointers: safe memory reclamation for the lock-free message queue's segments.
//
// A thread that is about to dereference a shared pointer publishes it in one of its hazard slots
// ("protects" it); a node that was unlinked from every shared pointer is "retired" and reclaimed
// only once no hazard slot holds it (Michael, "Hazard Pointers", IEEE TPDS 2004).
#pragma once

#include <atomic>
#include <cstddef>

namespace synchmess::core {

// Base of anything the domain can reclaim. Embedding the link avoids an allocation at retire
// time, so retiring never fails.
struct Retirable {
  Retirable* retired_next = nullptr;
  void (*reclaim)(Retirable*) noexcept = nullptr;
};

// Contract: one process-wide domain (instance()), never destroyed, so retired nodes stay
// reachable (not leaked) until a scan frees them. Each thread gets kSlotsPerThread slots the
// first time it uses HazardGuard and gives them back when it exits.
// Progress: protect() is lock-free (it retries only when the source changed under it); retire()
// is lock-free and scans at most once per kScanBatch retirements, and only when no other thread
// is scanning (a busy scanner is never waited for).
// Memory ordering: publishing a hazard and re-reading the source are sequentially consistent, as
// are the unlink a retirer did before retire() and the scan's reads of the slots, so a scan
// either sees a slot that protects the node or the protector sees the node unlinked.
class HazardDomain {
 public:
  static constexpr int kSlotsPerThread = 2;
  static constexpr std::size_t kScanBatch = 64;

  static HazardDomain& instance() noexcept;

  // Hands `node` to the domain; node->reclaim(node) runs once no slot protects it.
  // Precondition: no shared pointer still leads to `node`.
  void retire(Retirable* node) noexcept;

  // Frees every retired node that no slot protects now; returns how many. Mostly for tests.
  std::size_t reclaim_now() noexcept;

  struct Record;  // one per thread that ever protected something (reused after it exits)

  Record* acquire_record() noexcept;
  void release_record(Record* record) noexcept;
  bool is_protected(const void* node) const noexcept;

 private:
  HazardDomain() = default;
  void push_retired(Retirable* first, Retirable* last, std::size_t count) noexcept;

  std::atomic<Record*> records_{nullptr};     // grows only; records are reused, never freed
  std::atomic<Retirable*> retired_{nullptr};  // Treiber stack of retired nodes
  std::atomic<std::size_t> retired_count_{0};
  std::atomic<bool> scanning_{false};  // one scanner at a time; others skip
};

struct alignas(64) HazardDomain::Record {
  std::atomic<const void*> slots[kSlotsPerThread] = {};
  std::atomic<bool> in_use{false};
  Record* next = nullptr;  // immutable once the record is published
};

// RAII owner of one hazard slot of the calling thread. Not movable across threads.
// Two lifetimes: kClear empties the slot when the guard goes away; kSticky leaves the last
// protected node published until the thread protects another one in that slot or exits. Sticky
// slots make the common case of a hot structure free: a protect() that finds the source still
// equal to what the slot holds needs no store and no fence, because that node has been published
// continuously since it was validated. The price: each thread may keep one retired node per
// sticky slot from being reclaimed (a message-queue segment, ~10 KiB) until it moves on.
class HazardGuard {
 public:
  enum class Lifetime { kClear, kSticky };
  explicit HazardGuard(int slot, Lifetime lifetime = Lifetime::kClear) noexcept;
  ~HazardGuard() {
    if (lifetime_ == Lifetime::kClear) reset();
  }
  HazardGuard(const HazardGuard&) = delete;
  HazardGuard& operator=(const HazardGuard&) = delete;

  // Loads `source` and publishes it until the source is seen unchanged after the publication:
  // the returned node cannot be reclaimed until reset() or another protect().
  template <class T>
  T* protect(const std::atomic<T*>& source) noexcept {
    T* seen = source.load(std::memory_order_acquire);
    // Only this thread writes the slot, and every value it leaves there was validated.
    if (slot_->load(std::memory_order_relaxed) == seen) return seen;
    for (;;) {
      slot_->store(seen, std::memory_order_seq_cst);
      T* again = source.load(std::memory_order_seq_cst);
      if (again == seen) return seen;
      seen = again;
    }
  }

  void reset() noexcept { slot_->store(nullptr, std::memory_order_release); }

 private:
  std::atomic<const void*>* slot_;
  Lifetime lifetime_;
};

}  // namespace synchmess::core
