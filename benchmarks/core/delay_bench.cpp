// Delayed messages on one core::Group: scheduling 100k delayed sends, expiring them all, revoking
// them all; each against a baseline that shows what the cost means.
//
// The group runs on a TimerQueue with a manual clock: time moves only when the benchmark says so,
// so "expire" measures the core's work (TimerQueue::run_due() firing the group's delay timer, which
// moves every due message from the delayed map into the message ring), not timerfd latency.
// Each operation's time is measured around that operation only (manual time); the setup (sending
// the messages to expire or revoke) and the cleanup stay outside. items/s counts messages.
//   delay/schedule100k/group    100k Group::send with a send delay set (budget CAS, message
//                               allocation, delay lock, map insert by (due, write sequence))
//   delay/expire100k/group      run_due() after the clock passed the due time of 100k messages
//   delay/revoke100k/group      Group::revoke_delayed() of 100k delayed messages
// Baselines: a std::multimap<due time, MessagePtr> behind a std::mutex, the textbook delayed
// store, doing the same step with the same 32-byte messages:
//   delay/schedule100k/multimap Message::create + lock + multimap insert, 100k times
//   delay/expire100k/multimap   lock, move the due messages one by one (oldest first, erasing
//                               each) from the multimap to a std::deque
//   delay/revoke100k/multimap   lock, multimap clear (frees the messages)
// and delay/send100k/group_immediate: 100k Group::send without a delay (straight into the ring,
// nobody receiving), to compare a delayed send with an immediate one.
// Counters: base_items/s and speedup (> 1: faster than the baseline; < 1 is the price of what
// the group does beyond the bare container).
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>

#include "core/group.hpp"
#include "core/message.hpp"
#include "core/params.hpp"
#include "core/timer_queue.hpp"
#include "support.hpp"

namespace synchmess::bench {
namespace {

using core::Message;
using core::MessagePtr;
using TimePoint = core::TimerQueue::Clock::time_point;

constexpr int kMessages = 100'000;
constexpr std::size_t kPayloadSize = 32;
constexpr uint32_t kDelayMs = 1000;

std::span<const std::byte> payload() {
  static const std::byte bytes[kPayloadSize] = {};
  return bytes;
}

// A clock that moves only when told to.
class ManualClock {
 public:
  TimePoint now() const { return TimePoint(std::chrono::nanoseconds(ns_.load())); }
  void advance(std::chrono::nanoseconds by) { ns_.fetch_add(by.count()); }

 private:
  std::atomic<int64_t> ns_{std::chrono::nanoseconds(std::chrono::hours(1)).count()};
};

// One group with a send delay, on manual time, with a budget that never refuses 100k messages.
class DelayedGroup {
 public:
  DelayedGroup() {
    (void)params_.set({.max_message_size = 0, .max_storage_size = uint64_t{1} << 32});
    auto created = core::TimerQueue::create([this] { return clock_.now(); });
    if (!created) return;
    timers_ = std::move(created).value();
    group_ = std::make_unique<core::Group>("bench", 0, params_, *timers_);
    group_->set_send_delay(kDelayMs);
  }
  ~DelayedGroup() { group_.reset(); }  // before the timer queue it uses
  DelayedGroup(const DelayedGroup&) = delete;
  DelayedGroup& operator=(const DelayedGroup&) = delete;

  bool ready() const { return group_ != nullptr; }
  core::Group& group() { return *group_; }
  core::TimerQueue& timers() { return *timers_; }
  ManualClock& clock() { return clock_; }

  // Sends kMessages; false when one was refused.
  bool send_all() {
    bool ok = true;
    for (int i = 0; i < kMessages; ++i)
      ok = group_->send(payload()).ok() && ok;
    return ok;
  }
  void drain() {
    while (true) {
      auto received = group_->try_receive();
      if (!received.ok() || received.value() == nullptr) break;
    }
  }

