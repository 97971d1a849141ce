// Barrier: SLEEP_ON_BARRIER / AWAKE_BARRIER with futex sleepers (threads) and parked waiters
// (server requests), cancel, signals and close (SPEC "Barrier").
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "core/barrier.hpp"
#include "test_support.hpp"

using synchmess::core::Barrier;
using namespace synchmess::test;

namespace {

// Threads that each call barrier.sleep() once and keep its result.
class SleepingThreads {
 public:
  SleepingThreads(Barrier& barrier, int count) : barrier_(barrier), results_(count) {
    for (int i = 0; i < count; ++i) {
      threads_.emplace_back([&barrier, this, i] {
        results_[i] = error_of(barrier.sleep());
        returned_.fetch_add(1);
      });
    }
  }
  // A test that failed before waking its sleepers must not hang here: close the barrier.
  ~SleepingThreads() {
    if (returned() != static_cast<int>(threads_.size()))
      barrier_.close(std::errc::operation_canceled);
    join();
  }

  int returned() const { return returned_.load(); }
  std::thread& thread(int i) { return threads_[i]; }
  // Joins every thread; then the results can be read.
  const std::vector<std::errc>& join() {
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    return results_;
  }

 private:
  Barrier& barrier_;
  std::vector<std::errc> results_;
  std::atomic<int> returned_{0};
  std::vector<std::thread> threads_;
};

bool sleepers_become(const Barrier& barrier, uint64_t count) {
  return eventually([&] { return barrier.sleepers() == count; });
}

}  // namespace

TEST_CASE("Barrier::awake with no sleepers returns 0 and is not remembered") {
  Barrier barrier;
  CHECK(barrier.sleepers() == 0);
  CHECK(barrier.awake() == 0);
  CHECK(barrier.awake() == 0);

  SUBCASE("a waiter parked after it stays parked") {
    RecordingWaiter waiter;
    barrier.park(waiter);
    CHECK(waiter.completions() == 0);
    CHECK(barrier.sleepers() == 1);
    CHECK(barrier.awake() == 1);
    REQUIRE(waiter.completions() == 1);
    CHECK(waiter.last().error == std::errc{});
  }
  SUBCASE("a thread that sleeps after it sleeps until the next awake") {
    SleepingThreads sleeper(barrier, 1);
    REQUIRE(sleepers_become(barrier, 1));
    CHECK(barrier.awake() == 1);  // it was still asleep: the earlier awakes did not count
    CHECK(sleeper.join()[0] == std::errc{});
  }
  CHECK(barrier.sleepers() == 0);
}

TEST_CASE(
    "Barrier::awake wakes every current sleeper, threads and parked waiters and counts them") {
  Barrier barrier;
  SleepingThreads threads(barrier, 3);
  RecordingWaiter first;
  RecordingWaiter second;
  barrier.park(first);
  barrier.park(second);
  REQUIRE(sleepers_become(barrier, 5));
  CHECK(threads.returned() == 0);

  CHECK(barrier.awake() == 5);
  for (const std::errc result : threads.join())
    CHECK(result == std::errc{});
  for (RecordingWaiter* waiter : {&first, &second}) {
    REQUIRE(waiter->completions() == 1);
    CHECK(waiter->last().error == std::errc{});
    CHECK_FALSE(waiter->last().timed_out);
  }
  CHECK(barrier.sleepers() == 0);
  CHECK(barrier.awake() == 0);
}

TEST_CASE("Barrier: one awake wakes only the sleepers of that moment") {
  Barrier barrier;
  RecordingWaiter early;
  barrier.park(early);
  CHECK(barrier.awake() == 1);
  RecordingWaiter late;
  barrier.park(late);
  CHECK(late.completions() == 0);
  CHECK(early.completions() == 1);
  CHECK(barrier.awake() == 1);
  CHECK(late.completions() == 1);
  CHECK(early.completions() == 1);
}

TEST_CASE("Barrier: what the awaker wrote before awake() is visible to the woken sleeper") {
  Barrier barrier;
  int shared_value = 0;  // plain memory: ThreadSanitizer checks the happens-before edge
  int seen = -1;
  std::errc result{};
  std::thread sleeper([&] {
    result = error_of(barrier.sleep());
    seen = shared_value;
  });
  REQUIRE(sleepers_become(barrier, 1));
  shared_value = 42;
  CHECK(barrier.awake() == 1);
  sleeper.join();
  CHECK(result == std::errc{});
  CHECK(seen == 42);
}

