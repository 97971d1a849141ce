// IndexRing: a bounded lock-free MPMC ring of small integers (SCQ).
//
// Algorithm: Nikolaev's Scalable Circular Queue, "A Scalable, Portable, and Memory-Efficient
// Lock-Free FIFO Queue" (DISC 2019), written afresh for this project. It needs only 64-bit
// fetch-add and compare-and-swap, so it is portable and TSan-checkable. MessageQueue builds the
// unbounded message queue of a group from it.
//
// A ring of capacity n has 2n entries. Producers and consumers take tickets with fetch-add on
// tail_ and head_; ticket t maps to entry slot_of(t) and to "cycle" t / 2n (how many times the
// ring has wrapped). An entry packs {cycle, safe bit, index}; index == kEmptyIndex is an empty
// entry. A producer stores its index in its ticket's entry when the entry is empty and of an older
// cycle; a consumer takes the entry whose cycle equals its ticket's and marks it empty. A consumer
// that finds no value for its ticket moves the entry's cycle forward (or clears its safe bit when a
// late consumer of an older cycle still has to take it), so the producer that holds that ticket
// cannot store there any more and retries with a new ticket: no value is ever left behind.
// Twice as many entries as indices guarantee producers always find a usable entry; the
// `threshold_` counter bounds how long consumers search an empty ring (3n - 1 failed tickets),
// which makes dequeue on an empty ring livelock-free and, once it went negative, O(1).
//
// Progress: lock-free. No operation waits for another thread: a thread preempted anywhere
// delays nobody (a stalled producer's ticket is skipped by consumers and re-taken by it later).
// enqueue() never fails on an open ring (at most n indices exist, in 2n entries).
//
// Memory ordering: every operation on head_, tail_, threshold_ and the entries is sequentially
// consistent (on x86-64 that costs nothing over acq_rel: all are locked RMWs or plain loads, and
// the only store, to threshold_, is rare). The entry CAS of enqueue() is a release of whatever the
// producer wrote before it (MessageQueue's payload slot); the consumer's load of that entry is the
// matching acquire.
#pragma once

#include <atomic>
#include <cstdint>

namespace synchmess::core {

template <unsigned Order>
class IndexRing {
  static_assert(Order >= 3, "the cache remap spreads 8 consecutive tickets over 8 cache lines");
  static_assert(Order <= 20, "indices, safe bit and a 40+ bit cycle share one 64-bit entry");

 public:
  static constexpr uint64_t kCapacity = uint64_t{1} << Order;  // indices 0..kCapacity-1
  static constexpr uint64_t kNone = ~uint64_t{0};              // dequeue() on an empty ring

  enum class Init { kEmpty, kFull /* holds 0..kCapacity-1 in order */ };

  explicit IndexRing(Init init) noexcept {
    for (auto& entry : entries_)
      entry.store(kSafeBit | kEmptyIndex, std::memory_order_relaxed);
    head_.store(kEntries, std::memory_order_relaxed);  // cycle 1: newer than every entry
    tail_.store(kEntries, std::memory_order_relaxed);
    threshold_.store(-1, std::memory_order_relaxed);
    if (init == Init::kFull) {
      for (uint64_t i = 0; i < kCapacity; ++i) {
        const uint64_t ticket = kEntries + i;
        entries_[slot_of(ticket)].store(cycle_of(ticket) | kSafeBit | i, std::memory_order_relaxed);
      }
      tail_.store(kEntries + kCapacity, std::memory_order_relaxed);
      threshold_.store(kThreshold, std::memory_order_relaxed);
    }
  }

  IndexRing(const IndexRing&) = delete;
  IndexRing& operator=(const IndexRing&) = delete;

  // Appends `index` (< kCapacity). Returns false only when the ring was closed before this call
  // took its ticket; the index was not stored then.
  bool enqueue(uint64_t index) noexcept {
    for (;;) {
      const uint64_t ticket = tail_.fetch_add(1);
      if (ticket & kClosedBit) return false;
      const uint64_t ticket_cycle = cycle_of(ticket);
      std::atomic<uint64_t>& entry = entries_[slot_of(ticket)];
      uint64_t seen = entry.load();
      while (cycle_field(seen) < ticket_cycle && (seen & kIndexMask) == kEmptyIndex &&
             ((seen & kSafeBit) != 0 || head_.load() <= ticket)) {
        if (entry.compare_exchange_weak(seen, ticket_cycle | kSafeBit | index)) {
          if (threshold_.load() != kThreshold) threshold_.store(kThreshold);
          return true;
        }
      }
      // This ticket's entry is unusable (a consumer already passed it): take another ticket.
    }
  }

