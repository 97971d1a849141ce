// Thin wrappers over the Linux futex system call. They return results, never throw.
//
// Only private (process-local) futexes: every waiter and waker here shares one address space.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace synchmess::core {

enum class FutexWaitResult {
  kWoken,         // a wake-up arrived (or a spurious return: callers re-check their condition)
  kValueChanged,  // *word != expected when the call started: no sleep happened
  kTimedOut,      // the relative timeout passed
  kInterrupted,   // a signal handler ran (EINTR)
};

// Sleeps while `word` holds `expected`, up to `timeout` when given.
// Memory ordering: none beyond the system call itself; callers publish the state they wait for
// with release stores and re-read it with acquire loads after this returns.
FutexWaitResult futex_wait(const std::atomic<uint32_t>& word, uint32_t expected,
                           std::optional<std::chrono::nanoseconds> timeout = std::nullopt) noexcept;

// Wakes up to `count` threads sleeping on `word`; returns how many were woken.
int futex_wake(const std::atomic<uint32_t>& word, int count) noexcept;

inline constexpr int kFutexWakeAll = 0x7fffffff;

}  // namespace synchmess::core
