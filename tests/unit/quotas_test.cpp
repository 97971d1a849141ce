// Quotas: the global bound on message memory, per-uid shares of memory and groups, root exempt
// (SPEC "Limits and quotas"); what groups and the registry charge to them; a concurrent stress.
#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "core/quotas.hpp"
#include "core/registry.hpp"
#include "region/region.hpp"
#include "test_support.hpp"

using synchmess::core::kQuotaExceeded;
using synchmess::core::QuotaKind;
using synchmess::core::QuotaLimits;
using synchmess::core::QuotaObserver;
using synchmess::core::Quotas;
using synchmess::core::Registry;
using namespace synchmess::test;

namespace {

constexpr uid_t kRoot = 0;
constexpr uid_t kAlice = 1000;
constexpr uid_t kBob = 1001;

template <class T>
std::errc error_or_ok(const synchmess::core::Result<T>& result) {
  return result.ok() ? std::errc{} : result.error();
}

class RecordingObserver final : public QuotaObserver {
 public:
  void on_refused(QuotaKind kind, uid_t uid, uint64_t requested) noexcept override {
    kinds.push_back(kind);
    uids.push_back(uid);
    amounts.push_back(requested);
  }
  std::vector<QuotaKind> kinds;
  std::vector<uid_t> uids;
  std::vector<uint64_t> amounts;
};

}  // namespace

TEST_CASE("Quotas: a uid's share, the global bound, root exempt from the share") {
  Quotas quotas({.max_memory = 1000, .max_user_memory = 400, .max_user_groups = 2});
  RecordingObserver observer;
  quotas.set_observer(&observer);

  CHECK(quotas.charge_memory(kAlice, 300).ok());
  CHECK(quotas.charge_memory(kAlice, 100).ok());  // exactly the share
  CHECK(error_or_ok(quotas.charge_memory(kAlice, 1)) == kQuotaExceeded);
  CHECK(quotas.user_memory(kAlice) == 400);
  CHECK(quotas.charge_memory(kBob, 400).ok());  // Bob has a share of his own
  CHECK(quotas.memory_used() == 800);

  // Root is exempt from the share, never from the global bound.
  CHECK(quotas.charge_memory(kRoot, 200).ok());
  CHECK(error_or_ok(quotas.charge_memory(kRoot, 1)) == std::errc::no_space_on_device);
  CHECK(quotas.user_memory(kRoot) == 0);
  quotas.uncharge_memory(kBob, 400);
  // Alice is at her share: EDQUOT wins over the (now free) global bound.
  CHECK(error_or_ok(quotas.charge_memory(kAlice, 1)) == kQuotaExceeded);
  quotas.uncharge_memory(kAlice, 300);
  CHECK(quotas.charge_memory(kAlice, 300).ok());
  // A refused global charge leaves the share as it was.
  CHECK(quotas.charge_memory(kBob, 100).ok());
  CHECK(quotas.charge_memory(kRoot, 300).ok());
  CHECK(quotas.memory_used() == 1000);
  CHECK(error_or_ok(quotas.charge_memory(kBob, 1)) == std::errc::no_space_on_device);
  CHECK(quotas.user_memory(kBob) == 100);

  REQUIRE(observer.kinds.size() == 4);
  CHECK(observer.kinds[0] == QuotaKind::kUserMemory);
  CHECK(observer.uids[0] == kAlice);
  CHECK(observer.amounts[0] == 1);
  CHECK(observer.kinds[1] == QuotaKind::kGlobalMemory);
  CHECK(observer.uids[1] == kRoot);
  CHECK(observer.kinds[3] == QuotaKind::kGlobalMemory);

  // Groups: a count per uid, root exempt.
  CHECK(quotas.charge_group(kAlice).ok());
  CHECK(quotas.charge_group(kAlice).ok());
  CHECK(error_or_ok(quotas.charge_group(kAlice)) == kQuotaExceeded);
  CHECK(observer.kinds.back() == QuotaKind::kUserGroups);
  CHECK(quotas.charge_group(kBob).ok());
  for (int i = 0; i < 100; ++i)
    CHECK(quotas.charge_group(kRoot).ok());
  quotas.uncharge_group(kAlice);
  CHECK(quotas.user_groups(kAlice) == 1);
  CHECK(quotas.charge_group(kAlice).ok());
  quotas.set_observer(nullptr);
}

