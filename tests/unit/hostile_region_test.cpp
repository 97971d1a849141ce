// A hostile member of a group (SPEC "Fast path", "Trust"; docs/DESIGN.md, "Trust model"): it
// holds a read-write mapping of its group's region and forges it from a thread of its own while
// the server works on the group. Whatever it writes, every server operation does bounded work
// (it returns while the member is still at it) and the group's storage bound holds for what the
// server keeps, counted on the server's side.
//
// The member runs until the test stops it, with a hang guard far longer than any check needs:
// an operation that waited for the member to stop (the bug these tests were written for) fails
// the "returned while the member forged" check, whatever the machine's speed.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/quotas.hpp"
#include "core/registry.hpp"
#include "region/region.hpp"
#include "test_support.hpp"

using namespace synchmess::test;
using synchmess::core::Quotas;
using synchmess::core::Registry;
using synchmess::region::Header;
using synchmess::region::make_tag;
using synchmess::region::RecordHeader;
using synchmess::region::RecordState;
using synchmess::region::Region;

namespace {

// The smallest record a sender makes: a message of one byte.
constexpr uint64_t kRecord = synchmess::region::record_span(1);
constexpr auto kHangGuard = 20s;

// A member's own mapping of the victim's region, and what it does to it on a thread until
// stopped (or until the hang guard).
class Member {
 public:
  using Program = std::function<void(Member&)>;

  explicit Member(Group& victim) {
    auto attached = Region::attach(victim.region().fd());
    REQUIRE(attached.ok());
    region_ = std::move(attached.value());
  }
  ~Member() { stop(); }
  Member(const Member&) = delete;
  Member& operator=(const Member&) = delete;

  Header& header() { return region_.header(); }
  uint64_t ring_bytes() const { return region_.ring_bytes(); }
  RecordHeader& record(uint64_t position) {
    return *reinterpret_cast<RecordHeader*>(reinterpret_cast<char*>(&region_.header()) +
                                            synchmess::region::kRingOffset +
                                            (position & (ring_bytes() - 1)));
  }
  // `count` records from `start` on (the whole ring by default): `state`, of one byte, owned
  // by slot 7. Only those not in that state already are written (a record the server just
  // claimed is turned back; the others' lines stay where they are).
  void forge_ring(uint64_t start, RecordState state, uint64_t count = 0) {
    const uint64_t records = count != 0 ? count : ring_bytes() / kRecord;
    for (uint64_t position = start; position < start + records * kRecord; position += kRecord) {
      RecordHeader& forged = record(position);
      const uint64_t tag = make_tag(position, 7, state);
      if (forged.tag.load(std::memory_order_relaxed) == tag) continue;
      forged.length.store(1, std::memory_order_relaxed);
      forged.budget.store(0, std::memory_order_relaxed);
      forged.tag.store(tag, std::memory_order_relaxed);
    }
  }
  uint64_t laps() const { return laps_.load(); }
  uint64_t frontier = 0;  // a program's own (the member's thread only)

  // Runs `program` in a loop on the member's thread.
  void start(Program program) {
    give_up_ = std::chrono::steady_clock::now() + kHangGuard;
    thread_ = std::thread([this, program = std::move(program)] {
      while (!stop_.load() && std::chrono::steady_clock::now() < give_up_) {
        program(*this);
        laps_.fetch_add(1);
      }
    });
    // At least one lap done: the forgery is in place before the server acts.
    REQUIRE(eventually([&] { return laps_.load() > 0; }));
  }
  // True while the member is still forging: not stopped, and well before its hang guard ends
  // (an operation that waited for the member to give up returns only then).
  bool still_forging() const {
    return thread_.joinable() && !stop_.load() && std::chrono::steady_clock::now() < give_up_ - 2s;
  }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