  // Removes the oldest index, or returns kNone when the ring is empty. With `drain`, the search
  // ignores the threshold and ends only when every issued ticket was visited: use it on a closed
  // ring to take what producers stored before the close.
  uint64_t dequeue(bool drain = false) noexcept {
    if (!drain && threshold_.load() < 0) return kNone;
    // Cheap emptiness test first: when every issued producer ticket already has a consumer, there
    // is nothing for us; skipping the fetch-add keeps idle polling from burning tickets.
    const uint64_t head_seen = head_.load();
    if ((tail_.load() & ~kClosedBit) <= head_seen) return kNone;
    for (;;) {
      const uint64_t ticket = head_.fetch_add(1);
      const uint64_t ticket_cycle = cycle_of(ticket);
      std::atomic<uint64_t>& entry = entries_[slot_of(ticket)];
      uint64_t seen = entry.load();
      for (;;) {
        const uint64_t seen_cycle = cycle_field(seen);
        if (seen_cycle == ticket_cycle) {
          entry.fetch_or(kEmptyIndex);  // consumed: keep cycle and safe bit, drop the index
          return seen & kIndexMask;
        }
        if (seen_cycle > ticket_cycle) break;  // already moved past our ticket
        uint64_t replacement;
        if ((seen & kIndexMask) != kEmptyIndex) {
          // A value of an older cycle whose consumer is late: mark the entry unsafe so that no
          // producer of a newer cycle stores over it until consumers have passed its ticket.
          replacement = seen & ~kSafeBit;
          if (replacement == seen) break;
        } else {
          // Empty: advance it to our cycle, so the producer holding this ticket cannot use it.
          replacement = ticket_cycle | (seen & kSafeBit) | kEmptyIndex;
        }
        if (entry.compare_exchange_weak(seen, replacement)) break;
      }
      // Nothing for this ticket.
      const uint64_t tail = tail_.load() & ~kClosedBit;
      if (tail <= ticket + 1) {
        catch_up(ticket + 1);
        threshold_.fetch_sub(1);
        return kNone;
      }
      if (threshold_.fetch_sub(1) <= 0 && !drain) return kNone;
    }
  }

  // Makes every later enqueue() fail. Idempotent.
  void close() noexcept { tail_.fetch_or(kClosedBit); }
  bool closed() const noexcept { return (tail_.load() & kClosedBit) != 0; }

 private:
  static constexpr uint64_t kEntries = 2 * kCapacity;
  static constexpr unsigned kIndexBits = Order + 1;     // holds 0..kEntries-1
  static constexpr uint64_t kIndexMask = kEntries - 1;  // the index field
  static constexpr uint64_t kEmptyIndex = kIndexMask;   // "no index" (> any real index)
  static constexpr uint64_t kSafeBit = uint64_t{1} << kIndexBits;
  static constexpr unsigned kCycleShift = kIndexBits + 1;
  static constexpr uint64_t kClosedBit = uint64_t{1} << 63;  // in tail_ only
  static constexpr int64_t kThreshold = static_cast<int64_t>(3 * kCapacity - 1);
  static_assert(kEmptyIndex >= kCapacity, "kEmptyIndex must not be a storable index");

  // Tickets stay below 2^62 for centuries at any realistic rate, so cycles never wrap and the
  // closed bit never collides with a ticket.
  static constexpr uint64_t cycle_of(uint64_t ticket) noexcept {
    return (ticket >> kIndexBits) << kCycleShift;
  }
  static constexpr uint64_t cycle_field(uint64_t entry) noexcept {
    return entry & ~((uint64_t{1} << kCycleShift) - 1);
  }
  // Rotates the position left by 3 bits, so that consecutive tickets touch different cache lines.
  static constexpr uint64_t slot_of(uint64_t ticket) noexcept {
    const uint64_t position = ticket & kIndexMask;
    return ((position << 3) | (position >> (kIndexBits - 3))) & kIndexMask;
  }

  // Moves tail_ up to `target` after consumers overtook producers, so producers do not take
  // tickets that consumers have already invalidated. Keeps the closed bit.
  void catch_up(uint64_t target) noexcept {
    uint64_t tail = tail_.load();
    while ((tail & ~kClosedBit) < target) {
      if (tail_.compare_exchange_weak(tail, target | (tail & kClosedBit))) return;
      target = head_.load();  // consumers may have gone further meanwhile (head_ only grows)
    }
  }

  alignas(64) std::atomic<uint64_t> head_;
  alignas(64) std::atomic<int64_t> threshold_;
  alignas(64) std::atomic<uint64_t> tail_;
  alignas(64) std::atomic<uint64_t> entries_[kEntries];
};

}  // namespace synchmess::core
