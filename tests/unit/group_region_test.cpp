// core::Group on its shared region (docs/DESIGN.md, "The fast path"): what a client process
// does in the region (here: a second mapping of the same memfd, as the library maps it) and
// what the server does through the Group meet in one queue, in one order, under one budget.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/stat.h>

#include <cstring>

#include <string>
#include <vector>

#include "core/quotas.hpp"
#include "core/registry.hpp"
#include "region/region.hpp"
#include "test_support.hpp"

using namespace synchmess::test;
using synchmess::core::Params;
using synchmess::core::Quotas;
using synchmess::core::Registry;
using synchmess::region::make_tag;
using synchmess::region::Region;

namespace {

// A client's view of a group's region: its own mapping and slot, as the library holds them.
struct Client {
  explicit Client(Group& group) {
    auto attached = Region::attach(group.region().fd());
    REQUIRE(attached.ok());
    region = std::move(attached.value());
    const auto assigned = group.region().open_client(4242);
    REQUIRE(assigned.has_value());
    slot = *assigned;
    region.set_notify_fd(group.notify_fd());
  }
  Region::Put send(std::string_view text, uint64_t limit = 1 << 20) {
    return region.push(bytes_of(text), slot, limit, true);
  }
  std::optional<std::string> receive() {
    std::vector<std::byte> buffer(region.max_payload());
    uint32_t length = 0;
    if (region.pop(buffer, slot, length) != Region::Take::kTaken) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(buffer.data()), length);
  }
  Region region;
  uint16_t slot = 0;
};

bool readable(int fd) {
  pollfd item{fd, POLLIN, 0};
  return ::poll(&item, 1, 0) == 1;
}

}  // namespace

TEST_CASE("Group on its region: a client's sends reach the server's receives, and back") {
  GroupFixture fixture;
  Client client(fixture.group);
  CHECK(client.send("from the client") == Region::Put::kStored);
  CHECK(fixture.group.stats().queued_messages == 1);
  CHECK(fixture.group.readiness().readable);
  CHECK(try_receive_text(fixture.group) == "from the client");
  send_text(fixture.group, "from the server");
  CHECK(client.receive() == "from the server");
  CHECK(fixture.group.stats().queued_bytes == 0);
}

TEST_CASE("Group on its region: behind a full ring the server keeps FIFO across both doors") {
  GroupFixture fixture;
  fixture.set_params(4096, uint64_t{8} << 20);  // more budget than the ring holds
  Client client(fixture.group);
  std::vector<std::string> sent;
  const std::string filler(4000, 'x');
  // The server's sends fill the ring, then go behind it.
  for (int i = 0; fixture.group.stats().queued_bytes < 2 * fixture.group.region().ring_bytes();
       ++i) {
    sent.push_back(std::to_string(i) + filler);
    send_text(fixture.group, sent.back());
  }
  CHECK((fixture.group.region().flags() & synchmess::region::kFlagOverflow) != 0);
  // A client may not overtake what the server holds: it is sent through the server.
  CHECK(client.send("late") == Region::Put::kDivert);
  sent.push_back("late");
  send_text(fixture.group, "late");
  CHECK(receive_all(fixture.group) == sent);
  CHECK((fixture.group.region().flags() & synchmess::region::kFlagOverflow) == 0);
  CHECK(client.send("ring again") == Region::Put::kStored);
  CHECK(try_receive_text(fixture.group) == "ring again");
}

TEST_CASE("Group on its region: a parked device reader gets a client's message") {
  GroupFixture fixture;
  Client client(fixture.group);
  RecordingWaiter reader;
  auto parked = fixture.group.receive_or_park(reader, Group::kWaitForever);
  REQUIRE(parked.ok());
  REQUIRE(parked.value() == nullptr);
  CHECK((fixture.group.region().header().server_interest.load() &
         synchmess::region::kInterestReaders) != 0);
  CHECK(client.send("wake up") == Region::Put::kStored);
  CHECK(readable(fixture.group.notify_fd()));  // the client told the server
  fixture.group.on_region_activity();
  REQUIRE(reader.completions() == 1);
  REQUIRE(reader.last().message != nullptr);
  CHECK(text_of(*reader.last().message) == "wake up");
  CHECK_FALSE(readable(fixture.group.notify_fd()));  // drained
  CHECK((fixture.group.region().header().server_interest.load() &
         synchmess::region::kInterestReaders) == 0);
}

TEST_CASE("Group on its region: device sleepers and a client's awake share one barrier") {
  GroupFixture fixture;
  Client client(fixture.group);
  RecordingWaiter sleeper;
  REQUIRE(fixture.group.park_on_barrier(sleeper).ok());
  const uint32_t generation = client.region.barrier_enter(client.slot);  // a client sleeper
  CHECK(fixture.group.stats().sleepers == 2);
  CHECK(client.region.barrier_awake(client.slot) == 2);
  CHECK(client.region.barrier_passed(generation));
  CHECK(readable(fixture.group.notify_fd()));
  fixture.group.on_region_activity();
  CHECK(sleeper.completions() == 1);
  CHECK(fixture.group.stats().sleepers == 0);
}