TEST_CASE("Quotas: uids beyond the table share one overflow share, never an unbounded one") {
  Quotas quotas({.max_memory = uint64_t{1} << 40, .max_user_memory = 10, .max_user_groups = 1});
  for (uid_t uid = 1; uid <= Quotas::kUserSlots; ++uid)
    REQUIRE(quotas.charge_memory(uid, 10).ok());  // fills every slot, each to its share
  const uid_t late = 100000;
  CHECK(quotas.charge_memory(late, 10).ok());
  CHECK(error_or_ok(quotas.charge_memory(late + 1, 1)) == kQuotaExceeded);  // the same share
  quotas.uncharge_memory(late, 10);
  CHECK(quotas.charge_memory(late + 1, 10).ok());
  CHECK(quotas.user_memory(1) == 10);
}

TEST_CASE("Quotas stress: concurrent charges never pass a limit and all come back") {
  constexpr uint64_t kUserLimit = 10'000;
  constexpr uint64_t kGlobalLimit = 25'000;  // less than the users' shares together
  Quotas quotas({.max_memory = kGlobalLimit, .max_user_memory = kUserLimit, .max_user_groups = 5});
  constexpr int kThreads = 6;
  constexpr int kOps = 100'000;
  std::atomic<bool> over{false};
  std::atomic<int> running{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const uid_t uid = t % 3 == 0 ? kRoot : static_cast<uid_t>(2000 + t % 3);  // shared uids
      std::mt19937 random(static_cast<unsigned>(t));
      std::vector<uint64_t> held;
      int groups = 0;
      for (int i = 0; i < kOps; ++i) {
        if (held.empty() || random() % 2 == 0) {
          const uint64_t amount = 1 + random() % 500;
          if (quotas.charge_memory(uid, amount).ok()) held.push_back(amount);
        } else {
          quotas.uncharge_memory(uid, held.back());
          held.pop_back();
        }
        if (random() % 8 == 0) {
          if (groups > 0 && random() % 2 == 0) {
            quotas.uncharge_group(uid);
            --groups;
          } else if (quotas.charge_group(uid).ok()) {
            ++groups;
          }
        }
        if (quotas.memory_used() > kGlobalLimit || quotas.user_memory(2001) > kUserLimit ||
            quotas.user_memory(2002) > kUserLimit || quotas.user_groups(2001) > 5 ||
            quotas.user_groups(2002) > 5) {
          over.store(true);
        }
      }
      for (const uint64_t amount : held)
        quotas.uncharge_memory(uid, amount);
      for (; groups > 0; --groups)
        quotas.uncharge_group(uid);
      running.fetch_sub(1);
    });
  }
  for (auto& thread : threads)
    thread.join();
  CHECK_FALSE(over.load());
  CHECK(quotas.memory_used() == 0);
  CHECK(quotas.user_memory(2001) == 0);
  CHECK(quotas.user_memory(2002) == 0);
  CHECK(quotas.user_groups(2001) == 0);
  CHECK(quotas.user_groups(2002) == 0);
}

