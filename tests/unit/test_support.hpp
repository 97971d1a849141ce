// Helpers shared by the core unit tests: a manual clock for timer-driven behaviour, message
// helpers, recording waiters, bounded polling for thread states, and signal delivery.
//
// Rules the tests follow: no assertion depends on speed. Time-dependent behaviour runs on a
// ManualClock with TimerQueue::run_due() called by hand; when a test must wait for another thread
// to reach a state (a sleeper counted, a reader parked) it polls that state with `eventually()`,
// whose bound is only a guard against a hang; a thread that must be blocked in a call (on a
// futex, in poll()) is polled for with asleep(). Doctest assertions run on the test's main
// thread; worker threads record into atomics that the main thread checks after joining them.
#pragma once

#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "core/group.hpp"
#include "core/message.hpp"
#include "core/params.hpp"
#include "core/result.hpp"
#include "core/timer_queue.hpp"
#include "core/waiter.hpp"
// current_tid(), asleep(): where another thread is blocked (shared with tests/integration).
#include "../integration/task_state.hpp"

// Readable values in assertion messages: std::errc as "No space left on device (28)" instead of
// "28" (doctest prints enums through this function template, not through StringMaker), and the
// vectors and optionals of texts that the message tests compare.
namespace doctest {
template <>
inline String toString<std::errc, true>(const std::errc& code) {
  if (code == std::errc{}) return "no error (0)";
  const std::string text =
      std::make_error_code(code).message() + " (" + std::to_string(static_cast<int>(code)) + ")";
  return String(text.c_str());
}
template <>
struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& texts) {
    std::string joined = "{";
    for (std::size_t i = 0; i < texts.size(); ++i) {
      if (i != 0) joined += ", ";
      joined += '"' + (texts[i].size() <= 40 ? texts[i] : texts[i].substr(0, 37) + "...") + '"';
    }
    joined += "}";
    return String(joined.c_str());
  }
};
template <>
struct StringMaker<std::optional<std::string>> {
  static String convert(const std::optional<std::string>& text) {
    return text ? String(('"' + *text + '"').c_str()) : String("nullopt");
  }
};
}  // namespace doctest

namespace synchmess::test {

using namespace std::chrono_literals;
using core::Group;
using core::Message;
using core::MessagePtr;
using core::Params;
using core::Result;
using core::TimerQueue;
using core::Waiter;
using core::WaitOutcome;
using tasks::asleep;
using tasks::current_tid;

inline constexpr uid_t kOwner = 1000;

// ---- results ----

// The error of a result, or std::errc{} when it succeeded (never asserts, unlike error()).
template <class T>
std::errc error_of(const Result<T>& result) {
  return result.ok() ? std::errc{} : result.error();
}

// ---- messages ----

inline std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

inline std::string text_of(const Message& message) {
  return {reinterpret_cast<const char*>(message.data().data()), message.size()};
}

// Sends `text` as one message and requires that the whole of it was accepted.
inline void send_text(Group& group, std::string_view text) {
  auto sent = group.send(bytes_of(text));
  REQUIRE_MESSAGE(sent.ok(), "send failed: ", error_of(sent));
  REQUIRE(sent.value() == text.size());
}

// The next available message as text; nullopt when the group is empty.
inline std::optional<std::string> try_receive_text(Group& group) {
  auto received = group.try_receive();
  REQUIRE_MESSAGE(received.ok(), "try_receive failed: ", error_of(received));
  if (!received.value()) return std::nullopt;
  return text_of(*received.value());
}

// Every available message, oldest first.
inline std::vector<std::string> receive_all(Group& group) {
  std::vector<std::string> texts;
  while (auto text = try_receive_text(group))
    texts.push_back(std::move(*text));
  return texts;
}

// ---- time ----

// A clock that moves only when told to. Thread-safe.
class ManualClock {
 public:
  TimerQueue::Clock::time_point now() const {
    return TimerQueue::Clock::time_point(std::chrono::nanoseconds(ns_.load()));
  }
  void advance(std::chrono::nanoseconds by) { ns_.fetch_add(by.count()); }

