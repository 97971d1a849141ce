// Waiter: how a caller that must wait (barrier sleep, read with a timeout) is parked and later
// answered, without a thread held per waiter.
#pragma once

#include <cassert>
#include <cstddef>
#include <system_error>
#include <utility>

#include "core/message.hpp"
#include "core/timer_queue.hpp"

namespace synchmess::core {

// How a parked wait ended.
struct WaitOutcome {
  std::errc error{};       // {}: success. identifier_removed: the group was removed (EIDRM).
  bool timed_out = false;  // a receive (or send) whose timeout passed with no message (space)
  MessagePtr message;      // a receive that got a message

  static WaitOutcome woken() noexcept { return {}; }
  static WaitOutcome failed(std::errc error) noexcept { return {error, false, nullptr}; }
  static WaitOutcome timeout() noexcept { return {{}, true, nullptr}; }
  static WaitOutcome delivered(MessagePtr message) noexcept {
    return {{}, false, std::move(message)};
  }
};

class WaiterList;
class Group;

// One parked caller: a reader waiting for a message, a writer waiting for space, or a barrier
// sleeper. A server derives from it (holding its request); in-process waits derive from it too
// (holding a Baton).
// Contract: complete() is called exactly once per park, unless cancel (Group::cancel_receive,
// Barrier::cancel) returned true first. It runs on whichever thread answered (a sender, an
// awaker, the timer thread, a remover) with no core lock held, so it may reply to a kernel and
// free the waiter. The parker keeps the waiter alive until then.
class Waiter {
 public:
  Waiter() noexcept : timeout_(&Waiter::on_timeout, this) {}
  virtual ~Waiter() = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  virtual void complete(WaitOutcome outcome) noexcept = 0;

  // Whether the caller is dying (a fatal signal is pending but has not reached the wait yet).
  // Asked, with the group's readers lock held, right before a message is handed to this parked
  // reader: a dying caller would take the message to its grave, so it is completed with EINTR
  // instead and the message goes to the next reader. Must be quick and must not call into the
  // group. In-process waiters never die while they wait: false.
  virtual bool caller_dying() noexcept { return false; }

 private:
  friend class WaiterList;
  friend class Group;
  friend class Barrier;
  static void on_timeout(void* self) noexcept;

  Waiter* prev_ = nullptr;           // guarded by the lock of the list it is on
  Waiter* next_ = nullptr;           // guarded by the lock of the list it is on
  WaiterList* list_ = nullptr;       // guarded by the lock of the list it is on
  Group* parked_on_ = nullptr;       // set while parked as a reader or writer (for the timeout)
  bool writer_ = false;              // parked as a writer (else as a reader)
  MessagePtr carried_;               // a parked writer's message, until it is stored or dropped
  uint32_t barrier_generation_ = 0;  // a parked sleeper's generation (guarded by Barrier::mu_)
  Timer timeout_;                    // armed while parked with a timeout
};

// An intrusive FIFO of waiters. Not thread-safe: its owner guards it with a lock.
class WaiterList {
 public:
  WaiterList() = default;
  WaiterList(const WaiterList&) = delete;
  WaiterList& operator=(const WaiterList&) = delete;

  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }
  bool contains(const Waiter& waiter) const noexcept { return waiter.list_ == this; }

  void push_back(Waiter& waiter) noexcept {
    assert(waiter.list_ == nullptr);
    waiter.list_ = this;
    waiter.prev_ = tail_;
    waiter.next_ = nullptr;
    (tail_ != nullptr ? tail_->next_ : head_) = &waiter;
    tail_ = &waiter;
    ++size_;
  }

  Waiter* front() const noexcept { return head_; }

  Waiter* pop_front() noexcept {
    Waiter* waiter = head_;
    if (waiter != nullptr) remove(*waiter);
    return waiter;
  }

  void remove(Waiter& waiter) noexcept {
    assert(waiter.list_ == this);
    (waiter.prev_ != nullptr ? waiter.prev_->next_ : head_) = waiter.next_;
    (waiter.next_ != nullptr ? waiter.next_->prev_ : tail_) = waiter.prev_;
    waiter.prev_ = waiter.next_ = nullptr;
    waiter.list_ = nullptr;
    --size_;
  }

  // Empties the list and returns its waiters as a chain in FIFO order, to be completed after the
  // owner's lock is released: they no longer count as on the list (contains() is false), and
  // only the caller follows the chain. Read chain_next() before completing a waiter.
  Waiter* detach_all() noexcept {
    Waiter* chain = head_;
    for (Waiter* waiter = head_; waiter != nullptr; waiter = waiter->next_) {
      waiter->list_ = nullptr;
      waiter->prev_ = nullptr;
    }
    head_ = tail_ = nullptr;
    size_ = 0;
    return chain;
  }
  static Waiter* chain_next(const Waiter& waiter) noexcept { return waiter.next_; }

  // Completes every waiter of a detached chain: woken (error {}) or failed with `error`.
  static void complete_chain(Waiter* chain, std::errc error) noexcept {
    while (chain != nullptr) {
      Waiter* next = chain_next(*chain);
      chain->complete(WaitOutcome::failed(error));
      chain = next;
    }
  }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace synchmess::core
