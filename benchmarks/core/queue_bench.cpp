// Message throughput of a group in process: core::Group's send / try_receive (the region's ring,
// the storage budget, the counters) against a baseline std::mutex + std::deque<MessagePtr>
// carrying the same messages.
//
// queue_mpmc/<P>P<C>C/<variant>: P producer threads and C consumer threads (separate threads),
// created once per benchmark and re-used for every round. In a round each producer sends
// kRoundMessages messages of kPayloadSize bytes (Message::create, as Group::send does) and each
// consumer takes kRoundMessages (and frees them); consumers poll with a non-blocking pop and call
// sched_yield() when they find the queue empty, in every variant (mutex_deque_cv instead blocks
// on a condition variable). The time of a round is the wall time from the first thread's start to
// the last thread's end; msgs/s counts every message once (sent and received).
//   mutex_deque     baseline: std::mutex + std::deque<MessagePtr>, try-pop
//   mutex_deque_cv  same queue, consumers wait on a std::condition_variable (notify_one per push)
//   group           core::Group::send / try_receive (budget set high enough to never refuse)
// Counters: items_per_second = msgs/s over all rounds (the figure), p50_msg/s (the median
// round: less sensitive to other load on a shared machine), base_msg/s and speedup (vs
// mutex_deque, measured just before in the same pass), cpu_ns/msg (CPU time of the whole process
// per message: the work itself, which other processes cannot inflate much).
//
// queue_1thread/...: one thread, no contention: the cost of the operations themselves.
//   group/pingpong vs deque_alloc/pingpong: send + try_receive against Message::create + push +
//              pop + free on the mutex + deque, i.e. what the group adds when uncontended.
//
// On the 2-vCPU machines of this project, 2P+2C and 4P+4C put 4 and 8 busy threads on 2 CPUs:
// those figures include time slicing (a preempted lock holder stalls the mutex's other users).
#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/group.hpp"
#include "core/message.hpp"
#include "core/params.hpp"
#include "core/timer_queue.hpp"
#include "support.hpp"

namespace synchmess::bench {
namespace {

using core::Message;
using core::MessagePtr;

constexpr std::size_t kPayloadSize = 32;
constexpr int kRoundMessages = 16384;  // per producer and per consumer, per round

using Payload = std::array<std::byte, kPayloadSize>;

std::span<const std::byte> payload() {
  static const Payload bytes{};
  return bytes;
}

// ---- the variants: produce() sends one message, consume() takes one (false: none there) ----

class MutexDeque {
 public:
  bool produce() { return push(Message::create(payload())); }
  bool consume() { return try_pop() != nullptr; }

  bool push(MessagePtr message) {
    std::lock_guard lock(mu_);
    messages_.push_back(std::move(message));
    return true;
  }
  MessagePtr try_pop() {
    std::lock_guard lock(mu_);
    if (messages_.empty()) return nullptr;
    MessagePtr message = std::move(messages_.front());
    messages_.pop_front();
    return message;
  }

 private:
  std::mutex mu_;
  std::deque<MessagePtr> messages_;
};

class MutexDequeCondvar {
 public:
  bool produce() {
    MessagePtr message = Message::create(payload());
    {
      std::lock_guard lock(mu_);
      messages_.push_back(std::move(message));
    }
    nonempty_.notify_one();
    return true;
  }
  bool consume() {
    MessagePtr message;
    {
      std::unique_lock lock(mu_);
      nonempty_.wait(lock, [&] { return !messages_.empty(); });
      message = std::move(messages_.front());
      messages_.pop_front();
    }
    return true;  // freed here, outside the lock, as in the other variants
  }

 private:
  std::mutex mu_;
  std::condition_variable nonempty_;
  std::deque<MessagePtr> messages_;
};

class GroupVariant {
 public:
  GroupVariant() {
    // The budget must never refuse a send here: a backlog of a whole round is possible.
    (void)params_.set({.max_message_size = 0, .max_storage_size = uint64_t{1} << 32});
    auto created = core::TimerQueue::create();
    if (created) {
      timers_ = std::move(created).value();
      group_ = std::make_unique<core::Group>("bench", 0, params_, *timers_);
    }
  }
  ~GroupVariant() { group_.reset(); }  // before the timer queue it uses
  GroupVariant(const GroupVariant&) = delete;
  GroupVariant& operator=(const GroupVariant&) = delete;

  bool ready() const { return group_ != nullptr; }
  bool produce() { return group_->send(payload()).ok(); }
  bool consume() {
    auto received = group_->try_receive();
    return received.ok() && received.value() != nullptr;
  }

