// TimerQueue: every timer of the core (delayed messages, receive timeouts) on one timerfd.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/result.hpp"

namespace synchmess::core {

class TimerQueue;

// A timer embedded in its owner (no allocation per timer). `fire` runs on the thread that calls
// TimerQueue::run_due(), with no TimerQueue lock held.
class Timer {
 public:
  using Callback = void (*)(void* context) noexcept;
  Timer(Callback fire, void* context) noexcept : fire_(fire), context_(context) {}
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

 private:
  friend class TimerQueue;
  Callback fire_;
  void* context_;
  std::chrono::steady_clock::time_point due_{};  // guarded by TimerQueue::mu_
  uint64_t sequence_ = 0;               // guarded by TimerQueue::mu_: ties fire in arm order
  std::size_t heap_index_ = kNotArmed;  // guarded by TimerQueue::mu_
  static constexpr std::size_t kNotArmed = static_cast<std::size_t>(-1);
};

// Contract: a min-heap of armed timers by (due, arm order), and a timerfd (CLOCK_MONOTONIC)
// kept armed at the earliest due time, so one fd in an event loop (or one TimerThread) serves
// every timer of every group. Timers fire one at a time, in due order, on the thread running
// run_due(). An owner must keep its Timer alive until cancel() returned true, or until its fire
// began and cancel_sync() returned, or the fire returned; a fire may free its own timer.
// Memory ordering: arm() happens-before the fire it causes (both under mu_).
// Clock: tests may pass their own `now` function and call run_due() by hand: nothing then
// depends on real time.
class TimerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using NowFunction = std::function<Clock::time_point()>;

  // Fails with the errno of timerfd_create.
  static Result<std::unique_ptr<TimerQueue>> create(NowFunction now = {}) noexcept;
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // The timerfd: readable when a timer is due. Call run_due() then.
  int fd() const noexcept { return fd_; }
  Clock::time_point now() const { return now_ ? now_() : Clock::now(); }

  // Arms `timer` to fire at `due` (moves it when already armed).
  void arm(Timer& timer, Clock::time_point due) noexcept;
  // Disarms `timer`. True when it was armed (so it will not fire); false when it was not armed
  // or its fire has already begun.
  bool cancel(Timer& timer) noexcept;
  // cancel(), and when the timer's fire is running on another thread, waits for it to return.
  // Must not be called with a lock that the fire takes.
  void cancel_sync(Timer& timer) noexcept;

  // Fires every timer due at now(); returns how many fired. Clears the timerfd's readiness.
  std::size_t run_due() noexcept;
  std::optional<Clock::time_point> next_due() const noexcept;
  std::size_t armed() const noexcept;

 private:
  TimerQueue(int fd, NowFunction now) noexcept : fd_(fd), now_(std::move(now)) {}
  void sift_up(std::size_t index) noexcept;
  void sift_down(std::size_t index) noexcept;
  void remove_at(std::size_t index) noexcept;
  bool earlier(const Timer* a, const Timer* b) const noexcept;
  void place(std::size_t index, Timer* timer) noexcept;
  void update_fd() noexcept;  // requires mu_

  const int fd_;
  const NowFunction now_;
  mutable std::mutex mu_;
  std::condition_variable fire_done_;
  std::vector<Timer*> heap_;         // guarded by mu_
  uint64_t next_sequence_ = 0;       // guarded by mu_
  const Timer* firing_ = nullptr;    // guarded by mu_: the timer whose fire is running
  std::thread::id firing_thread_{};  // guarded by mu_
  std::mutex run_mu_;                // one run_due() at a time
};

// Runs a TimerQueue on a thread of its own: for in-process users (tests, benchmarks, the client
// side of the core). A server with an event loop polls TimerQueue::fd() instead.
class TimerThread {
 public:
  // Fails with the errno of eventfd.
  static Result<std::unique_ptr<TimerThread>> start(TimerQueue& timers) noexcept;
  ~TimerThread();  // stops and joins
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;

 private:
  TimerThread(TimerQueue& timers, int stop_fd);
  void run() noexcept;
  TimerQueue& timers_;
  const int stop_fd_;
  std::thread thread_;
};

}  // namespace synchmess::core
