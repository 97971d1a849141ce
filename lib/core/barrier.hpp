// Barrier: SLEEP_ON_BARRIER / AWAKE_BARRIER of one group, over the barrier word of the group's
// shared region (region/region.hpp), so that sleepers of every door count in one place.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <system_error>

#include "core/result.hpp"
#include "core/waiter.hpp"
#include "region/region.hpp"

namespace synchmess::core {

// Contract: awake() wakes every caller sleeping at that moment, through any door, and returns how
// many; an awake with no sleeper is not remembered (a later sleeper sleeps). Three ways to sleep,
// counted alike in the region's barrier word: in-process threads block in sleep() on its futex;
// a server parks a Waiter with park(), answered by the next awake with no thread held; a client
// of the fast path sleeps on the same futex in its own process. An awake made through the region
// by a client moves the generation without this object: on_generation_changed() (the server calls
// it when the region's eventfd says so) answers the parked waiters of older generations. close()
// ends every sleep with its error and fails later sleeps. A sleep ended by a signal (sleep()
// returning EINTR, or a successful cancel()) is not counted.
// Lifetime: a parked Waiter stays alive until completed or cancelled (see Waiter). The region
// outlives the barrier.
// Memory ordering: the generation move is a sequentially consistent CAS on the barrier word and
// the sleepers re-read it after they wake, so what an awaker wrote before awake() is visible to
// those it woke; parked waiters are answered under mu_ after the generation moved.
class Barrier {
 public:
  // Over `region`'s barrier word.
  explicit Barrier(region::Region& region) noexcept : region_(&region) {}
  // Over a region of its own (in-process users, tests). Ends the process if no region can be
  // made, as an allocation failure on a control path does.
  Barrier() noexcept;
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  // Blocks the calling thread until the next awake. Returns ok when woken, EINTR when a signal
  // handler interrupted the sleep, or the close() reason.
  Status sleep() noexcept;

  // Parks `waiter` until the next awake (outcome: no error) or close() (its reason). When the
  // barrier is already closed the waiter completes before park() returns.
  void park(Waiter& waiter) noexcept;

  // Removes a parked waiter (its caller was interrupted). True when it was still parked and
  // asleep: it will not be completed. False when an awake or close already took it: complete()
  // comes.
  bool cancel(Waiter& waiter) noexcept;

  // Wakes every current sleeper; returns how many.
  uint64_t awake() noexcept;

  // The generation may have moved through the region: answers the parked waiters it woke.
  void on_generation_changed() noexcept;

  // Ends every sleep with `reason` and makes later sleeps fail with it at once.
  void close(std::errc reason) noexcept;

  uint64_t sleepers() const noexcept { return region_->barrier_sleepers(); }

 private:
  std::optional<region::Region> own_;
  region::Region* region_;
  mutable std::mutex mu_;
  WaiterList parked_;                // guarded by mu_; each waiter remembers its generation
  std::atomic<std::errc> closed_{};  // the close() reason, once closed
  std::atomic<uint32_t> closed_generation_{0};  // the generation close() ended
};

}  // namespace synchmess::core
