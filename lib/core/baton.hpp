// Baton: a one-shot event for one waiting thread, built on a futex.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "core/futex.hpp"

namespace synchmess::core {

// Contract: post() is called at most once; wait() may be called by one thread, any number of
// times, until it reports kWoken. After wait() returned kWoken the baton may be destroyed even
// while post() is still inside its futex_wake system call: post() touches no member after its
// store (the kernel only sees an address, and a wake-up of a reused address is spurious for
// whoever sleeps there, which every futex user tolerates).
// Memory ordering: post() is a release, a wait() that returns kWoken an acquire: what the poster
// wrote before post() is visible to the waiter after wait().
class Baton {
 public:
  Baton() = default;
  Baton(const Baton&) = delete;
  Baton& operator=(const Baton&) = delete;

  void post() noexcept {
    state_.store(kPosted, std::memory_order_release);
    futex_wake(state_, kFutexWakeAll);
  }

  bool posted() const noexcept { return state_.load(std::memory_order_acquire) == kPosted; }

  // Sleeps until post(), the timeout, or a signal handler (kInterrupted). kWoken means posted.
  FutexWaitResult wait(std::optional<std::chrono::nanoseconds> timeout = std::nullopt) noexcept {
    const auto deadline =
        timeout ? std::optional(std::chrono::steady_clock::now() + *timeout) : std::nullopt;
    while (!posted()) {
      std::optional<std::chrono::nanoseconds> left;
      if (deadline) {
        left = *deadline - std::chrono::steady_clock::now();
        if (left->count() <= 0) return FutexWaitResult::kTimedOut;
      }
      const auto result = futex_wait(state_, kWaiting, left);
      if (result == FutexWaitResult::kInterrupted && !posted()) return result;
    }
    return FutexWaitResult::kWoken;
  }

 private:
  static constexpr uint32_t kWaiting = 0;
  static constexpr uint32_t kPosted = 1;
  std::atomic<uint32_t> state_{kWaiting};
};

}  // namespace synchmess::core
