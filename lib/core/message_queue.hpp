// MessageQueue: the unbounded lock-free MPMC FIFO of a group's available messages.
//
// Algorithm: a linked list of ring segments (Nikolaev's LSCQ, DISC 2019). Each segment is a
// bounded ring of kSegmentCapacity message slots managed by two IndexRings: `free_` holds the
// indices of empty slots, `used_` the indices of filled slots in FIFO order. push() takes a free
// index, stores the message in that slot and appends the index to `used_`; pop() takes the oldest
// used index, reads the slot and gives the index back to `free_`. Slots are reused round and round
// while the queue stays within one segment, which is the common case: no allocation per message.
// When a segment is full, the producer closes its `used_` ring (no later push can enter it) and
// links a new segment; consumers drain a closed segment completely before moving to the next, so
// FIFO order holds across segments. Unlinked segments are reclaimed with hazard pointers.
//
// Guarantees: every pushed message is popped exactly once; the order of pops is the order in
// which pushes took effect (linearizable FIFO); a message is stored and returned whole.
// Progress: lock-free (IndexRing is lock-free; the list steps are single CASes that some thread
// always wins). The only allocation is one segment per kSegmentCapacity messages of backlog.
// Memory ordering: a push happens-before the pop that returns its message (release by the
// `used_` entry CAS, acquire by the consumer's load of that entry, see IndexRing). Segment links
// are published with sequentially consistent CAS and read under hazard-pointer protection.
// Lifetime: the destructor frees messages still queued; no thread may be inside push()/pop().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/hazard.hpp"
#include "core/index_ring.hpp"
#include "core/message.hpp"

namespace synchmess::core {

// SegmentOrder: log2 of the slots per segment. Groups use 8 (256 slots, about 10 KiB per
// segment); tests use small segments to exercise the segment changes.
template <unsigned SegmentOrder>
class BasicMessageQueue {
 public:
  static constexpr unsigned kSegmentOrder = SegmentOrder;
  static constexpr uint64_t kSegmentCapacity = uint64_t{1} << kSegmentOrder;

  BasicMessageQueue() noexcept;
  ~BasicMessageQueue();
  BasicMessageQueue(const BasicMessageQueue&) = delete;
  BasicMessageQueue& operator=(const BasicMessageQueue&) = delete;

  // Appends `message`. Returns false only when a new segment could not be allocated; the message
  // is destroyed then.
  [[nodiscard]] bool push(MessagePtr message) noexcept;

  // Removes and returns the oldest message, or nullptr when none is available.
  MessagePtr pop() noexcept;

  // The bytes of ring segment one message slot stands for (a segment's size over its slots).
  static constexpr std::size_t bytes_per_slot() noexcept;

 private:
  struct Segment;

  // Hazard slots: one for the segment being pushed into, one for the one being popped from, so a
  // thread may push and pop in one call chain.
  static constexpr int kPushSlot = 0;
  static constexpr int kPopSlot = 1;
  static_assert(kPopSlot < HazardDomain::kSlotsPerThread, "one hazard slot per role");

  alignas(64) std::atomic<Segment*> head_;  // consumers: oldest segment still holding messages
  alignas(64) std::atomic<Segment*> tail_;  // producers: newest segment
};

using MessageQueue = BasicMessageQueue<8>;

// ---- implementation ----

template <unsigned SegmentOrder>
struct BasicMessageQueue<SegmentOrder>::Segment : Retirable {
  using Ring = IndexRing<kSegmentOrder>;

  Segment() noexcept : used(Ring::Init::kEmpty), free(Ring::Init::kFull) {
    reclaim = [](Retirable* self) noexcept { delete static_cast<Segment*>(self); };
  }

  ~Segment() {
    // Only the queue's destructor frees a segment that may still hold messages.
    for (uint64_t index = used.dequeue(true); index != Ring::kNone; index = used.dequeue(true)) {
      MessagePtr(slots[index].load(std::memory_order_relaxed));
    }
  }

