// ResidentGuard: the global bound held against the process's real anonymous memory (SPEC
// "Limits and quotas"), driven through a fake source; Quotas refusing what it refuses; and the
// MemoryTrimmer giving freed memory back.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "core/quotas.hpp"
#include "core/registry.hpp"
#include "core/resident_guard.hpp"
#include "server/memory.hpp"
#include "test_support.hpp"

using synchmess::core::QuotaKind;
using synchmess::core::QuotaObserver;
using synchmess::core::Quotas;
using synchmess::core::ResidentGuard;

namespace {

// What the guard reads: a memory figure, a limit and a clock the test sets; a trim that gives
// back what the test says it would.
struct FakeProcess {
  std::atomic<uint64_t> anon{0};
  std::atomic<uint64_t> limit{10000};
  std::atomic<uint64_t> trim_gives_back{0};
  std::chrono::steady_clock::time_point clock{std::chrono::hours(1)};

  ResidentGuard::Source source() {
    return {
        .anon_bytes =
            [](void* self) noexcept { return static_cast<FakeProcess*>(self)->anon.load(); },
        .trim =
            [](void* self) noexcept {
              auto* process = static_cast<FakeProcess*>(self);
              process->anon -= process->trim_gives_back.exchange(0);
            },
        .limit = [](void* self) noexcept { return static_cast<FakeProcess*>(self)->limit.load(); },
        .now = [](void* self) noexcept { return static_cast<FakeProcess*>(self)->clock; },
        .context = this,
    };
  }
};

constexpr ResidentGuard::Settings kSettings{.refresh_bytes = 1 << 20,
                                            .trim_interval = std::chrono::milliseconds(250)};

}  // namespace

TEST_CASE("ResidentGuard: within the limit it admits on its estimate, without reading") {
  FakeProcess process;
  process.anon = 1000;
  ResidentGuard guard(process.source(), kSettings);
  CHECK(guard.readings() == 1);  // at construction
  for (int i = 0; i < 5; ++i)
    CHECK(guard.admits(100));
  CHECK(guard.readings() == 1);
  CHECK(guard.last_reading() == 1000);
}

TEST_CASE("ResidentGuard: what would pass the limit is refused after a fresh reading and a trim") {
  FakeProcess process;
  process.anon = 9950;
  ResidentGuard guard(process.source(), kSettings);
  CHECK_FALSE(guard.admits(100));
  CHECK(guard.readings() == 3);  // construction, the look, the look after the trim
  CHECK(guard.trims() == 1);

  SUBCASE("no second trim within the interval") {
    CHECK_FALSE(guard.admits(100));
    CHECK(guard.trims() == 1);
    process.clock += std::chrono::milliseconds(250);
    CHECK_FALSE(guard.admits(100));
    CHECK(guard.trims() == 2);
  }
  SUBCASE("a trim that gives memory back lets the charge in") {
    process.clock += std::chrono::milliseconds(250);
    process.trim_gives_back = 5000;
    CHECK(guard.admits(100));
    CHECK(guard.last_reading() == 4950);
  }
  SUBCASE("memory the process gave back by itself is seen at the next look") {
    process.anon = 2000;
    CHECK(guard.admits(100));
    CHECK(guard.trims() == 1);
  }
}

TEST_CASE("ResidentGuard: frees never lower the estimate, bytes admitted since a reading count") {
  // A fake allocator whose freed chunks stay resident (holes): what it holds only grows.
  FakeProcess process;
  process.limit = 1000;
  ResidentGuard guard(process.source(), kSettings);
  REQUIRE(guard.admits(600));  // on the estimate: 0 + 600
  process.anon += 600;
  // Counted, those 600 bytes may since have been freed; the guard does not care: 600 read +
  // 600 more is over.
  CHECK_FALSE(guard.admits(600));
  CHECK(guard.last_reading() == 600);
  CHECK(guard.admits(300));  // 600 held + 300 fits
  process.anon += 300;
  CHECK_FALSE(guard.admits(200));
}

TEST_CASE("ResidentGuard: reads anew once refresh_bytes were admitted, and asks the limit then") {
  FakeProcess process;
  ResidentGuard guard(process.source(), {.refresh_bytes = 1000, .trim_interval = {}});
  CHECK(guard.admits(600));
  CHECK(guard.readings() == 1);
  CHECK(guard.admits(600));  // 1200 since the reading: look again
  CHECK(guard.readings() == 2);
  // A lower limit applies from the next reading on.
  process.anon = 9000;
  process.limit = 9500;
  CHECK(guard.admits(300));  // 900 since: the estimate is still under the old limit
  CHECK(guard.readings() == 2);
  CHECK_FALSE(guard.admits(600));  // 1500 since: the look finds 9000 of 9500
  CHECK(guard.readings() >= 3);
}

