// Barrier wake-all latency: N in-process sleepers blocked in core::Barrier::sleep() (one futex
// word, one FUTEX_WAKE for all), woken by one core::Barrier::awake(), against a textbook
// pthread barrier (pthread mutex + condition variable + generation, pthread_cond_broadcast).
//
// barrier_wake/<N>/<variant>: N sleeper threads are created once per benchmark and re-used: each
// iteration releases them through a start gate of our own (a mutex and condition variable), waits
// until the barrier counts N sleepers, lets them settle into the kernel (100 us + 2 us per
// sleeper, so that the wake-up is a real one, not a sleeper that never slept), then takes a
// steady_clock timestamp and calls awake(). Every sleeper takes a timestamp as soon as its sleep
// returns; the iteration's time is the latest of those minus the timestamp before awake(): "from
// awake() to the last sleeper running". Setup and settling are outside the figure (manual time).
//   pthread_cond  baseline: lock; ++count; while (generation unchanged) pthread_cond_wait; the
//                 awaker bumps the generation under the lock, then pthread_cond_broadcast after
//                 unlocking (the faster of the two usual orders)
//   futex         core::Barrier::sleep() / awake()
//   bare_futex    diagnostic: the same futex word and single FUTEX_WAKE with no mutex around the
//                 sleep (Barrier::sleep() registers under its mutex and re-locks it after the
//                 wake-up): how much of the figure is the wake-up itself
// Time = mean latency per wake-all; counters: p50_us and max_us (median and worst iteration),
// base_us (the baseline's mean, same pass), speedup (baseline mean / this mean; > 1: faster) and
// speedup_p50 (the same for the medians, which outside noise moves much less).
//
// Iteration counts are fixed per N (1000, 600, 150, 40 per pass; not from --benchmark_min_time):
// the setup of an iteration costs far more than the figure it measures. 10 wake-alls before the
// measured ones warm the fresh threads up.
//
// With 2 vCPUs, waking N threads is mostly the scheduler running them one after another; both
// variants also take a mutex after the wake (pthread_cond_wait re-locks its mutex; Barrier::sleep
// locks the barrier's mutex to check for close()), so both serialize there.
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/barrier.hpp"
#include "core/futex.hpp"
#include "support.hpp"

namespace synchmess::bench {
namespace {

// The baseline: what one would write with pthreads.
class CondBarrier {
 public:
  CondBarrier() = default;
  ~CondBarrier() {
    pthread_cond_destroy(&cv_);
    pthread_mutex_destroy(&mu_);
  }
  CondBarrier(const CondBarrier&) = delete;
  CondBarrier& operator=(const CondBarrier&) = delete;

  bool sleep() {
    pthread_mutex_lock(&mu_);
    const uint64_t generation = generation_;
    ++sleepers_;
    while (generation_ == generation)
      pthread_cond_wait(&cv_, &mu_);
    pthread_mutex_unlock(&mu_);
    return true;
  }
  uint64_t awake() {
    pthread_mutex_lock(&mu_);
    const uint64_t woken = sleepers_;
    sleepers_ = 0;
    ++generation_;
    pthread_mutex_unlock(&mu_);
    pthread_cond_broadcast(&cv_);
    return woken;
  }
  uint64_t sleepers() {
    pthread_mutex_lock(&mu_);
    const uint64_t count = sleepers_;
    pthread_mutex_unlock(&mu_);
    return count;
  }

 private:
  pthread_mutex_t mu_ = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv_ = PTHREAD_COND_INITIALIZER;
  uint64_t generation_ = 0;  // guarded by mu_
  uint64_t sleepers_ = 0;    // guarded by mu_
};

// The subject, behind the same three calls.
class FutexBarrier {
 public:
  bool sleep() { return barrier_.sleep().ok(); }
  uint64_t awake() { return barrier_.awake(); }
  uint64_t sleepers() { return barrier_.sleepers(); }

 private:
  core::Barrier barrier_;
};

// Diagnostic: the same futex word and one FUTEX_WAKE, without any lock around the sleep. Only
// correct when awake() never races with a sleeper arriving (true here: awake() waits until every
// sleeper is counted); it shows what the wake-up costs without the re-lock after it.
class BareFutexBarrier {
 public:
  bool sleep() {
    const uint32_t generation = generation_.load();
    sleepers_.fetch_add(1);
    while (generation_.load() == generation)
      (void)core::futex_wait(generation_, generation);
    return true;
  }
  uint64_t awake() {
    const uint64_t woken = sleepers_.exchange(0);
    generation_.fetch_add(1);
    (void)core::futex_wake(generation_, core::kFutexWakeAll);
    return woken;
  }
  uint64_t sleepers() { return sleepers_.load(); }