 private:
  ManualClock clock_;
  core::Params params_;
  std::unique_ptr<core::TimerQueue> timers_;
  std::unique_ptr<core::Group> group_;
};

// The baseline delayed store.
class MultimapStore {
 public:
  explicit MultimapStore(ManualClock& clock) : clock_(clock) {}

  void schedule(MessagePtr message) {
    std::lock_guard lock(mu_);
    delayed_.emplace(clock_.now() + std::chrono::milliseconds(kDelayMs), std::move(message));
  }
  // Schedules kMessages new messages, as DelayedGroup::send_all() sends them.
  void schedule_all() {
    for (int i = 0; i < kMessages; ++i)
      schedule(Message::create(payload()));
  }
  // Moves every due message to `available`, oldest first; returns how many.
  std::size_t expire(std::deque<MessagePtr>& available) {
    std::lock_guard lock(mu_);
    const TimePoint now = clock_.now();
    std::size_t moved = 0;
    while (!delayed_.empty() && delayed_.begin()->first <= now) {
      available.push_back(std::move(delayed_.begin()->second));
      delayed_.erase(delayed_.begin());
      ++moved;
    }
    return moved;
  }
  std::size_t revoke() {
    std::lock_guard lock(mu_);
    const std::size_t count = delayed_.size();
    delayed_.clear();
    return count;
  }

