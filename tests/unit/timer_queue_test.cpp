// TimerQueue (on a manual clock and on the real one through its timerfd) and TimerThread.
#include <doctest/doctest.h>
#include <poll.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using synchmess::core::Timer;
using synchmess::core::TimerThread;
using namespace synchmess::test;

namespace {

// A timer that appends its name to a shared log when it fires.
class LoggingTimer {
 public:
  LoggingTimer(std::string name, std::vector<std::string>& log)
      : name_(std::move(name)), log_(log) {}
  Timer& timer() { return timer_; }

 private:
  static void fire(void* self) noexcept {
    auto* me = static_cast<LoggingTimer*>(self);
    me->log_.push_back(me->name_);
  }
  std::string name_;
  std::vector<std::string>& log_;
  Timer timer_{&LoggingTimer::fire, this};
};

using Log = std::vector<std::string>;

bool fd_readable(int fd, int timeout_ms) {
  pollfd descriptor{fd, POLLIN, 0};
  return poll(&descriptor, 1, timeout_ms) == 1 && (descriptor.revents & POLLIN) != 0;
}

}  // namespace

TEST_CASE("TimerQueue: timers fire in due order, only once due, ties in arm order") {
  ManualTime time;
  Log log;
  LoggingTimer a("a", log), b("b", log), c("c", log), d("d", log), e("e", log);
  const auto start = time.clock.now();
  time.timers->arm(c.timer(), start + 30ms);
  time.timers->arm(a.timer(), start + 10ms);
  time.timers->arm(d.timer(), start + 30ms);  // same due as c, armed after it
  time.timers->arm(b.timer(), start + 20ms);
  time.timers->arm(e.timer(), start + 40ms);
  CHECK(time.timers->armed() == 5);
  CHECK(time.timers->next_due() == start + 10ms);

  CHECK(time.timers->run_due() == 0);  // nothing due yet
  CHECK(time.advance(9ms) == 0);
  CHECK(log.empty());
  CHECK(time.advance(1ms) == 1);
  CHECK(log == Log{"a"});
  CHECK(time.advance(25ms) == 3);
  CHECK(log == Log{"a", "b", "c", "d"});
  CHECK(time.timers->next_due() == start + 40ms);
  CHECK(time.advance(100ms) == 1);
  CHECK(log == Log{"a", "b", "c", "d", "e"});
  CHECK(time.timers->armed() == 0);
  CHECK(time.timers->next_due() == std::nullopt);
  CHECK(time.advance(1s) == 0);  // each fired once
}

TEST_CASE("TimerQueue: a timer due in the past fires at the next run") {
  ManualTime time;
  Log log;
  LoggingTimer late("late", log);
  time.timers->arm(late.timer(), time.clock.now() - 1s);
  CHECK(time.timers->run_due() == 1);
  CHECK(log == Log{"late"});
}

TEST_CASE("TimerQueue::cancel: true when it was armed (it will not fire), false otherwise") {
  ManualTime time;
  Log log;
  LoggingTimer kept("kept", log), cancelled("cancelled", log), never("never", log);
  const auto start = time.clock.now();
  time.timers->arm(cancelled.timer(), start + 5ms);
  time.timers->arm(kept.timer(), start + 10ms);

  CHECK_FALSE(time.timers->cancel(never.timer()));  // never armed
  CHECK(time.timers->cancel(cancelled.timer()));
  CHECK_FALSE(time.timers->cancel(cancelled.timer()));  // already cancelled
  CHECK(time.timers->armed() == 1);
  CHECK(time.timers->next_due() == start + 10ms);

  CHECK(time.advance(20ms) == 1);
  CHECK(log == Log{"kept"});
  CHECK_FALSE(time.timers->cancel(kept.timer()));  // already fired

  // A cancelled timer can be armed again.
  time.timers->arm(cancelled.timer(), time.clock.now());
  CHECK(time.timers->run_due() == 1);
  CHECK(log == Log{"kept", "cancelled"});
}

TEST_CASE("TimerQueue::arm of an armed timer moves it, later or earlier") {
  ManualTime time;
  Log log;
  LoggingTimer a("a", log), b("b", log), c("c", log);
  const auto start = time.clock.now();
  time.timers->arm(a.timer(), start + 10ms);
  time.timers->arm(b.timer(), start + 20ms);
  time.timers->arm(c.timer(), start + 30ms);

  time.timers->arm(a.timer(), start + 40ms);  // the first becomes the last
  CHECK(time.timers->armed() == 3);
  CHECK(time.timers->next_due() == start + 20ms);
  time.timers->arm(c.timer(), start + 5ms);  // the last becomes the first
  CHECK(time.timers->next_due() == start + 5ms);

  CHECK(time.advance(10ms) == 1);
  CHECK(log == Log{"c"});
  CHECK(time.advance(20ms) == 1);
  CHECK(log == Log{"c", "b"});
  CHECK(time.advance(10ms) == 1);
  CHECK(log == Log{"c", "b", "a"});
}