TEST_CASE("ResidentGuard stress: concurrent callers pass the limit by one message each at most") {
  // Each thread allocates what it was admitted (the fake's figure grows by it) and frees some of
  // it later, half of which stays resident as holes. Whatever the interleaving, the figure never
  // passes the limit by more than one admitted-but-not-yet-counted message per thread.
  constexpr int kThreads = 4;
  constexpr uint64_t kMaxMessage = 512;
  constexpr uint64_t kLimit = 1 << 20;
  FakeProcess process;
  process.limit = kLimit;
  ResidentGuard guard(process.source(), {.refresh_bytes = 16 << 10, .trim_interval = {}});
  std::atomic<uint64_t> worst{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(static_cast<unsigned>(t));
      std::vector<uint64_t> held;
      for (int i = 0; i < 100000; ++i) {
        const uint64_t size = 1 + random() % kMaxMessage;
        if (guard.admits(size)) {
          const uint64_t now = process.anon.fetch_add(size) + size;
          uint64_t seen = worst.load();
          while (now > seen && !worst.compare_exchange_weak(seen, now)) {
          }
          held.push_back(size);
        }
        if (held.size() > 64 || (!held.empty() && random() % 3 == 0)) {
          const uint64_t freed = held.back();
          held.pop_back();
          if (random() % 2 == 0) process.anon -= freed;  // given back; else a hole
        }
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  CHECK(worst.load() <= kLimit + kThreads * kMaxMessage);
  CHECK(worst.load() > kLimit / 2);  // it did come near the limit
}

TEST_CASE("Quotas with a guard: its refusal is ENOSPC, nothing stays charged, and it is reported") {
  struct Observer final : QuotaObserver {
    std::vector<QuotaKind> kinds;
    void on_refused(QuotaKind kind, uid_t, uint64_t) noexcept override { kinds.push_back(kind); }
  } observer;
  FakeProcess process;
  process.limit = 1000;
  ResidentGuard guard(process.source(), kSettings);
  Quotas quotas({.max_memory = 1 << 20, .max_user_memory = 1 << 20, .max_user_groups = 4});
  quotas.set_observer(&observer);
  quotas.set_guard(&guard);
  CHECK(quotas.charge_memory(1000, 800));
  process.anon = 900;  // more than the count of 800 left after frees: the allocator's holes
  const auto refused = quotas.charge_memory(1000, 300);
  REQUIRE_FALSE(refused);
  CHECK(refused.error() == std::errc::no_space_on_device);
  CHECK(quotas.memory_used() == 800);
  CHECK(quotas.user_memory(1000) == 800);
  REQUIRE(observer.kinds.size() == 1);
  CHECK(observer.kinds[0] == QuotaKind::kResidentMemory);
  CHECK_FALSE(quotas.charge_memory(0, 200));  // root too: the global bound binds everyone
  quotas.set_guard(nullptr);
  CHECK(quotas.charge_memory(1000, 200));  // the count alone
}

namespace {
std::atomic<int> trims_made{0};
}  // namespace

TEST_CASE("MemoryTrimmer: memory held and freed between two of its looks is given back too") {
  using synchmess::core::Params;
  using synchmess::core::Registry;
  using synchmess::server::MemoryTrimmer;
  synchmess::test::ManualTime time;
  Params params;
  Quotas quotas({.max_memory = 1 << 30, .max_user_memory = 1 << 30, .max_user_groups = 8});
  Registry registry(params, *time.timers, 8, quotas);
  trims_made = 0;
  MemoryTrimmer trimmer(*time.timers, quotas, registry, [] { ++trims_made; });
  time.advance(std::chrono::seconds(1));
  CHECK(trims_made == 0);  // nothing freed yet

  // 2 MiB charged and given back within one second: no look ever saw them held.
  REQUIRE(quotas.charge_memory(1000, 2 << 20));
  quotas.uncharge_memory(1000, 2 << 20);
  time.advance(std::chrono::seconds(1));
  CHECK(trims_made == 1);
  time.advance(std::chrono::seconds(1));
  CHECK(trims_made == 1);  // nothing new

  // A group installed and removed within one second.
  REQUIRE(registry.install("brief", 1000).ok());
  REQUIRE(registry.remove("brief", 1000).ok());
  time.advance(std::chrono::seconds(1));
  CHECK(trims_made == 2);
}