TEST_CASE("Group: a message the server holds on its heap is charged to its sender until it goes") {
  // The heap holds delayed messages and those behind a full ring; a message in the group's ring
  // costs nothing more (the ring is the group's fixed memory, docs/DESIGN.md "The fast path").
  ManualTime time;
  Params params;
  Quotas quotas({.max_memory = 100'000, .max_user_memory = 1'000, .max_user_groups = 8});
  Group group("quota", kOwner, params, *time.timers, quotas);
  const uint64_t one = Group::footprint(1);
  CHECK(one >= 1 + 24 + 42);  // payload, header, at least the ring slot's share
  CHECK(Group::footprint(4096) > 4096);

  group.set_send_delay(1000);
  REQUIRE(group.send(bytes_of("x"), kAlice).ok());
  CHECK(quotas.user_memory(kAlice) == one);
  CHECK(quotas.memory_used() == one);
  // Filled to the share: EDQUOT for Alice, Bob still sends, root is exempt.
  while (group.send(bytes_of("x"), kAlice).ok()) {
  }
  CHECK(error_or_ok(group.send(bytes_of("x"), kAlice)) == kQuotaExceeded);
  CHECK(quotas.user_memory(kAlice) <= 1'000);
  CHECK(quotas.user_memory(kAlice) + one > 1'000);
  REQUIRE(group.send(bytes_of("b"), kBob).ok());
  for (int i = 0; i < 20; ++i)
    REQUIRE(group.send(bytes_of("r"), kRoot).ok());
  // The group's own budget counts payload only, as before.
  CHECK(group.stats().delayed_bytes == group.stats().delayed_messages);

  SUBCASE("revoke gives the charges back") {
    CHECK(group.revoke_delayed() > 20);
    CHECK(quotas.memory_used() == 0);
  }
  SUBCASE("close gives the charges back") {
    group.close(std::errc::identifier_removed);
    CHECK(quotas.memory_used() == 0);
  }
  SUBCASE("a flush moves them into the ring: the heap copies and their charges go") {
    CHECK(group.flush() > 20);
    CHECK(quotas.memory_used() == 0);
    CHECK(try_receive_text(group) == std::optional<std::string>("x"));
  }
  SUBCASE("the quotas come before the group's budget: EDQUOT even when both are full") {
    REQUIRE(params.set({.max_message_size = 0, .max_storage_size = 1}));
    CHECK(error_or_ok(group.send(bytes_of("2"), kBob)) == std::errc::no_space_on_device);
    CHECK(quotas.user_memory(kBob) == one);  // a refused send holds nothing more
    while (quotas.charge_memory(kBob, 1).ok()) {
    }
    CHECK(error_or_ok(group.send(bytes_of("2"), kBob)) == kQuotaExceeded);
  }
}

TEST_CASE("Group: messages behind a full ring are charged until they are taken") {
  ManualTime time;
  Params params;
  Quotas quotas;
  auto region = synchmess::region::Region::create("small", synchmess::region::kMinRingBytes);
  REQUIRE(region.ok());
  Group group("small", kOwner, params, *time.timers, quotas, std::move(region.value()));
  const std::string big(4000, 'b');
  int in_ring = 0;
  while (quotas.user_memory(kAlice) == 0) {
    REQUIRE(group.send(bytes_of(big), kAlice).ok());
    ++in_ring;
  }
  --in_ring;  // the last one went behind the ring
  CHECK(in_ring ==
        static_cast<int>(synchmess::region::kMinRingBytes / synchmess::region::record_span(4000)));
  CHECK(quotas.user_memory(kAlice) == Group::footprint(4000));
  REQUIRE(group.send(bytes_of("tail"), kAlice).ok());  // behind it too (FIFO)
  CHECK(group.stats().queued_messages == static_cast<uint64_t>(in_ring + 2));
  for (int i = 0; i < in_ring + 1; ++i)
    CHECK(try_receive_text(group) == std::optional<std::string>(big));
  CHECK(try_receive_text(group) == std::optional<std::string>("tail"));
  CHECK(quotas.memory_used() == 0);
  CHECK(group.stats().queued_bytes == 0);
}

TEST_CASE("Group: the global bound refuses everybody, root included, with ENOSPC") {
  ManualTime time;
  Params params;
  const uint64_t one = Group::footprint(1);
  Quotas small({.max_memory = 3 * one, .max_user_memory = 1'000, .max_user_groups = 8});
  Group tight("tight", kOwner, params, *time.timers, small);
  tight.set_send_delay(1000);  // held on the heap
  REQUIRE(tight.send(bytes_of("a"), kAlice).ok());
  REQUIRE(tight.send(bytes_of("b"), kBob).ok());
  REQUIRE(tight.send(bytes_of("c"), kRoot).ok());
  CHECK(error_or_ok(tight.send(bytes_of("d"), kRoot)) == std::errc::no_space_on_device);
  CHECK(error_or_ok(tight.send(bytes_of("e"), kAlice)) == std::errc::no_space_on_device);
  CHECK(small.user_memory(kAlice) == one);
}

TEST_CASE("Registry: each uid installs at most max_user_groups groups; root is exempt") {
  ManualTime time;
  Params params;
  Quotas quotas({.max_memory = 1 << 20, .max_user_memory = 1 << 16, .max_user_groups = 2});
  Registry registry(params, *time.timers, 4, quotas);
  REQUIRE(registry.install("a1", kAlice).ok());
  REQUIRE(registry.install("a2", kAlice).ok());
  CHECK(error_or_ok(registry.install("a3", kAlice)) == kQuotaExceeded);
  CHECK(registry.install("a1", kAlice).ok());  // installing an existing group charges nothing
  CHECK(registry.install("a2", kBob).ok());    // neither for another uid
  CHECK(quotas.user_groups(kBob) == 0);
  REQUIRE(registry.install("r1", kRoot).ok());
  REQUIRE(registry.install("r2", kRoot).ok());
  // max_groups (4) reached: ENOSPC for root; for Alice her own quota speaks first.
  CHECK(error_or_ok(registry.install("r3", kRoot)) == std::errc::no_space_on_device);
  CHECK(error_or_ok(registry.install("a3", kAlice)) == kQuotaExceeded);
  CHECK(error_or_ok(registry.install("b1", kBob)) == std::errc::no_space_on_device);
  CHECK(quotas.user_groups(kBob) == 0);  // the refusal gave its charge back
  REQUIRE(registry.remove("a1", kAlice).ok());
  CHECK(quotas.user_groups(kAlice) == 1);
  REQUIRE(registry.install("a3", kAlice).ok());
  registry.close_all(std::errc::identifier_removed);
  CHECK(quotas.user_groups(kAlice) == 0);
}