TEST_CASE("TimerQueue: many timers armed, moved and cancelled fire in due order") {
  ManualTime time;
  Log log;
  constexpr int kTimers = 200;
  std::vector<std::unique_ptr<LoggingTimer>> timers;
  const auto start = time.clock.now();
  for (int i = 0; i < kTimers; ++i) {
    timers.push_back(std::make_unique<LoggingTimer>(std::to_string(i), log));
    // A scrambled but known due time per timer: i * 37 mod 200 (a permutation).
    time.timers->arm(timers[i]->timer(), start + std::chrono::milliseconds((i * 37) % kTimers));
  }
  // Move every third timer to due time 1000 + i, cancel every fifth.
  for (int i = 0; i < kTimers; i += 3) {
    time.timers->arm(timers[i]->timer(), start + std::chrono::milliseconds(1000 + i));
  }
  int cancelled = 0;
  for (int i = 0; i < kTimers; i += 5)
    cancelled += time.timers->cancel(timers[i]->timer()) ? 1 : 0;
  CHECK(cancelled == kTimers / 5);

  Log expected;
  for (int due = 0; due < kTimers; ++due) {
    for (int i = 0; i < kTimers; ++i) {
      if ((i * 37) % kTimers == due && i % 3 != 0 && i % 5 != 0)
        expected.push_back(std::to_string(i));
    }
  }
  for (int i = 0; i < kTimers; ++i) {
    if (i % 3 == 0 && i % 5 != 0) expected.push_back(std::to_string(i));
  }
  CHECK(time.advance(2s) == expected.size());
  CHECK(log == expected);
}

TEST_CASE("TimerQueue: a fire may free its own timer and may re-arm it") {
  ManualTime time;
  struct SelfDeleting {
    int* fired;
    Timer timer{&SelfDeleting::fire, this};
    static void fire(void* self) noexcept {
      auto* me = static_cast<SelfDeleting*>(self);
      ++*me->fired;
      delete me;
    }
  };
  int fired = 0;
  auto* owner = new SelfDeleting{&fired};
  time.timers->arm(owner->timer, time.clock.now());
  CHECK(time.timers->run_due() == 1);  // AddressSanitizer checks that nothing touched it after
  CHECK(fired == 1);

  struct Rearming {
    TimerQueue* queue = nullptr;
    int fired = 0;
    Timer timer{&Rearming::fire, this};
    static void fire(void* self) noexcept {
      auto* me = static_cast<Rearming*>(self);
      if (++me->fired < 3) me->queue->arm(me->timer, me->queue->now() + 10ms);
    }
  };
  Rearming rearming;
  rearming.queue = time.timers.get();
  time.timers->arm(rearming.timer, time.clock.now());
  CHECK(time.timers->run_due() == 1);
  CHECK(time.timers->armed() == 1);
  CHECK(time.advance(10ms) == 1);
  CHECK(time.advance(10ms) == 1);
  CHECK(rearming.fired == 3);
  CHECK(time.timers->armed() == 0);
}

TEST_CASE("TimerQueue::cancel_sync inside the timer's own fire returns at once") {
  ManualTime time;
  struct SelfCancelling {
    TimerQueue* queue = nullptr;
    bool returned = false;
    Timer timer{&SelfCancelling::fire, this};
    static void fire(void* self) noexcept {
      auto* me = static_cast<SelfCancelling*>(self);
      me->queue->cancel_sync(me->timer);
      me->returned = true;
    }
  };
  SelfCancelling timer;
  timer.queue = time.timers.get();
  time.timers->arm(timer.timer, time.clock.now());
  CHECK(time.timers->run_due() == 1);
  CHECK(timer.returned);
}

namespace {

// A timer whose fire blocks until released, to hold a fire "running" on a runner thread.
struct BlockingTimer {
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  std::atomic<bool> finished{false};
  Timer timer{&BlockingTimer::fire, this};
  static void fire(void* self) noexcept {
    auto* me = static_cast<BlockingTimer*>(self);
    me->started.store(true);
    while (!me->release.load())
      std::this_thread::yield();
    me->finished.store(true);
  }
};

// Calls cancel_sync() on another thread while `blocking`'s fire is held, releases the fire once
// cancel_sync() returned or after a short grace period, and tells whether cancel_sync() returned
// only after the fire had finished. A cancel_sync() that does not wait returns during the grace
// period, while the fire is still held, so it is caught every time; a correct one is released
// by the grace period, whatever the machine's speed.
bool cancel_sync_waited_for_fire(TimerQueue& timers, BlockingTimer& blocking) {
  std::atomic<bool> returned{false};
  std::atomic<bool> finished_when_returned{false};
  std::thread canceller([&] {
    timers.cancel_sync(blocking.timer);
    finished_when_returned.store(blocking.finished.load());
    returned.store(true);
  });
  eventually([&] { return returned.load(); }, 20ms);
  blocking.release.store(true);
  canceller.join();
  return finished_when_returned.load();
}

}  // namespace

