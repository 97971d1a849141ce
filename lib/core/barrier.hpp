// Barrier: SLEEP_ON_BARRIER / AWAKE_BARRIER of one group.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <system_error>

#include "core/result.hpp"
#include "core/waiter.hpp"

namespace synchmess::core {

// Contract: awake() wakes every caller sleeping at that moment and returns how many; an awake
// with no sleeper is not remembered (a later sleeper sleeps). Two ways to sleep, counted alike:
// in-process threads block in sleep() on a futex (one futex word per barrier, so an awake is one
// FUTEX_WAKE however many sleep); a server parks a Waiter with park(), answered by the next
// awake(), with no thread held. close() ends every sleep with its error and fails later sleeps.
// A sleep ended by a signal (sleep() returning EINTR, or a successful cancel()) is not counted.
// Lifetime: a parked Waiter stays alive until completed or cancelled (see Waiter).
// Memory ordering: what an awaker wrote before awake() is visible to the sleepers it wakes
// (the generation bump is a release, the sleeper's re-read an acquire, both under mu_ as well).
class Barrier {
 public:
  Barrier() = default;
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  // Blocks the calling thread until the next awake(). Returns ok when woken, EINTR when a signal
  // handler interrupted the sleep, or the close() reason.
  Status sleep() noexcept;

  // Parks `waiter` until the next awake() (outcome: no error) or close() (its reason). When the
  // barrier is already closed the waiter completes before park() returns.
  void park(Waiter& waiter) noexcept;

  // Removes a parked waiter (its caller was interrupted). True when it was still parked: it will
  // not be completed. False when an awake or close already took it: complete() comes.
  bool cancel(Waiter& waiter) noexcept;

  // Wakes every current sleeper; returns how many.
  uint64_t awake() noexcept;

  // Ends every sleep with `reason` and makes later sleeps fail with it at once.
  void close(std::errc reason) noexcept;

  uint64_t sleepers() const noexcept;

 private:
  mutable std::mutex mu_;
  std::atomic<uint32_t> generation_{0};  // futex word; bumped (under mu_) by awake and close
  uint64_t futex_sleepers_ = 0;          // guarded by mu_: threads in sleep() this generation
  WaiterList parked_;                    // guarded by mu_
  std::errc closed_ = {};                // guarded by mu_: the close() reason, once closed
  uint32_t closed_generation_ = 0;       // guarded by mu_: generation_ before close()'s bump
};

}  // namespace synchmess::core