  // False when the segment is full or closed; it is closed on return in both cases.
  bool try_push(Message* message) noexcept {
    if (used.closed()) return false;
    const uint64_t index = free.dequeue();
    if (index == Ring::kNone) {
      used.close();
      return false;
    }
    slots[index].store(message, std::memory_order_relaxed);  // published by used.enqueue()
    if (used.enqueue(index)) return true;
    free.enqueue(index);  // closed meanwhile: give the slot back
    return false;
  }

  Message* try_pop(bool drain) noexcept {
    const uint64_t index = used.dequeue(drain);
    if (index == Ring::kNone) return nullptr;
    Message* message = slots[index].load(std::memory_order_relaxed);  // acquired by dequeue()
    free.enqueue(index);
    return message;
  }

  Ring used;
  Ring free;
  std::atomic<Message*> slots[kSegmentCapacity] = {};
  std::atomic<Segment*> next{nullptr};
};

template <unsigned SegmentOrder>
constexpr std::size_t BasicMessageQueue<SegmentOrder>::bytes_per_slot() noexcept {
  return (sizeof(Segment) + kSegmentCapacity - 1) / kSegmentCapacity;
}

template <unsigned SegmentOrder>
BasicMessageQueue<SegmentOrder>::BasicMessageQueue() noexcept {
  auto* first = new Segment();
  head_.store(first, std::memory_order_relaxed);
  tail_.store(first, std::memory_order_relaxed);
}

template <unsigned SegmentOrder>
BasicMessageQueue<SegmentOrder>::~BasicMessageQueue() {
  Segment* segment = head_.load(std::memory_order_acquire);
  while (segment != nullptr) {
    Segment* next = segment->next.load(std::memory_order_acquire);
    delete segment;
    segment = next;
  }
}

template <unsigned SegmentOrder>
bool BasicMessageQueue<SegmentOrder>::push(MessagePtr message) noexcept {
  HazardGuard guard(kPushSlot, HazardGuard::Lifetime::kSticky);
  Message* raw = message.get();
  for (;;) {
    Segment* segment = guard.protect(tail_);
    if (Segment* next = segment->next.load(); next != nullptr) {
      tail_.compare_exchange_strong(segment, next);  // help a producer that linked it
      continue;
    }
    if (segment->try_push(raw)) {
      message.release();
      return true;
    }
    // Full (and now closed): link a fresh segment that already holds our message.
    auto* fresh = new (std::nothrow) Segment();
    if (fresh == nullptr) return false;
    (void)fresh->try_push(raw);  // an empty open segment always accepts
    Segment* expected = nullptr;
    if (segment->next.compare_exchange_strong(expected, fresh)) {
      tail_.compare_exchange_strong(segment, fresh);
      message.release();
      return true;
    }
    // Another producer linked first: take our message back out and use its segment.
    (void)fresh->try_pop(true);
    delete fresh;
  }
}

template <unsigned SegmentOrder>
MessagePtr BasicMessageQueue<SegmentOrder>::pop() noexcept {
  HazardGuard guard(kPopSlot, HazardGuard::Lifetime::kSticky);
  for (;;) {
    Segment* segment = guard.protect(head_);
    if (Message* message = segment->try_pop(false)) return MessagePtr(message);
    Segment* next = segment->next.load();
    if (next == nullptr) return nullptr;
    // A successor exists, so this segment is closed: take whatever producers stored before the
    // close, then move on.
    if (Message* message = segment->try_pop(true)) return MessagePtr(message);
    if (head_.compare_exchange_strong(segment, next)) {
      // Producers must not reach it either before it is retired.
      Segment* old = segment;
      tail_.compare_exchange_strong(old, next);
      guard.reset();
      HazardDomain::instance().retire(segment);
    }
  }
}

}  // namespace synchmess::core
