// A hostile group member against the real server (SPEC "Fast path", "Trust"; issue 14): a
// process that does the handshake by hand and forges its group's region. Whatever it writes,
// the server's operations on that group (removal, flush, revoke, parameters, stats) return while
// it is still at it, installs of other groups are not held up, and the group's max_storage_size
// holds for what the server stores.
//
// The member forges until the test ends (its child is killed then), with a hang guard of its own:
// an operation that waited for the member to stop (the bug these cases were written for) fails
// the "returned while the member forged" check, whatever the machine's speed.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>

#include "hostile.hpp"
#include "support.hpp"

namespace synchmess::it {
namespace {

// A member forging `group`'s region in a child process, from construction to destruction.
class Forger {
 public:
  Forger(const TestGroup& group, Forgery forgery) : guard_(Clock::now() + patience() / 2) {
    int ready[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    const std::string path = group.path();
    const auto deadline = guard_;
    const int tell = ready[1];
    child_ = std::make_unique<Child>([path, forgery, deadline, tell] {
      // At the lowest priority: a process that never sleeps would otherwise take a CPU from
      // the server (the sandbox has one), which is the scheduler's business, not the region's.
      errno = 0;
      if (::nice(19) == -1 && errno != 0) return std::string("nice: ") + std::strerror(errno);
      return forge(path, forgery, deadline, [tell] {
        const char forging = 'f';
        (void)!::write(tell, &forging, 1);
      });
    });
    ::close(ready[1]);
    pollfd started{ready[0], POLLIN, 0};
    const bool forging = ::poll(&started, 1, static_cast<int>(patience().count())) == 1;
    ::close(ready[0]);
    INFO("forgery: " << forgery_name(forgery));
    REQUIRE_MESSAGE(forging, "the member did not start forging");
  }
  // True while the member still forges, well before its hang guard: what ran meanwhile did not
  // wait for it.
  bool still_forging() const {
    return Clock::now() < guard_ - patience() / 8 && ::kill(child_->pid(), 0) == 0;
  }

 private:
  const Clock::time_point guard_;
  std::unique_ptr<Child> child_;  // SIGKILLed and reaped when the test is done
};

// How long `call` takes, in ms.
template <class F>
double timed(F&& call) {
  const auto start = Clock::now();
  call();
  return ms_since(start);
}

}  // namespace

TEST_SUITE("hostile member") {
  TEST_CASE("a ring that never empties holds up neither its removal nor other installs") {
    if (needs_root("the forgery's parameter changes")) return;
    ParamsGuard params;
    TestGroup victim("hmrewind");
    Forger forger(victim, Forgery::kEndlessRing);
    Fd device = victim.open();

    // The group's own operations, while it forges.
    uint32_t delay = 60000;
    const double others_ms = timed([&] {
      CHECK_SYS_OK(::ioctl(device.get(), SYNCH_IOC_SET_SEND_DELAY, &delay));
      for (int i = 0; i < 8; ++i)
        CHECK(send(device.get(), "delayed").ok());
      CHECK_SYS_OK(::ioctl(device.get(), SYNCH_IOC_FLUSH));
      for (int i = 0; i < 8; ++i)
        CHECK(send(device.get(), "delayed").ok());
      CHECK(::ioctl(device.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES) == 8);
      delay = 0;
      CHECK_SYS_OK(::ioctl(device.get(), SYNCH_IOC_SET_SEND_DELAY, &delay));
      (void)stats_of(device.get());
      CHECK(set_params(2048, 1 << 19).ok());
      CHECK(set_params(params.saved().max_message_size, params.saved().max_storage_size).ok());
      (void)receive(device.get());
    });
    CHECK(forger.still_forging());

    // Its removal, while another thread installs and removes a group of its own.
    const std::string other = unique_name("hmother");
    std::atomic<bool> removing{false};
    std::atomic<long> installed{-1};
    std::atomic<long> removed{-1};
    std::atomic<bool> other_done_in_time{false};
    double install_ms = 0;
    BoundedThread installer("an install beside the removal", [&] {
      while (!removing.load())
        std::this_thread::yield();
      // Best effort, not a synchronization any check depends on: the removal has the server by
      // now (a worker of two). The checks hold whether or not the two overlap; nothing the
      // server exposes tells that a removal is in progress.
      std::this_thread::sleep_for(2ms);
      install_ms = timed([&] {
        installed.store(install_group(other).rc);
        removed.store(remove_group(other).rc);
      });
      other_done_in_time.store(forger.still_forging());
    });
    removing.store(true);
    const double remove_ms = timed([&] { victim.remove(); });
    CHECK(forger.still_forging());
    installer.join();
    CHECK(installed.load() == 0);
    CHECK(removed.load() == 0);
    CHECK(other_done_in_time.load());
    MESSAGE("with a member refilling its ring without end: flush, revoke, params and stats took "
            << others_ms << " ms, the removal " << remove_ms << " ms, an install and removal of "
            << "another group beside it " << install_ms << " ms");
  }

  TEST_CASE("a broken ring and a zeroed budget counter do not lift max_storage_size") {
    if (needs_root("the parameters it sets")) return;
    ParamsGuard params;
    constexpr uint64_t kBudget = 64 << 10;
    REQUIRE(set_params(4096, kBudget).ok());
    TestGroup victim("hmbudget");
    Forger forger(victim, Forgery::kBrokenRingZeroBudget);
    Fd device = victim.open(O_RDWR | O_NONBLOCK);
    const std::string page(4096, 'h');

    // Writes until the budget refuses (4 times the budget offered).
    const auto fill = [&](int offered) {
      uint64_t accepted = 0;
      for (int i = 0; i < offered; ++i) {
        const Sys sent = send(device.get(), page);
        if (!sent.ok()) {
          CHECK(errno_name(sent.err) == errno_name(ENOSPC));
          break;
        }
        accepted += page.size();
      }
      return accepted;
    };
    const uint64_t stored = fill(4 * kBudget / 4096);
    CHECK(stored <= kBudget);
    CHECK(stats_of(device.get()).queued_bytes <= kBudget);

    // A raised budget gives that much more room, no more; lowered, none.
    REQUIRE(set_params(4096, 2 * kBudget).ok());
    const uint64_t more = fill(4 * kBudget / 4096);
    CHECK(stored + more <= 2 * kBudget);
    REQUIRE(set_params(4096, kBudget).ok());
    CHECK(fill(4) == 0);
    uint64_t drained = 0;
    for (Received r = receive(device.get()); r.rc > 0; r = receive(device.get()))
      drained += static_cast<uint64_t>(r.rc);
    CHECK(drained == stored + more);  // what was accepted is there, exactly once

    // Delayed messages are held to the budget as well; revoke counts what was taken.
    uint32_t delay = 60000;
    CHECK_SYS_OK(::ioctl(device.get(), SYNCH_IOC_SET_SEND_DELAY, &delay));
    const uint64_t delayed = fill(4 * kBudget / 4096);
    CHECK(delayed <= kBudget);
    CHECK(static_cast<uint64_t>(::ioctl(device.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES)) *
              page.size() ==
          delayed);
    const uint64_t flushed_sent = fill(4 * kBudget / 4096);
    CHECK(flushed_sent <= kBudget);
    CHECK(static_cast<uint64_t>(::ioctl(device.get(), SYNCH_IOC_FLUSH)) * page.size() ==
          flushed_sent);
    CHECK(forger.still_forging());
    MESSAGE("with a broken ring and a zeroed budget counter, a group of a "
            << kBudget << "-byte budget stored " << stored << " bytes");
  }
}

}  // namespace synchmess::it