 private:
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint64_t> sleepers_{0};
};

std::string barrier_key(int sleepers, const char* variant) {
  return "barrier_wake/" + std::to_string(sleepers) + "/" + variant;
}

constexpr int kWarmUp = 10;

int iterations_for(int sleepers) {
  switch (sleepers) {
    case 1:
      return 1000;
    case 10:
      return 600;
    case 100:
      return 150;
    default:
      return 40;
  }
}

template <class Barrier>
void wake_all(benchmark::State& state, int count, const char* variant) {
  const auto size = static_cast<std::size_t>(count);
  Barrier barrier;
  std::vector<Clock::time_point> woke_at(size);
  std::atomic<int> woken{0};
  std::atomic<bool> failed{false};

  // The start gate and the "all woke" signal of our own.
  std::mutex mu;
  std::condition_variable gate;
  std::condition_variable all_woke;
  uint64_t round = 0;  // guarded by mu
  bool stop = false;   // guarded by mu

  std::vector<std::thread> sleepers;
  sleepers.reserve(size);
  for (std::size_t index = 0; index < size; ++index) {
    sleepers.emplace_back([&, index] {
      uint64_t seen = 0;
      for (;;) {
        {
          std::unique_lock lock(mu);
          gate.wait(lock, [&] { return stop || round != seen; });
          if (stop) return;
          seen = round;
        }
        if (!barrier.sleep()) failed.store(true);
        woke_at[index] = Clock::now();
        if (woken.fetch_add(1) + 1 == count) {
          std::lock_guard lock(mu);
          all_woke.notify_one();
        }
      }
    });
  }

  const auto settle = std::chrono::microseconds(100 + 2 * count);
  std::vector<double> latencies;
  latencies.reserve(static_cast<std::size_t>(state.max_iterations));
  // One wake-all: releases the sleepers, waits until they all sleep, wakes them; returns the
  // latency from awake() to the last of them running.
  const auto wake_once = [&]() -> double {
    woken.store(0);
    {
      std::lock_guard lock(mu);
      ++round;
    }
    gate.notify_all();
    while (barrier.sleepers() < size)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    std::this_thread::sleep_for(settle);

    const auto start = Clock::now();
    const uint64_t awoken = barrier.awake();
    {
      std::unique_lock lock(mu);
      all_woke.wait(lock, [&] { return woken.load() == count; });
    }
    if (awoken != size) failed.store(true);
    return seconds(*std::max_element(woke_at.begin(), woke_at.end()) - start);
  };

  // Warm-up, not measured: the first wake-ups of fresh threads (stacks, scheduler placement) are
  // slower, and they would land on whichever variant runs first.
  for (int i = 0; i < kWarmUp; ++i)
    (void)wake_once();

  for (auto _ : state) {
    const double latency = wake_once();
    state.SetIterationTime(latency);
    latencies.push_back(latency);
  }

  {
    std::lock_guard lock(mu);
    stop = true;
  }
  gate.notify_all();
  for (auto& thread : sleepers)
    thread.join();

  if (failed.load()) {
    state.SkipWithError("a sleep failed or an awake did not count every sleeper");
    return;
  }
  if (latencies.empty()) return;
  double sum = 0;
  for (const double latency : latencies)
    sum += latency;
  const double mean = sum / static_cast<double>(latencies.size());
  std::sort(latencies.begin(), latencies.end());
  const double median = latencies[latencies.size() / 2];
  state.counters["p50_us"] = benchmark::Counter(median * 1e6);
  state.counters["max_us"] = benchmark::Counter(latencies.back() * 1e6);
  state.counters["sleepers"] = benchmark::Counter(count);

  const std::string key = barrier_key(count, variant);
  const std::string baseline = barrier_key(count, "pthread_cond");
  record_figure(key + ":median", median);
  if (const auto baseline_median = recorded_figure(baseline + ":median");
      baseline_median && key != baseline) {
    state.counters["speedup_p50"] = benchmark::Counter(*baseline_median / median);
  }
  record_and_compare(state, key, mean, baseline, Figure::kTime, "base_us");
}

}  // namespace

void register_barrier_benchmarks() {
  const std::string section =
      "barrier_wake: from one awake() to the last of N sleeper threads running";
  add_note(section,
           "baseline: pthread mutex + condition variable + generation counter, "
           "pthread_cond_broadcast after unlock; futex: core::Barrier sleep()/awake()");
  add_note(section,
           "sleepers are threads created once per benchmark; 2 vCPUs, so N sleepers run at most "
           "2 at a time after the wake");
  add_note(section,
           "bare futex: one futex word + FUTEX_WAKE, no mutex (diagnostic); trust the median "
           "lines: a mean of microsecond wake-ups moves with every outside hiccup of a ms");

  for (const int count : {1, 10, 100, 1000}) {
    const std::string name = "barrier_wake/" + std::to_string(count);
    benchmark::RegisterBenchmark(
        (name + "/pthread_cond").c_str(),
        [count](benchmark::State& state) { wake_all<CondBarrier>(state, count, "pthread_cond"); })
        ->UseManualTime()
        ->Iterations(iterations_for(count))
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(
        (name + "/futex").c_str(),
        [count](benchmark::State& state) { wake_all<FutexBarrier>(state, count, "futex"); })
        ->UseManualTime()
        ->Iterations(iterations_for(count))
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((name + "/bare_futex").c_str(),
                                 [count](benchmark::State& state) {
                                   wake_all<BareFutexBarrier>(state, count, "bare_futex");
                                 })
        ->UseManualTime()
        ->Iterations(iterations_for(count))
        ->Unit(benchmark::kMicrosecond);
  }
  const auto sleepers_text = [](int count) {
    return std::to_string(count) + (count == 1 ? " sleeper" : " sleepers");
  };
  for (const int count : {1, 10, 100, 1000}) {
    const std::string label = "futex Barrier vs pthread_cond_broadcast, " + sleepers_text(count);
    add_comparison(section, label + ", median", barrier_key(count, "futex") + ":median",
                   barrier_key(count, "pthread_cond") + ":median", Figure::kTime, "");
    add_comparison(section, label + ", mean", barrier_key(count, "futex"),
                   barrier_key(count, "pthread_cond"), Figure::kTime, "");
  }
  for (const int count : {1, 10, 100, 1000}) {
    add_comparison(section,
                   "futex Barrier vs bare futex (its mutex), " + sleepers_text(count) + ", median",
                   barrier_key(count, "futex") + ":median",
                   barrier_key(count, "bare_futex") + ":median", Figure::kTime, "");
  }
}

}  // namespace synchmess::bench