 private:
  core::Params params_;
  std::unique_ptr<core::TimerQueue> timers_;
  std::unique_ptr<core::Group> group_;
};

template <class Variant>
bool variant_ready(const Variant&) {
  return true;
}
bool variant_ready(const GroupVariant& variant) {
  return variant.ready();
}

std::string pairs_name(int pairs) {
  return std::to_string(pairs) + "P" + std::to_string(pairs) + "C";
}
std::string pairs_label(int pairs) {
  return std::to_string(pairs) + "P+" + std::to_string(pairs) + "C";
}
std::string mpmc_key(int pairs, const std::string& variant) {
  return "queue_mpmc/" + pairs_name(pairs) + "/" + variant;
}

// ---- P producers + C consumers ----

template <class Variant>
void mpmc(benchmark::State& state, int pairs, const std::string& variant_name) {
  Variant variant;
  if (!variant_ready(variant)) {
    state.SkipWithError("could not create the group's timer queue");
    return;
  }
  Crew crew(2 * pairs, [&](int index) {
    if (index < pairs) {
      for (int sent = 0; sent < kRoundMessages;) {
        if (variant.produce()) {
          ++sent;
        } else {
          std::this_thread::yield();  // never expected: the budget is far above a round
        }
      }
    } else {
      for (int received = 0; received < kRoundMessages;) {
        if (variant.consume()) {
          ++received;
        } else {
          std::this_thread::yield();
        }
      }
    }
  });

  const double cpu_before = process_cpu_seconds();
  std::vector<double> rounds;
  rounds.reserve(static_cast<std::size_t>(state.max_iterations));
  double total_seconds = 0;
  for (auto _ : state) {
    const double round = seconds(crew.run_round());
    state.SetIterationTime(round);
    total_seconds += round;
    rounds.push_back(round);
  }
  const double cpu_seconds = process_cpu_seconds() - cpu_before;
  if (rounds.empty()) return;

  const double round_messages = static_cast<double>(pairs) * kRoundMessages;
  const double messages = static_cast<double>(state.iterations()) * round_messages;
  state.SetItemsProcessed(static_cast<int64_t>(messages));
  std::sort(rounds.begin(), rounds.end());
  const double median_rate = round_messages / rounds[rounds.size() / 2];
  state.counters["p50_msg/s"] = benchmark::Counter(median_rate);
  state.counters["cpu_ns/msg"] = benchmark::Counter(cpu_seconds * 1e9 / messages);
  const std::string key = mpmc_key(pairs, variant_name);
  record_figure(key + ":p50", median_rate);
  record_figure(key + ":cpu", cpu_seconds / messages);
  record_and_compare(state, key, messages / total_seconds, mpmc_key(pairs, "mutex_deque"),
                     Figure::kRate, "base_msg/s");
}

// ---- one thread ----

template <class Variant>
void pingpong_alloc(benchmark::State& state, const std::string& key,
                    const std::string& baseline_key) {
  Variant variant;
  if (!variant_ready(variant)) {
    state.SkipWithError("could not create the group's timer queue");
    return;
  }
  const auto start = Clock::now();
  for (auto _ : state) {
    (void)variant.produce();
    benchmark::DoNotOptimize(variant.consume());
  }
  const double elapsed = seconds(Clock::now() - start);
  state.SetItemsProcessed(state.iterations());
  record_and_compare(state, key, static_cast<double>(state.iterations()) / elapsed, baseline_key,
                     Figure::kRate, "base_ops/s");
}

}  // namespace

void register_queue_benchmarks() {
  const std::string mpmc_section =
      "queue_mpmc: messages/s through the queue, P producers + C consumers (separate threads)";
  add_note(mpmc_section,
           "baseline: std::mutex + std::deque<MessagePtr>, consumers poll with try-pop and "
           "sched_yield() when empty, exactly like the group's consumers");
  add_note(mpmc_section,
           "every variant sends Message::create'd 32-byte messages, freed by the consumer; rounds "
           "of 16384 messages per producer");
  add_note(mpmc_section,
           "2 vCPUs: at 2P+2C and 4P+4C the busy threads outnumber the CPUs (time slicing)");

  for (const int pairs : {1, 2, 4}) {
    const std::string prefix = "queue_mpmc/" + pairs_name(pairs) + "/";
    benchmark::RegisterBenchmark(
        (prefix + "mutex_deque").c_str(),
        [pairs](benchmark::State& state) { mpmc<MutexDeque>(state, pairs, "mutex_deque"); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((prefix + "mutex_deque_cv").c_str(),
                                 [pairs](benchmark::State& state) {
                                   mpmc<MutexDequeCondvar>(state, pairs, "mutex_deque_cv");
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(
        (prefix + "group").c_str(),
        [pairs](benchmark::State& state) { mpmc<GroupVariant>(state, pairs, "group"); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }

  for (const int pairs : {1, 2, 4}) {
    add_comparison(mpmc_section, "group send/try_receive vs mutex+deque at " + pairs_label(pairs),
                   mpmc_key(pairs, "group"), mpmc_key(pairs, "mutex_deque"), Figure::kRate,
                   "msg/s");
  }
  for (const int pairs : {1, 2, 4}) {
    add_comparison(
        mpmc_section, "group send/try_receive vs mutex+deque+condvar at " + pairs_label(pairs),
        mpmc_key(pairs, "group"), mpmc_key(pairs, "mutex_deque_cv"), Figure::kRate, "msg/s");
  }

  const std::string one_section = "queue_1thread: one thread, no contention (operation cost)";
  add_note(one_section,
           "group/pingpong: send + try_receive, against deque_alloc: Message::create + push + pop "
           "+ free on the mutex + deque (the same work without the group's ring, budget and "
           "counters)");

  benchmark::RegisterBenchmark("queue_1thread/deque_alloc/pingpong", [](benchmark::State& state) {
    pingpong_alloc<MutexDeque>(state, "queue_1thread/deque_alloc/pingpong", "");
  });
  benchmark::RegisterBenchmark("queue_1thread/group/pingpong", [](benchmark::State& state) {
    pingpong_alloc<GroupVariant>(state, "queue_1thread/group/pingpong",
                                 "queue_1thread/deque_alloc/pingpong");
  });

  add_comparison(one_section, "group vs deque_alloc, send+receive pingpong",
                 "queue_1thread/group/pingpong", "queue_1thread/deque_alloc/pingpong",
                 Figure::kRate, "op/s");
}

}  // namespace synchmess::bench
