// The barrier, and waits ended by signals (EINTR) and by SIGKILL.
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.hpp"

namespace synchmess::it {
namespace {

struct SleepResult {
  std::atomic<long> rc{1};
  std::atomic<int> err{0};
};

void sleep_on(int fd, SleepResult& result) {
  const Sys s = sys([&] { return ::ioctl(fd, SYNCH_IOC_SLEEP_ON_BARRIER); });
  result.err = s.err;
  result.rc = s.rc;
}

bool sleepers_are(int fd, uint64_t n, synch_group_stats* seen = nullptr) {
  return wait_for_stats(
      fd, [n](const auto& s) { return s.sleepers == n; }, seen);
}

}  // namespace

TEST_SUITE("barrier") {
  TEST_CASE("AWAKE with no sleepers returns 0 and is not remembered") {
    TestGroup group("awake0");
    Fd fd = group.open();
    CHECK(::ioctl(fd.get(), SYNCH_IOC_AWAKE_BARRIER) == 0);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_AWAKE_BARRIER) == 0);
    SleepResult result;
    BoundedThread sleeper("sleeper", [&] { sleep_on(fd.get(), result); });
    REQUIRE(sleepers_are(fd.get(), 1));
    // The subject, not a synchronization (it is counted above): for 200 ms nothing wakes it, so
    // the earlier awakes were not remembered.
    std::this_thread::sleep_for(200ms);
    CHECK_FALSE(sleeper.done());
    CHECK(stats_of(fd.get()).sleepers == 1);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_AWAKE_BARRIER) == 1);
    sleeper.join();
    CHECK(result.rc.load() == 0);
    CHECK(stats_of(fd.get()).sleepers == 0);
  }

  TEST_CASE("AWAKE wakes the sleepers of two processes and returns how many") {
    TestGroup group("awaken");
    Fd fd = group.open();
    constexpr int kThreads = 3;
    constexpr int kChildren = 2;
    const std::string path = group.path();
    std::vector<std::unique_ptr<Child>> children;
    for (int i = 0; i < kChildren; ++i) {
      children.push_back(std::make_unique<Child>([path] {
        Fd own = open_fd(path, O_RDWR);
        if (!own) return "open: " + errno_name(errno);
        const Sys s = sys([&] { return ::ioctl(own.get(), SYNCH_IOC_SLEEP_ON_BARRIER); });
        return s.rc == 0 ? std::string()
                         : "sleep returned " + std::to_string(s.rc) + " " + errno_name(s.err);
      }));
    }
    std::vector<SleepResult> results(kThreads);
    std::vector<std::unique_ptr<BoundedThread>> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.push_back(std::make_unique<BoundedThread>(
          "sleeper " + std::to_string(i), [&, i] { sleep_on(fd.get(), results[i]); }));
    }
    synch_group_stats seen{};
    const bool all = sleepers_are(fd.get(), kThreads + kChildren, &seen);
    INFO("sleepers seen: " << seen.sleepers);
    REQUIRE(all);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_AWAKE_BARRIER) == kThreads + kChildren);
    for (auto& thread : threads)
      thread->join();
    for (auto& result : results)
      CHECK(result.rc.load() == 0);
    for (auto& child : children) {
      CHECK(child->finish());
      CHECK_MESSAGE(child->report().empty(), child->report());
      CHECK(child->exited_normally());
    }
    CHECK(stats_of(fd.get()).sleepers == 0);
    CHECK(::ioctl(fd.get(), SYNCH_IOC_AWAKE_BARRIER) == 0);
  }

  TEST_CASE("64 sleepers parked on one group while another group keeps serving") {
    TestGroup parked_group("park64");
    TestGroup busy_group("busy");
    Fd parked = parked_group.open();
    Fd busy = busy_group.open();
    constexpr int kSleepers = 64;
    const int threads_before = server_thread_count();
    std::vector<SleepResult> results(kSleepers);
    std::vector<std::unique_ptr<BoundedThread>> sleepers;
    for (int i = 0; i < kSleepers; ++i) {
      sleepers.push_back(std::make_unique<BoundedThread>(
          "sleeper " + std::to_string(i), [&, i] { sleep_on(parked.get(), results[i]); }));
    }
    // While they park (and once all 64 are parked), the other group serves writes and reads.
    const int rounds = 200 * load_scale();
    int served = 0;
    bool all_parked = false;
    const auto give_up = Clock::now() + patience();
    for (int i = 0; (i < rounds || !all_parked) && Clock::now() < give_up; ++i) {
      const std::string text = "busy-" + std::to_string(i);
      if (send(busy.get(), text).rc != static_cast<long>(text.size())) break;
      if (receive(busy.get(), 64).data != text) break;
      ++served;
      if (!all_parked) all_parked = stats_of(parked.get()).sleepers == kSleepers;
    }
    CHECK(served >= rounds);
    synch_group_stats seen{};
    const bool reached = sleepers_are(parked.get(), kSleepers, &seen);
    INFO("sleepers seen: " << seen.sleepers);
    REQUIRE(reached);
    // A fixed pool serves them: parked sleepers hold no server thread.
    if (threads_before > 0) {
      CHECK(server_thread_count() == threads_before);
    } else {
      MESSAGE("the server process is not visible here: its thread count is not checked");
    }
    // The barrier of another group is another barrier.
    CHECK(::ioctl(busy.get(), SYNCH_IOC_AWAKE_BARRIER) == 0);
    CHECK(stats_of(parked.get()).sleepers == kSleepers);
    // Still serving with 64 parked.
    for (int i = 0; i < 50; ++i) {
      REQUIRE(send(busy.get(), "after").ok());
      REQUIRE(receive(busy.get(), 64).data == "after");
    }
    CHECK(::ioctl(parked.get(), SYNCH_IOC_AWAKE_BARRIER) == kSleepers);
    for (auto& sleeper : sleepers)
      sleeper->join();
    int woken = 0;
    for (auto& result : results)
      woken += result.rc.load() == 0 ? 1 : 0;
    CHECK(woken == kSleepers);
    CHECK(stats_of(parked.get()).sleepers == 0);
  }

  TEST_CASE("a signal ends SLEEP_ON_BARRIER with EINTR and the sleeper is no longer counted") {
    TestGroup group("eintrsleep");
    Fd fd = group.open();
    InterruptingSignal handler;
    SleepResult interrupted;
    SleepResult other;
    BoundedThread victim("interrupted sleeper", [&] { sleep_on(fd.get(), interrupted); });
    BoundedThread bystander("other sleeper", [&] { sleep_on(fd.get(), other); });
    REQUIRE(sleepers_are(fd.get(), 2));
    REQUIRE(::pthread_kill(victim.native_handle(), InterruptingSignal::kSignal) == 0);
    victim.join();
    CHECK(interrupted.rc.load() == -1);
    CHECK(errno_name(interrupted.err.load()) == errno_name(EINTR));
    synch_group_stats seen{};
    CHECK(sleepers_are(fd.get(), 1, &seen));
    // The other sleeper is untouched and is the only one woken.
    CHECK_FALSE(bystander.done());
    CHECK(::ioctl(fd.get(), SYNCH_IOC_AWAKE_BARRIER) == 1);
    bystander.join();
    CHECK(other.rc.load() == 0);
  }

  TEST_CASE("a signal ends a read waiting with a receive timeout with EINTR") {
    TestGroup group("eintrread");
    Fd reader_fd = group.open();
    Fd watch = group.open();
    uint32_t timeout = 600000;
    REQUIRE(::ioctl(reader_fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &timeout) == 0);
    InterruptingSignal handler;
    std::atomic<long> rc{1};
    std::atomic<int> err{0};
    BoundedThread reader("waiting reader", [&] {
      const Received r = receive(reader_fd.get(), 64);
      err = r.err;
      rc = r.rc;
    });
    REQUIRE(wait_for_stats(watch.get(), [](const auto& s) { return s.readers_waiting == 1; }));
    REQUIRE(::pthread_kill(reader.native_handle(), InterruptingSignal::kSignal) == 0);
    reader.join();
    CHECK(rc.load() == -1);
    CHECK(errno_name(err.load()) == errno_name(EINTR));
    CHECK(wait_for_stats(watch.get(), [](const auto& s) { return s.readers_waiting == 0; }));
    // Nothing was consumed on the interrupted reader's behalf.
    REQUIRE(send(watch.get(), "after").ok());
    CHECK(receive(watch.get(), 64).data == "after");
  }

  TEST_CASE("a process SIGKILLed while sleeping or waiting leaves nothing behind") {
    TestGroup group("sigkill");
    Fd watch = group.open();
    const std::string path = group.path();
    Child sleeper([path] {
      Fd fd = open_fd(path, O_RDWR);
      if (!fd) return "open: " + errno_name(errno);
      (void)::ioctl(fd.get(), SYNCH_IOC_SLEEP_ON_BARRIER);
      return std::string("sleep returned");
    });
    Child reader([path] {
      Fd fd = open_fd(path, O_RDWR);
      if (!fd) return "open: " + errno_name(errno);
      uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
      (void)::ioctl(fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &forever);
      (void)receive(fd.get(), 64);
      return std::string("read returned");
    });
    synch_group_stats seen{};
    const bool parked = wait_for_stats(
        watch.get(), [](const auto& s) { return s.sleepers == 1 && s.readers_waiting == 1; },
        &seen);
    INFO("sleepers=" << seen.sleepers << " readers_waiting=" << seen.readers_waiting);
    REQUIRE(parked);
    REQUIRE(::kill(sleeper.pid(), SIGKILL) == 0);
    REQUIRE(::kill(reader.pid(), SIGKILL) == 0);
    CHECK(sleeper.finish());  // waitpid returns: the kernel did not keep it in the request
    CHECK(reader.finish());
    CHECK(sleeper.describe_status() == "killed by KILL");
    CHECK(reader.describe_status() == "killed by KILL");
    CHECK(wait_for_stats(watch.get(),
                         [](const auto& s) { return s.sleepers == 0 && s.readers_waiting == 0; }));
    // The group works on: a new sleeper is the only one woken; a message is not lost to the
    // dead reader.
    REQUIRE(send(watch.get(), "for-the-living").ok());
    CHECK(receive(watch.get(), 64).data == "for-the-living");
    CHECK(::ioctl(watch.get(), SYNCH_IOC_AWAKE_BARRIER) == 0);
  }
}

}  // namespace synchmess::it