TEST_CASE("Barrier::cancel: a parked waiter is removed, not counted and never completed") {
  Barrier barrier;
  RecordingWaiter cancelled;
  RecordingWaiter kept;
  barrier.park(cancelled);
  barrier.park(kept);
  CHECK(barrier.sleepers() == 2);

  CHECK(barrier.cancel(cancelled));
  CHECK(barrier.sleepers() == 1);
  CHECK_FALSE(barrier.cancel(cancelled));
  CHECK(barrier.awake() == 1);  // only `kept`
  CHECK(cancelled.completions() == 0);
  CHECK(kept.completions() == 1);

  // A cancelled waiter may park again.
  barrier.park(cancelled);
  CHECK(barrier.awake() == 1);
  CHECK(cancelled.completions() == 1);
}

TEST_CASE("Barrier::cancel after the awake returns false, the completion came once") {
  Barrier barrier;
  RecordingWaiter waiter;
  barrier.park(waiter);
  CHECK(barrier.awake() == 1);
  CHECK_FALSE(barrier.cancel(waiter));
  CHECK(waiter.completions() == 1);
  CHECK(barrier.sleepers() == 0);
}

TEST_CASE("Barrier::cancel of a waiter that never parked returns false") {
  Barrier barrier;
  RecordingWaiter stranger;
  CHECK_FALSE(barrier.cancel(stranger));
  CHECK(barrier.awake() == 0);
}

TEST_CASE("Barrier::sleep: a signal ends the sleep with EINTR and the thread is no sleeper") {
  Barrier barrier;
  InterruptingSignal signal;
  std::atomic<bool> done{false};
  std::errc result{};
  std::thread sleeper([&] {
    result = error_of(barrier.sleep());
    done.store(true);
  });
  if (!InterruptingSignal::interrupt_until(sleeper, done)) {
    FAIL_CHECK("the signal did not end the sleep");
    barrier.awake();
  }
  sleeper.join();
  CHECK(result == std::errc::interrupted);
  CHECK(barrier.sleepers() == 0);
  CHECK(barrier.awake() == 0);  // the interrupted thread is not counted
}

TEST_CASE("Barrier::sleep: an interrupted sleeper does not disturb the others") {
  Barrier barrier;
  InterruptingSignal signal;
  SleepingThreads others(barrier, 2);
  REQUIRE(sleepers_become(barrier, 2));
  std::atomic<bool> done{false};
  std::errc result{};
  std::thread interrupted([&] {
    result = error_of(barrier.sleep());
    done.store(true);
  });
  REQUIRE(sleepers_become(barrier, 3));
  if (!InterruptingSignal::interrupt_until(interrupted, done)) {
    FAIL_CHECK("the signal did not end the sleep");
    barrier.close(std::errc::operation_canceled);
  }
  interrupted.join();
  CHECK(result == std::errc::interrupted);
  CHECK(barrier.sleepers() == 2);
  CHECK(others.returned() == 0);
  CHECK(barrier.awake() == 2);
  for (const std::errc other : others.join())
    CHECK(other == std::errc{});
}

TEST_CASE("Barrier::close: sleepers and parked waiters end with the reason, later sleeps too") {
  Barrier barrier;
  SleepingThreads threads(barrier, 2);
  RecordingWaiter parked;
  barrier.park(parked);
  REQUIRE(sleepers_become(barrier, 3));

  barrier.close(std::errc::identifier_removed);
  for (const std::errc result : threads.join())
    CHECK(result == std::errc::identifier_removed);
  REQUIRE(parked.completions() == 1);
  CHECK(parked.last().error == std::errc::identifier_removed);
  CHECK(barrier.sleepers() == 0);
  CHECK_FALSE(barrier.cancel(parked));

  // Later sleeps fail at once; a later park completes before park() returns.
  CHECK(error_of(barrier.sleep()) == std::errc::identifier_removed);
  RecordingWaiter late;
  barrier.park(late);
  REQUIRE(late.completions() == 1);
  CHECK(late.last().error == std::errc::identifier_removed);
  CHECK(barrier.sleepers() == 0);
  CHECK(barrier.awake() == 0);

  // The first reason wins.
  barrier.close(std::errc::operation_canceled);
  CHECK(error_of(barrier.sleep()) == std::errc::identifier_removed);
}

TEST_CASE("Barrier: a sleeper woken by an awake right before close returns success") {
  Barrier barrier;
  SleepingThreads sleeper(barrier, 1);
  REQUIRE(sleepers_become(barrier, 1));
  CHECK(barrier.awake() == 1);
  barrier.close(std::errc::identifier_removed);
  CHECK(sleeper.join()[0] == std::errc{});
}

TEST_CASE("Group barrier: the group's stats count its sleepers") {
  GroupFixture fixture;
  RecordingWaiter parked;
  fixture.group.barrier().park(parked);
  SleepingThreads thread(fixture.group.barrier(), 1);
  REQUIRE(eventually([&] { return fixture.group.stats().sleepers == 2; }));
  CHECK(fixture.group.barrier().awake() == 2);
  CHECK(thread.join()[0] == std::errc{});
  CHECK(fixture.group.stats().sleepers == 0);
}