TEST_CASE("Group on its region: a send still being copied is pending, not an empty group") {
  // Regression: a receive that met the oldest record still RESERVED (a client mid-copy, or the
  // server's own refill on another thread) answered "empty" although messages were queued.
  GroupFixture fixture;
  Client client(fixture.group);
  Region& region = fixture.group.region();
  synchmess::region::Header& header = region.header();
  const std::string text = "being copied";
  // What push() does up to the copy: budget, space, a RESERVED tag.
  REQUIRE(region.reserve_budget(text.size(), 1 << 20));
  const uint64_t at = header.tail.load();
  header.tail.store(at + synchmess::region::record_span(text.size()));
  auto* record = reinterpret_cast<synchmess::region::RecordHeader*>(
      reinterpret_cast<char*>(&header) + synchmess::region::kRingOffset +
      (at & (region.ring_bytes() - 1)));
  record->length.store(static_cast<uint32_t>(text.size()));
  record->budget.store(static_cast<uint32_t>(text.size()));
  record->tag.store(make_tag(at, client.slot, synchmess::region::RecordState::kReserved));
  send_text(fixture.group, "behind it");  // the server's send: after it, in FIFO order

  CHECK_FALSE(try_receive_text(fixture.group).has_value());
  CHECK(fixture.group.message_pending());
  CHECK(fixture.group.readiness().readable);
  CHECK(fixture.group.stats().queued_messages == 2);

  std::memcpy(reinterpret_cast<char*>(record) + synchmess::region::kRecordHeaderBytes, text.data(),
              text.size());
  record->tag.store(make_tag(at, client.slot, synchmess::region::RecordState::kCommitted));
  CHECK_FALSE(fixture.group.message_pending());
  CHECK(try_receive_text(fixture.group) == text);
  CHECK(try_receive_text(fixture.group) == "behind it");
}

TEST_CASE("Group maintain: a still, empty ring gives its pages back; a leaked budget returns") {
  GroupFixture fixture;
  Region& region = fixture.group.region();
  struct stat before {};
  for (int i = 0; i < 200; ++i)
    send_text(fixture.group, std::string(1000, 'p'));
  REQUIRE(::fstat(region.fd(), &before) == 0);
  CHECK(receive_all(fixture.group).size() == 200);
  const uint64_t tail = region.header().tail.load();
  fixture.group.maintain();  // the first look: not known to be still yet
  CHECK(region.header().tail.load() == tail);
  fixture.group.maintain();  // still for a whole period: trimmed
  CHECK(region.header().tail.load() == tail + region.ring_bytes());
  struct stat after {};
  REQUIRE(::fstat(region.fd(), &after) == 0);
  CHECK(after.st_blocks < before.st_blocks);
  fixture.group.maintain();
  fixture.group.maintain();
  CHECK(region.header().tail.load() == tail + region.ring_bytes());  // once, until used again
  send_text(fixture.group, "still works");
  CHECK(try_receive_text(fixture.group) == "still works");

  // A client killed between its budget and its record leaves bytes in the counter.
  REQUIRE(region.reserve_budget(777, 1 << 20));
  fixture.group.maintain();
  CHECK(region.header().stored_bytes.load() == 777);  // not still long enough to tell
  fixture.group.maintain();
  CHECK(region.header().stored_bytes.load() == 0);
  CHECK(fixture.group.budget_corrections() == 1);
  // What the server holds (a delayed message) is not a leak.
  fixture.group.set_send_delay(1000);
  send_text(fixture.group, "later");
  fixture.group.maintain();
  fixture.group.maintain();
  CHECK(region.header().stored_bytes.load() == 5);
  CHECK(fixture.group.budget_corrections() == 1);
}

TEST_CASE(
    "A removed group gives its ring's pages back at once, and lingers in its owner's counts "
    "until the last reference goes") {
  ManualTime time;
  Params params;
  Quotas quotas({.max_memory = 1 << 24, .max_user_memory = 1 << 24, .max_user_groups = 1});
  Registry registry(params, *time.timers, 8, quotas);
  auto installed = registry.install("held", 1000);
  REQUIRE(installed.ok());
  // The only reference besides the registry's, as a FUSE file still open holds it.
  std::shared_ptr<Group> held = std::move(installed.value().group);
  const std::string kilobyte(1024, 'k');
  for (int i = 0; i < 200; ++i)
    send_text(*held, kilobyte);
  struct stat filled {};
  REQUIRE(::fstat(held->region().fd(), &filled) == 0);
  CHECK(filled.st_blocks * 512 >= 200 * 1024);

  REQUIRE(registry.remove("held", 1000).ok());
  struct stat removed {};
  REQUIRE(::fstat(held->region().fd(), &removed) == 0);
  CHECK(removed.st_blocks * 512 <= 64 * 1024);  // the header and client table at most
  // Still referenced: it lingers, and uid 1000 may have only one lingering group.
  CHECK(quotas.user_groups(1000) == 0);
  CHECK(quotas.user_lingering_groups(1000) == 1);
  const auto refused = registry.install("other", 1000);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error() == synchmess::core::kQuotaExceeded);
  held.reset();  // the file's release
  CHECK(quotas.user_lingering_groups(1000) == 0);
  CHECK(registry.install("other", 1000).ok());
}