 private:
  Region region_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::chrono::steady_clock::time_point give_up_;
  std::atomic<uint64_t> laps_{0};
};

// The whole ring as COMMITTED records, then, over and over, the records at its front turned
// back to COMMITTED and `head` wound back to them: a server that drains until the ring is empty
// never gets there (issue 14, the first hole).
void rewind_committed(Member& member) {
  Header& header = member.header();
  const uint64_t start = 1 << 20;  // any aligned lap
  member.forge_ring(start, RecordState::kCommitted, member.laps() == 0 ? 0 : 256);
  header.tail.store(start + member.ring_bytes());
  header.reclaim.store(start);
  header.head.store(start);
}

// The ring's front kept full of COMMITTED records ahead of `head`, as fast as the server takes
// them: the same hole, without winding back (tests/integration/hostile.cpp does it so).
void refill_ahead(Member& member) {
  Header& header = member.header();
  const uint64_t ahead = member.ring_bytes() / 4 * 3;
  uint64_t head = header.head.load() & ~(kRecord - 1);
  if (member.laps() == 0) {
    head = 1 << 20;
    member.frontier = head;
    header.reclaim.store(head);
    header.head.store(head);
  }
  const uint64_t from = std::max(member.frontier, head);
  if (head + ahead > from) {
    member.forge_ring(from, RecordState::kCommitted, (head + ahead - from) / kRecord);
    member.frontier = head + ahead;
  }
  header.tail.store(std::min(header.reclaim.load() & ~(kRecord - 1), head) + member.ring_bytes());
}

// The whole ring as FREE records in front of `head`: walks that pass consumed records.
void rewind_free(Member& member) {
  Header& header = member.header();
  const uint64_t start = 1 << 20;
  member.forge_ring(start, RecordState::kFree);
  header.tail.store(start + member.ring_bytes());
  header.reclaim.store(start);
  header.head.store(start);
}

// An unaligned `tail` (the server calls the ring broken), then the budget counter held at 0
// (issue 14, the second hole).
void broken_ring_zero_budget(Member& member) {
  Header& header = member.header();
  header.tail.store(header.tail.load() | 8);
  for (int i = 0; i < 1000; ++i)
    header.stored_bytes.store(0);
}

// The budget counter and the barrier word moved without pause: CAS loops on them lose.
void hammer_words(Member& member) {
  Header& header = member.header();
  for (int i = 0; i < 1000; ++i) {
    header.stored_bytes.fetch_add(1);
    header.barrier.fetch_add(uint64_t{1} << 32 | 1);
  }
}

// A group on the largest ring (where an unbounded walk costs most), in the default budget.
struct Victim : ManualTime {
  Params params;
  Group group{"victim", kOwner, params, *timers, Quotas::unlimited(), [] {
                auto made = Region::create("victim", synchmess::region::kMaxRingBytes);
                REQUIRE(made.ok());
                return std::move(made.value());
              }()};
};

// Runs `operation` while `member` forges; requires that it returned before the member stopped.
void returns_while_forging(Member& member, const char* what,
                           const std::function<void()>& operation) {
  INFO(what);
  const auto start = std::chrono::steady_clock::now();
  operation();
  const auto took = std::chrono::steady_clock::now() - start;
  INFO("took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  CHECK(member.still_forging());
}

}  // namespace

TEST_CASE("Hostile member: close of a group whose ring never empties returns") {
  for (Member::Program forgery : {&rewind_committed, &refill_ahead}) {
    Victim victim;
    send_text(victim.group, "a real message first");
    Member member(victim.group);
    member.start(forgery);
    returns_while_forging(member, "close()",
                          [&] { victim.group.close(std::errc::identifier_removed); });
    CHECK(victim.group.closed());
    CHECK(victim.group.try_receive().error() == std::errc::no_such_device);
  }
}

TEST_CASE("Hostile member: a registry's removal and stop return; other groups install meanwhile") {
  ManualTime time;
  Params params;
  Registry registry(params, *time.timers, 16, Quotas::unlimited(),
                    synchmess::region::kMaxRingBytes);
  auto first = registry.install("victim", kOwner);
  REQUIRE(first.ok());
  auto second = registry.install("victim2", kOwner);
  REQUIRE(second.ok());
  Member member(*first.value().group);
  Member other(*second.value().group);
  member.start(&rewind_committed);
  other.start(&rewind_committed);
  returns_while_forging(member, "remove()", [&] { REQUIRE(registry.remove("victim", 0).ok()); });
  returns_while_forging(member, "install() of another group",
                        [&] { REQUIRE(registry.install("bystander", kOwner).ok()); });
  returns_while_forging(other, "close_all()",
                        [&] { registry.close_all(std::errc::identifier_removed); });
  CHECK(registry.size() == 0);
}

TEST_CASE("Hostile member: every server operation on a forged region returns while it forges") {
  using Forgery = void (*)(Member&);
  const std::pair<const char*, Forgery> forgeries[] = {
      {"committed ring rewound", &rewind_committed},
      {"committed ring refilled ahead", &refill_ahead},
      {"free ring rewound", &rewind_free},
      {"broken ring, budget at 0", &broken_ring_zero_budget},
      {"budget and barrier hammered", &hammer_words},
  };
  for (const auto& [name, forgery] : forgeries) {
    CAPTURE(name);
    Victim victim;
    victim.group.set_send_delay(0);
    Member member(victim.group);
    member.start(forgery);
    Group& group = victim.group;
    returns_while_forging(member, "sends and receives", [&] {
      for (int i = 0; i < 200; ++i) {
        (void)group.send(bytes_of("from the device"));
        (void)group.try_receive();
      }
    });
    returns_while_forging(member, "stats, readiness", [&] {
      for (int i = 0; i < 20; ++i) {
        (void)group.stats();
        (void)group.readiness();
      }
    });
    returns_while_forging(member, "delayed sends, flush, revoke", [&] {
      group.set_send_delay(1000);
      for (int i = 0; i < 20; ++i)
        (void)group.send(bytes_of("delayed"));
      (void)group.flush();
      for (int i = 0; i < 20; ++i)
        (void)group.send(bytes_of("delayed"));
      (void)group.revoke_delayed();
      group.set_send_delay(0);
    });
    returns_while_forging(member, "parameters changed", [&] {
      REQUIRE(victim.params.set({.max_message_size = 2048, .max_storage_size = 1 << 19}));
      group.on_params_changed();
      REQUIRE(victim.params.set({.max_message_size = 4096, .max_storage_size = 1 << 20}));
      group.on_params_changed();
    });
    returns_while_forging(member, "the barrier", [&] {
      RecordingWaiter sleeper;
      REQUIRE(group.park_on_barrier(sleeper).ok());
      (void)group.awake_barrier();
      (void)group.cancel_barrier_wait(sleeper);
    });
    returns_while_forging(member, "region activity, maintenance, audit and trim", [&] {
      for (int i = 0; i < 4; ++i) {
        group.on_region_activity();
        group.maintain();
        (void)group.region().audit(0);
        (void)group.region().trim();
      }
    });
    returns_while_forging(member, "a client's repair", [&] {
      const auto slot = group.region().open_client(4242);
      REQUIRE(slot.has_value());
      (void)group.region().repair_client(*slot, false);
      (void)group.region().repair_client(*slot, true);
    });
    returns_while_forging(member, "close()", [&] { group.close(std::errc::identifier_removed); });
  }
}

TEST_CASE("Hostile member: a broken ring and a zeroed budget do not lift max_storage_size") {
  // Issue 14's second hole: the member makes the server call the ring broken, then holds the
  // region's budget counter at 0; the server stored 62.7 MiB in a group of a 1 MiB budget.
  Victim victim;
  REQUIRE(victim.params.set({.max_message_size = 4096, .max_storage_size = 1 << 20}));
  victim.group.on_params_changed();
  Member member(victim.group);
  member.start(&broken_ring_zero_budget);
  const std::string page(4096, 'h');
  uint64_t stored = 0;
  std::errc refusal{};
  for (int i = 0; i < 1024 && refusal == std::errc{}; ++i) {  // 4 MiB offered
    auto sent = victim.group.send(bytes_of(page));
    if (sent) {
      stored += sent.value();
    } else {
      refusal = sent.error();
    }
  }
  CHECK(stored <= uint64_t{1} << 20);
  CHECK(refusal == std::errc::no_space_on_device);
  const synch_group_stats stats = victim.group.stats();
  CHECK(stats.queued_bytes <= uint64_t{1} << 20);
  CHECK(stats.queued_bytes == stored);

  // Delayed messages too: the server's own count holds them to the budget.
  while (victim.group.try_receive().value()) {
  }
  victim.group.set_send_delay(60000);
  uint64_t delayed = 0;
  for (int i = 0; i < 1024; ++i) {
    auto sent = victim.group.send(bytes_of(page));
    if (!sent) break;
    delayed += sent.value();
  }
  CHECK(delayed <= uint64_t{1} << 20);
  CHECK(victim.group.revoke_delayed() * page.size() == delayed);
  CHECK(member.still_forging());
}