TEST_CASE("TimerQueue::cancel_sync waits for a fire running on another thread") {
  ManualTime time;
  BlockingTimer blocking;
  time.timers->arm(blocking.timer, time.clock.now());
  std::thread runner([&] { time.timers->run_due(); });
  REQUIRE(eventually([&] { return blocking.started.load(); }));

  CHECK_FALSE(time.timers->cancel(blocking.timer));  // its fire has begun
  CHECK(cancel_sync_waited_for_fire(*time.timers, blocking));
  runner.join();
}

// Contract (timer_queue.hpp): cancel_sync() is "cancel(), and when the timer's fire is running on
// another thread, waits for it to return". Here the timer was armed again while its fire runs
// (as a Waiter re-parked from its complete() would be): cancel_sync() must still wait for the
// running fire before the owner may free the timer.
TEST_CASE("TimerQueue::cancel_sync waits for a running fire even when the timer was re-armed") {
  ManualTime time;
  BlockingTimer blocking;
  time.timers->arm(blocking.timer, time.clock.now());
  std::thread runner([&] { time.timers->run_due(); });
  REQUIRE(eventually([&] { return blocking.started.load(); }));

  time.timers->arm(blocking.timer, time.clock.now() + 1s);  // re-armed while its fire runs
  CHECK(cancel_sync_waited_for_fire(*time.timers, blocking));
  runner.join();
  CHECK(time.timers->armed() == 0);
  CHECK(time.advance(2s) == 0);
}

TEST_CASE("TimerQueue: the timerfd is readable when a timer is due and cleared by run_due") {
  auto timers = make_timer_queue();  // the real clock
  Log log;
  LoggingTimer timer("real", log);
  CHECK_FALSE(fd_readable(timers->fd(), 0));

  timers->arm(timer.timer(), timers->now() + 1ms);
  REQUIRE(fd_readable(timers->fd(), 60000));  // the bound only guards against a hang
  CHECK(timers->run_due() == 1);
  CHECK(log == Log{"real"});
  CHECK_FALSE(fd_readable(timers->fd(), 0));

  // A timer due in the past makes the fd readable at once.
  timers->arm(timer.timer(), timers->now() - 1s);
  REQUIRE(fd_readable(timers->fd(), 60000));
  CHECK(timers->run_due() == 1);

  // A cancelled timer leaves the fd unarmed.
  timers->arm(timer.timer(), timers->now() + 10ms);
  CHECK(timers->cancel(timer.timer()));
  CHECK_FALSE(fd_readable(timers->fd(), 50));
}

TEST_CASE("TimerThread fires a real timer") {
  auto timers = make_timer_queue();
  auto thread = TimerThread::start(*timers);
  REQUIRE(thread.ok());
  std::atomic<int> fired{0};
  struct Counting {
    std::atomic<int>* fired;
    Timer timer{&Counting::fire, this};
    static void fire(void* self) noexcept { static_cast<Counting*>(self)->fired->fetch_add(1); }
  };
  Counting first{&fired};
  Counting second{&fired};
  timers->arm(first.timer, timers->now() + 5ms);
  timers->arm(second.timer, timers->now() + 10ms);
  CHECK(eventually([&] { return fired.load() == 2; }));
  thread.value().reset();  // stops and joins
  CHECK(fired.load() == 2);
}

TEST_CASE("TimerThread: a real receive timeout completes a parked reader") {
  auto timers = make_timer_queue();
  auto thread = TimerThread::start(*timers);
  REQUIRE(thread.ok());
  Params params;
  Group group("real", kOwner, params, *timers);
  RecordingWaiter reader;
  REQUIRE(group.receive_or_park(reader, 5ms).ok());
  REQUIRE(reader.wait_for_completions(1));
  CHECK(reader.last().timed_out);
  CHECK(group.stats().readers_waiting == 0);

  group.set_send_delay(5);
  send_text(group, "delayed on the real clock");
  auto received = group.receive(Group::kWaitForever);
  REQUIRE(received.ok());
  REQUIRE(received.value() != nullptr);
  CHECK(text_of(*received.value()) == "delayed on the real clock");
}
