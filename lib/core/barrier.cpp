#include "core/barrier.hpp"

#include "core/futex.hpp"

namespace synchmess::core {

Status Barrier::sleep() noexcept {
  uint32_t generation;
  {
    std::lock_guard lock(mu_);
    if (closed_ != std::errc{}) return make_error(closed_);
    generation = generation_.load(std::memory_order_relaxed);
    ++futex_sleepers_;
  }
  for (;;) {
    const FutexWaitResult result = futex_wait(generation_, generation);
    if (generation_.load(std::memory_order_acquire) != generation) break;
    if (result == FutexWaitResult::kInterrupted) {
      std::lock_guard lock(mu_);
      if (generation_.load(std::memory_order_relaxed) == generation) {
        --futex_sleepers_;  // not woken: no longer a sleeper
        return make_error(std::errc::interrupted);
      }
      break;  // an awake came at the same time: it counted us, so we were woken
    }
  }
  std::lock_guard lock(mu_);
  // The first bump after our generation ended the sleep: it was either an awake or the close.
  if (closed_ != std::errc{} && closed_generation_ == generation) return make_error(closed_);
  return {};
}

void Barrier::park(Waiter& waiter) noexcept {
  std::errc closed;
  {
    std::lock_guard lock(mu_);
    closed = closed_;
    if (closed == std::errc{}) {
      parked_.push_back(waiter);
      return;
    }
  }
  waiter.complete(WaitOutcome::failed(closed));
}

bool Barrier::cancel(Waiter& waiter) noexcept {
  std::lock_guard lock(mu_);
  if (!parked_.contains(waiter)) return false;
  parked_.remove(waiter);
  return true;
}

uint64_t Barrier::awake() noexcept {
  Waiter* woken;
  uint64_t count;
  bool futex_sleepers;
  {
    std::lock_guard lock(mu_);
    futex_sleepers = futex_sleepers_ != 0;
    count = futex_sleepers_ + parked_.size();
    futex_sleepers_ = 0;
    woken = parked_.detach_all();
    generation_.fetch_add(1, std::memory_order_release);
  }
  if (futex_sleepers) futex_wake(generation_, kFutexWakeAll);
  WaiterList::complete_chain(woken, std::errc{});
  return count;
}

void Barrier::close(std::errc reason) noexcept {
  Waiter* closed;
  {
    std::lock_guard lock(mu_);
    if (closed_ != std::errc{}) return;
    closed_ = reason;
    closed_generation_ = generation_.load(std::memory_order_relaxed);
    futex_sleepers_ = 0;
    closed = parked_.detach_all();
    generation_.fetch_add(1, std::memory_order_release);
  }
  futex_wake(generation_, kFutexWakeAll);
  WaiterList::complete_chain(closed, reason);
}

uint64_t Barrier::sleepers() const noexcept {
  std::lock_guard lock(mu_);
  return futex_sleepers_ + parked_.size();
}

}  // namespace synchmess::core
