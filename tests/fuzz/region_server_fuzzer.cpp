// region_server_fuzzer: libFuzzer target for the server's loops over a region a member forged
// (docs/DESIGN.md, "Trust model", the table of loops; issue 14). The input is a forgery: words
// written into the victim group's region once (any field of the header, the client table, the
// ring; or runs of well-formed records of any state, which walks follow furthest), and words a
// member thread keeps writing while the server works (positions wound back, counters moved).
// Then the server's operations on the group run one by one: sends and receives, stats and
// readiness, delayed sends with flush and revoke, parameter changes, the barrier, region
// activity, maintenance (audit, trim), a client's repair, and close.
// Checks: each operation returns within a time bound (kBound: far above what the bounded loops
// take under ASan, far below an unbounded one with a member at work), nothing crashes
// (ASan/UBSan), and what the server stores for the group stays within max_storage_size.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/group.hpp"
#include "core/params.hpp"
#include "core/timer_queue.hpp"
#include "region/region.hpp"
#include "region_fuzz_support.hpp"

namespace {

using synchmess::core::Group;
using synchmess::region::RecordState;
using synchmess::region::Region;

constexpr auto kBound = std::chrono::milliseconds(500);
constexpr uint64_t kBudget = 64 << 10;

using synchmess::fuzz::bytes_of;
using synchmess::fuzz::Input;
using synchmess::fuzz::world;
using synchmess::fuzz::World;

[[noreturn]] void broken(const std::string& what) {
  synchmess::fuzz::broken("region_server_fuzzer: " + what);
}

// One word a member writes: where (an offset into the region), what, and how wide.
struct Write {
  uint64_t at;
  uint64_t value;
  int width;
};

// A word of the input as a write into a region of `region_bytes`: mostly the header's fields.
Write write_of(Input& input, uint64_t region_bytes) {
  const uint8_t where = input.byte();
  uint64_t at = where % 4 == 0 ? input.bytes(3) % region_bytes
                               : input.bytes(2) % synchmess::region::kHeaderBytes;
  const int width = 1 << (input.byte() % 4);
  at -= at % static_cast<uint64_t>(width);
  return {at, input.bytes(8), width};
}

void apply(uint8_t* base, uint64_t region_bytes, const Write& write) {
  if (write.at + static_cast<uint64_t>(write.width) > region_bytes) return;
  uint8_t* to = base + write.at;
  switch (write.width) {  // atomic stores: the server reads these words concurrently
    case 1:
      __atomic_store_n(to, static_cast<uint8_t>(write.value), __ATOMIC_RELAXED);
      break;
    case 2:
      __atomic_store_n(reinterpret_cast<uint16_t*>(to), static_cast<uint16_t>(write.value),
                       __ATOMIC_RELAXED);
      break;
    case 4:
      __atomic_store_n(reinterpret_cast<uint32_t*>(to), static_cast<uint32_t>(write.value),
                       __ATOMIC_RELAXED);
      break;
    default:
      __atomic_store_n(reinterpret_cast<uint64_t*>(to), write.value, __ATOMIC_RELAXED);
      break;
  }
}

// `count` well-formed records of `state` and `length` from ring position `start`, `head` and
// `reclaim` there and `tail` a ring ahead: what walks follow furthest.
void forge_records(Region& mapped, uint64_t start, uint64_t count, RecordState state,
                   uint32_t length) {
  synchmess::region::Header& header = mapped.header();
  if (state == RecordState::kPad) length &= ~uint32_t{15};  // a PAD spans header + length
  const uint64_t span = state == RecordState::kPad ? synchmess::region::kRecordHeaderBytes + length
                                                   : synchmess::region::record_span(length);
  start &= ~uint64_t{synchmess::region::kRecordAlign - 1};
  for (uint64_t i = 0; i < count && i * span < mapped.ring_bytes(); ++i) {
    const uint64_t position = start + i * span;
    auto* record = reinterpret_cast<synchmess::region::RecordHeader*>(
        reinterpret_cast<char*>(&header) + synchmess::region::kRingOffset +
        (position & (mapped.ring_bytes() - 1)));
    record->length.store(length, std::memory_order_relaxed);
    record->budget.store(0, std::memory_order_relaxed);
    record->tag.store(synchmess::region::make_tag(position, 7, state), std::memory_order_relaxed);
  }
  header.reclaim.store(start);
  header.head.store(start);
  header.tail.store(start + mapped.ring_bytes());
}

// Runs `operation`; aborts when it took longer than kBound.
void bounded(const char* what, const std::function<void()>& operation) {
  const auto start = std::chrono::steady_clock::now();
  operation();
  const auto took = std::chrono::steady_clock::now() - start;
  if (took > kBound) {
    broken(std::string(what) + " took " +
           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
           " ms on a forged region (bound " + std::to_string(kBound.count()) + " ms)");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  if (!w.params.set({.max_message_size = 4096, .max_storage_size = kBudget})) broken("params");
  Input input(data, size);
  // The ring: the smallest, or one of 1 MiB (walks 16 times as long).
  const uint64_t ring_bytes = input.byte() % 2 == 0 ? synchmess::region::kMinRingBytes : 1 << 20;
  auto made = Region::create("victim", ring_bytes);
  if (!made) return 0;  // out of memfds: nothing to test
  Group victim("victim", 1000, w.params, *w.timers, synchmess::core::Quotas::unlimited(),
               std::move(made.value()));
  auto attached = Region::attach(victim.region().fd());
  if (!attached) broken("attach");
  Region& member = attached.value();
  auto* base = reinterpret_cast<uint8_t*>(&member.header());
  const uint64_t region_bytes = member.region_bytes();

  // Some honest traffic first, then the forgery in place.
  for (int i = 0, n = input.byte() % 32; i < n; ++i)
    (void)victim.send(bytes_of(std::string(1 + i * 7, 'm')));
  const uint8_t records = input.byte();
  if (records % 2 == 1) {
    const auto state = static_cast<RecordState>(1 + records / 2 % 5);
    forge_records(member, input.bytes(4), uint64_t{1} << (records / 16 % 17), state,
                  static_cast<uint32_t>(input.bytes(2) % 4096));
  }
  for (int i = 0, n = input.byte() % 64; i < n && !input.done(); ++i)
    apply(base, region_bytes, write_of(input, region_bytes));
  // What the member keeps writing while the server works.
  std::vector<Write> scribbles;
  for (int i = 0, n = input.byte() % 16; i < n && !input.done(); ++i)
    scribbles.push_back(write_of(input, region_bytes));
  const bool refill = input.byte() % 2 == 0;  // turn the front back to COMMITTED, too

  std::atomic<bool> stop{false};
  std::thread scribbler([&] {
    synchmess::region::Header& header = member.header();
    while (!stop.load(std::memory_order_relaxed)) {
      for (const Write& write : scribbles)
        apply(base, region_bytes, write);
      if (refill) {
        const uint64_t head = header.head.load() & ~uint64_t{31};
        forge_records(member, head, 64, RecordState::kCommitted, 1);
      }
      if (scribbles.empty() && !refill) std::this_thread::yield();
    }
  });

  const std::string page(4096, 'p');
  bounded("sends and receives", [&] {
    for (int i = 0; i < 32; ++i) {
      (void)victim.send(bytes_of(page));
      (void)victim.try_receive();
    }
  });
  bounded("stats and readiness", [&] {
    (void)victim.stats();
    (void)victim.readiness();
  });
  bounded("delayed sends, flush and revoke", [&] {
    victim.set_send_delay(60000);
    for (int i = 0; i < 8; ++i)
      (void)victim.send(bytes_of(page));
    (void)victim.flush();
    for (int i = 0; i < 8; ++i)
      (void)victim.send(bytes_of(page));
    (void)victim.revoke_delayed();
    victim.set_send_delay(0);
  });
  bounded("parameter changes", [&] {
    (void)w.params.set({.max_message_size = 2048, .max_storage_size = kBudget / 2});
    victim.on_params_changed();
    (void)w.params.set({.max_message_size = 4096, .max_storage_size = kBudget});
    victim.on_params_changed();
  });
  bounded("the barrier", [&] {
    (void)victim.awake_barrier();
    (void)victim.stats();
  });
  bounded("region activity and maintenance", [&] {
    victim.on_region_activity();
    victim.maintain();
    victim.maintain();
    (void)victim.region().audit(0);
    (void)victim.region().trim();
  });
  bounded("a client's repair", [&] {
    if (const auto slot = victim.region().open_client(4242)) {
      (void)victim.region().repair_client(*slot, false);
      (void)victim.region().repair_client(*slot, true);
    }
  });
  // What the server stores for the group on its heap, by its own count, whatever the region's
  // counter says: within the budget (the ring's own memory is fixed, D).
  for (int i = 0; i < 64; ++i)
    (void)victim.send(bytes_of(page));
  if (victim.held_bytes() > kBudget) {
    broken("the server holds " + std::to_string(victim.held_bytes()) + " bytes for a group of a " +
           std::to_string(kBudget) + "-byte budget");
  }
  bounded("close", [&] { victim.close(std::errc::identifier_removed); });
  stop.store(true);
  scribbler.join();
  return 0;
}