 private:
  std::atomic<int64_t> ns_{std::chrono::nanoseconds(1h).count()};
};

inline std::unique_ptr<TimerQueue> make_timer_queue(TimerQueue::NowFunction now = {}) {
  auto created = TimerQueue::create(std::move(now));
  REQUIRE_MESSAGE(created.ok(), "TimerQueue::create failed: ", error_of(created));
  return std::move(created).value();
}

// A TimerQueue on a ManualClock: time passes and timers fire only in advance().
struct ManualTime {
  ManualClock clock;
  std::unique_ptr<TimerQueue> timers = make_timer_queue([this] { return clock.now(); });

  // Moves the clock and fires what became due; returns how many timers fired.
  std::size_t advance(std::chrono::nanoseconds by) {
    clock.advance(by);
    return timers->run_due();
  }
};

// One group on manual time, with default parameters unless a test changes `params`.
struct GroupFixture : ManualTime {
  Params params;
  Group group{"test", kOwner, params, *timers};

  void set_params(uint64_t max_message_size, uint64_t max_storage_size) {
    REQUIRE(
        params.set({.max_message_size = max_message_size, .max_storage_size = max_storage_size}));
  }
};

// Polls `condition` until it holds. The bound only turns a hang into a failure: it is far longer
// than any correct run needs, so no assertion depends on the machine's speed.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds bound = 60s) {
  const auto give_up = std::chrono::steady_clock::now() + bound;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(200us);
  }
  return true;
}

// ---- waiters ----

// A parked caller that records every completion (a test double for a server request).
class RecordingWaiter final : public Waiter {
 public:
  // What caller_dying() answers (a server reader whose thread got a fatal signal).
  std::atomic<bool> dying{false};
  bool caller_dying() noexcept override { return dying.load(); }

  void complete(WaitOutcome outcome) noexcept override {
    std::lock_guard lock(mu_);
    outcomes_.push_back(std::move(outcome));
    completed_.notify_all();
  }

  std::size_t completions() const {
    std::lock_guard lock(mu_);
    return outcomes_.size();
  }
  bool wait_for_completions(std::size_t count, std::chrono::milliseconds bound = 60s) {
    std::unique_lock lock(mu_);
    return completed_.wait_for(lock, bound, [&] { return outcomes_.size() >= count; });
  }
  // The most recent completion. Requires one.
  WaitOutcome& last() {
    std::lock_guard lock(mu_);
    REQUIRE(!outcomes_.empty());
    return outcomes_.back();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable completed_;
  std::vector<WaitOutcome> outcomes_;
};

// ---- signals ----

inline void ignore_signal(int) {}

// Installs a do-nothing SIGUSR1 handler without SA_RESTART for its lifetime, so a signal makes
// interrupted waits return EINTR instead of restarting them.
class InterruptingSignal {
 public:
  InterruptingSignal() {
    struct sigaction action {};
    action.sa_handler = &ignore_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART
    REQUIRE(sigaction(SIGUSR1, &action, &previous_) == 0);
  }
  ~InterruptingSignal() { sigaction(SIGUSR1, &previous_, nullptr); }
  InterruptingSignal(const InterruptingSignal&) = delete;
  InterruptingSignal& operator=(const InterruptingSignal&) = delete;

  // Sends SIGUSR1 to `thread` until `done` holds. A signal that arrives before the thread
  // started waiting only runs the handler, so the signal is repeated until the wait has ended.
  // False when the wait did not end within the (hang-guard) bound: the caller then ends the wait
  // another way before joining the thread.
  static bool interrupt_until(std::thread& thread, const std::atomic<bool>& done,
                              std::chrono::milliseconds bound = 60s) {
    const auto give_up = std::chrono::steady_clock::now() + bound;
    while (!done.load()) {
      if (std::chrono::steady_clock::now() > give_up) return false;
      pthread_kill(thread.native_handle(), SIGUSR1);
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

 private:
  struct sigaction previous_ {};
};

}  // namespace synchmess::test