 private:
  ManualClock& clock_;
  std::mutex mu_;
  std::multimap<TimePoint, MessagePtr> delayed_;
};

void finish(benchmark::State& state, const std::string& key, const std::string& baseline_key,
            double total_seconds) {
  const double items = static_cast<double>(state.iterations()) * kMessages;
  state.SetItemsProcessed(static_cast<int64_t>(items));
  if (total_seconds > 0)
    record_and_compare(state, key, items / total_seconds, baseline_key, Figure::kRate,
                       "base_items/s");
}

// Runs `measured` as the timed part of one iteration: its wall time is the iteration's (manual
// time) and is added to `total`. Returns what `measured` returns.
template <class Measured>
auto timed(benchmark::State& state, double& total, Measured&& measured) {
  const auto start = Clock::now();
  const auto stop = [&] {
    const double elapsed = seconds(Clock::now() - start);
    state.SetIterationTime(elapsed);
    total += elapsed;
  };
  if constexpr (std::is_void_v<decltype(measured())>) {
    measured();
    stop();
  } else {
    auto result = measured();
    stop();
    return result;
  }
}

// ---- the group ----

void group_schedule(benchmark::State& state) {
  DelayedGroup fixture;
  if (!fixture.ready()) return state.SkipWithError("could not create the timer queue");
  double total = 0;
  bool ok = true;
  for (auto _ : state) {
    ok = timed(state, total, [&] { return fixture.send_all(); }) && ok;
    ok = fixture.group().revoke_delayed() == kMessages && ok;  // cleanup, not timed
  }
  if (!ok) return state.SkipWithError("a send was refused or a message went missing");
  finish(state, "delay/schedule100k/group", "delay/schedule100k/multimap", total);
}

void group_send_immediate(benchmark::State& state) {
  DelayedGroup fixture;
  if (!fixture.ready()) return state.SkipWithError("could not create the timer queue");
  fixture.group().set_send_delay(0);
  double total = 0;
  bool ok = true;
  for (auto _ : state) {
    ok = timed(state, total, [&] { return fixture.send_all(); }) && ok;
    fixture.drain();  // cleanup, not timed
  }
  if (!ok) return state.SkipWithError("a send was refused");
  finish(state, "delay/send100k/group_immediate", "delay/schedule100k/group", total);
}

void group_expire(benchmark::State& state) {
  DelayedGroup fixture;
  if (!fixture.ready()) return state.SkipWithError("could not create the timer queue");
  double total = 0;
  bool ok = true;
  for (auto _ : state) {
    ok = fixture.send_all() && ok;
    fixture.clock().advance(std::chrono::milliseconds(kDelayMs + 1));
    // The group's one delay timer.
    ok = timed(state, total, [&] { return fixture.timers().run_due(); }) == 1 && ok;
    ok = fixture.group().stats().queued_messages == kMessages && ok;
    fixture.drain();
  }
  if (!ok) return state.SkipWithError("the expiry did not release every message");
  finish(state, "delay/expire100k/group", "delay/expire100k/multimap", total);
}

void group_revoke(benchmark::State& state) {
  DelayedGroup fixture;
  if (!fixture.ready()) return state.SkipWithError("could not create the timer queue");
  double total = 0;
  bool ok = true;
  for (auto _ : state) {
    ok = fixture.send_all() && ok;
    const std::size_t revoked =
        timed(state, total, [&] { return fixture.group().revoke_delayed(); });
    ok = revoked == kMessages && ok;
  }
  if (!ok) return state.SkipWithError("revoke did not discard every message");
  finish(state, "delay/revoke100k/group", "delay/revoke100k/multimap", total);
}

// ---- the baseline ----

void multimap_schedule(benchmark::State& state) {
  ManualClock clock;
  MultimapStore store(clock);
  double total = 0;
  for (auto _ : state) {
    timed(state, total, [&] { store.schedule_all(); });
    (void)store.revoke();
  }
  finish(state, "delay/schedule100k/multimap", "", total);
}

void multimap_expire(benchmark::State& state) {
  ManualClock clock;
  MultimapStore store(clock);
  double total = 0;
  bool ok = true;
  for (auto _ : state) {
    store.schedule_all();
    clock.advance(std::chrono::milliseconds(kDelayMs + 1));
    std::deque<MessagePtr> available;
    ok = timed(state, total, [&] { return store.expire(available); }) == kMessages && ok;
  }
  if (!ok) return state.SkipWithError("the expiry did not release every message");
  finish(state, "delay/expire100k/multimap", "", total);
}

void multimap_revoke(benchmark::State& state) {
  ManualClock clock;
  MultimapStore store(clock);
  double total = 0;
  bool ok = true;
  for (auto _ : state) {
    store.schedule_all();
    ok = timed(state, total, [&] { return store.revoke(); }) == kMessages && ok;
  }
  if (!ok) return state.SkipWithError("revoke did not discard every message");
  finish(state, "delay/revoke100k/multimap", "", total);
}

}  // namespace

void register_delay_benchmarks() {
  const std::string section = "delay: 100k delayed messages on one group, manual clock";
  add_note(section,
           "baseline: std::multimap<due, MessagePtr> behind a std::mutex, the bare delayed "
           "store: insert (with Message::create), move the due ones to a std::deque, clear");
  add_note(section,
           "speedup < 1 is what the group costs beyond that container: budget CAS, write "
           "sequence, timer re-arm check, counters, and on expiry the region's ring (and the "
           "overflow behind it once the ring is full)");

  const auto add = [](const char* name, void (*function)(benchmark::State&)) {
    benchmark::RegisterBenchmark(name, function)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  add("delay/schedule100k/multimap", multimap_schedule);
  add("delay/schedule100k/group", group_schedule);
  add("delay/send100k/group_immediate", group_send_immediate);
  add("delay/expire100k/multimap", multimap_expire);
  add("delay/expire100k/group", group_expire);
  add("delay/revoke100k/multimap", multimap_revoke);
  add("delay/revoke100k/group", group_revoke);

  add_comparison(section, "schedule 100k: Group::send delayed vs multimap insert",
                 "delay/schedule100k/group", "delay/schedule100k/multimap", Figure::kRate, "msg/s");
  add_comparison(section, "expire 100k: run_due vs multimap -> deque move",
                 "delay/expire100k/group", "delay/expire100k/multimap", Figure::kRate, "msg/s");
  add_comparison(section, "revoke 100k: revoke_delayed vs multimap clear", "delay/revoke100k/group",
                 "delay/revoke100k/multimap", Figure::kRate, "msg/s");
  add_comparison(section, "immediate vs delayed Group::send (100k each)",
                 "delay/send100k/group_immediate", "delay/schedule100k/group", Figure::kRate,
                 "msg/s");
}

}  // namespace synchmess::bench
