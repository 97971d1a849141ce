#include "core/hazard.hpp"

namespace synchmess::core {
namespace {

// Gives the calling thread's record back when the thread exits.
struct ThreadRecord {
  HazardDomain::Record* record = nullptr;
  ~ThreadRecord() {
    if (record != nullptr) HazardDomain::instance().release_record(record);
  }
};

thread_local ThreadRecord t_record;

}  // namespace

HazardDomain& HazardDomain::instance() noexcept {
  // Deliberately never destroyed: threads may retire nodes during static destruction.
  static HazardDomain* const domain = new HazardDomain();
  return *domain;
}

HazardDomain::Record* HazardDomain::acquire_record() noexcept {
  for (Record* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    bool expected = false;
    if (!r->in_use.load(std::memory_order_relaxed) &&
        r->in_use.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      return r;
    }
  }
  auto* fresh = new Record();
  fresh->in_use.store(true, std::memory_order_relaxed);
  Record* head = records_.load(std::memory_order_relaxed);
  do {
    fresh->next = head;
  } while (!records_.compare_exchange_weak(head, fresh, std::memory_order_release,
                                           std::memory_order_relaxed));
  return fresh;
}

void HazardDomain::release_record(Record* record) noexcept {
  for (auto& slot : record->slots)
    slot.store(nullptr, std::memory_order_release);
  record->in_use.store(false, std::memory_order_release);
}

bool HazardDomain::is_protected(const void* node) const noexcept {
  for (Record* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    for (const auto& slot : r->slots) {
      if (slot.load(std::memory_order_seq_cst) == node) return true;
    }
  }
  return false;
}

void HazardDomain::push_retired(Retirable* first, Retirable* last, std::size_t count) noexcept {
  Retirable* head = retired_.load(std::memory_order_relaxed);
  do {
    last->retired_next = head;
  } while (!retired_.compare_exchange_weak(head, first, std::memory_order_release,
                                           std::memory_order_relaxed));
  retired_count_.fetch_add(count, std::memory_order_relaxed);
}

void HazardDomain::retire(Retirable* node) noexcept {
  push_retired(node, node, 1);
  if (retired_count_.load(std::memory_order_relaxed) >= kScanBatch) reclaim_now();
}

std::size_t HazardDomain::reclaim_now() noexcept {
  bool expected = false;
  if (!scanning_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return 0;
  Retirable* node = retired_.exchange(nullptr, std::memory_order_acquire);
  std::size_t freed = 0;
  std::size_t kept = 0;
  Retirable* kept_first = nullptr;
  Retirable* kept_last = nullptr;
  std::size_t taken = 0;
  while (node != nullptr) {
    Retirable* next = node->retired_next;
    ++taken;
    if (is_protected(node)) {
      node->retired_next = kept_first;
      kept_first = node;
      if (kept_last == nullptr) kept_last = node;
      ++kept;
    } else {
      node->reclaim(node);
      ++freed;
    }
    node = next;
  }
  retired_count_.fetch_sub(taken, std::memory_order_relaxed);
  if (kept_first != nullptr) push_retired(kept_first, kept_last, kept);
  scanning_.store(false, std::memory_order_release);
  return freed;
}

HazardGuard::HazardGuard(int slot, Lifetime lifetime) noexcept : lifetime_(lifetime) {
  if (t_record.record == nullptr) t_record.record = HazardDomain::instance().acquire_record();
  slot_ = &t_record.record->slots[slot];
}

}  // namespace synchmess::core
