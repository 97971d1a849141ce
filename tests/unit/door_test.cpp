// Which door (lib/region/door.hpp): the rules by which a member's send or receive takes the
// region's ring or the server, table by table; and the server's side of them: every state in
// which a Group keeps messages, writers or a delay of its own is published so that the rules
// send clients through it, and Region::push refuses a client that did not ask.
#include <doctest/doctest.h>

#include <string>

#include "region/door.hpp"
#include "test_support.hpp"

using namespace synchmess::test;
using synchmess::region::Door;
using synchmess::region::Published;
using synchmess::region::read_published;
using synchmess::region::receive_door;
using synchmess::region::Region;
using synchmess::region::send_door;
namespace region = synchmess::region;

namespace {

constexpr uint64_t kPayload = 1000;  // the ring's largest message, in these tables

Published open_group() {
  return {.flags = 0, .send_delay_ms = 0, .max_message_size = 4096, .max_storage_size = 8192};
}

Door send_before(const Published& state, uint64_t length) {
  return send_door(state, length, kPayload, std::nullopt).door;
}

}  // namespace

TEST_CASE("Which door, send: before the ring") {
  Published state = open_group();
  CHECK(send_before(state, 100) == Door::kRing);
  CHECK(send_before(state, kPayload) == Door::kRing);
  CHECK(send_before(state, kPayload + 1) == Door::kServer);  // too big for the ring

  const auto over_limit = send_door(state, 4097, kPayload, std::nullopt);
  CHECK(over_limit.door == Door::kFail);
  CHECK(over_limit.error == EMSGSIZE);

  state.send_delay_ms = 5;
  CHECK(send_before(state, 100) == Door::kServer);
  state = open_group();
  for (const uint32_t flag : {region::kFlagOverflow, region::kFlagWritersWait, region::kFlagCorrupt,
                              region::kFlagClosed}) {
    CAPTURE(flag);
    state.flags = flag;
    CHECK(send_before(state, 100) == Door::kServer);
  }
  // A removed group: the device answers (ENODEV), even for a message over the limit.
  state.flags = region::kFlagClosed;
  CHECK(send_before(state, 4097) == Door::kServer);
}

TEST_CASE("Which door, send: after the ring answered") {
  const Published state = open_group();
  const auto after = [&](Region::Put put, uint64_t length = 100, bool may_wait = false) {
    return send_door(state, length, kPayload, put, may_wait);
  };
  CHECK(after(Region::Put::kStored).door == Door::kDone);
  // A full budget: ENOSPC at once, unless the call may wait (the server parks it); one larger
  // than the whole budget never fits.
  CHECK(after(Region::Put::kNoBudget).door == Door::kFail);
  CHECK(after(Region::Put::kNoBudget).error == ENOSPC);
  CHECK(after(Region::Put::kNoBudget, 100, true).door == Door::kServer);
  CHECK(after(Region::Put::kNoBudget, 900, true).door == Door::kServer);
  const auto too_big = send_door({.max_message_size = 4096, .max_storage_size = 800}, 900, kPayload,
                                 Region::Put::kNoBudget, true);
  CHECK(too_big.door == Door::kFail);
  CHECK(too_big.error == ENOSPC);
  for (const auto put : {Region::Put::kNoRoom, Region::Put::kDivert, Region::Put::kTooBig,
                         Region::Put::kClosed, Region::Put::kContended, Region::Put::kCorrupt}) {
    CAPTURE(static_cast<int>(put));
    CHECK(after(put).door == Door::kServer);
  }
}

TEST_CASE("Which door, receive: before and after a look at the ring") {
  CHECK(receive_door(0, std::nullopt, false).door == Door::kRing);
  CHECK(receive_door(region::kFlagOverflow, std::nullopt, false).door == Door::kRing);  // older
  CHECK(receive_door(region::kFlagCorrupt, std::nullopt, false).door == Door::kServer);
  CHECK(receive_door(region::kFlagClosed, std::nullopt, false).door == Door::kServer);
  const auto removed_while_waiting = receive_door(region::kFlagClosed, std::nullopt, true);
  CHECK(removed_while_waiting.door == Door::kFail);
  CHECK(removed_while_waiting.error == EIDRM);

  CHECK(receive_door(0, Region::Take::kTaken, false).door == Door::kDone);
  // A message taken is the caller's, whatever the flags became meanwhile (exactly once).
  for (const uint32_t flag : {region::kFlagClosed, region::kFlagCorrupt, region::kFlagOverflow}) {
    CAPTURE(flag);
    CHECK(receive_door(flag, Region::Take::kTaken, false).door == Door::kDone);
    CHECK(receive_door(flag, Region::Take::kTaken, true).door == Door::kDone);
  }
  CHECK(receive_door(0, Region::Take::kCorrupt, false).door == Door::kServer);
  for (const auto take : {Region::Take::kEmpty, Region::Take::kPending, Region::Take::kContended}) {
    CAPTURE(static_cast<int>(take));
    CHECK(receive_door(0, take, false).door == Door::kRing);  // wait on the ring
    // Nothing in the ring, messages behind it: only the server has them.
    CHECK(receive_door(region::kFlagOverflow, take, false).door == Door::kServer);
  }
}

TEST_CASE("Which door, the server's side: what a Group keeps of its own sends clients to it") {
  GroupFixture fixture;
  fixture.set_params(4096, uint64_t{1} << 20);
  Group& group = fixture.group;
  const auto client_door = [&] {
    return send_door(read_published(group.region().header()), 100, group.region().max_payload(),
                     std::nullopt)
        .door;
  };
  const auto client_push = [&] {
    const auto slot = group.region().open_client(4242);
    REQUIRE(slot.has_value());
    const Region::Put put =
        group.region().push(bytes_of("client"), *slot, uint64_t{1} << 20, /*charge_budget=*/true);
    group.region().free_slot(*slot);
    return put;
  };
  REQUIRE(client_door() == Door::kRing);

  SUBCASE("a send delay") {
    group.set_send_delay(50);
    CHECK(client_door() == Door::kServer);
    CHECK(client_push() == Region::Put::kDivert);
    group.set_send_delay(0);
    CHECK(client_door() == Door::kRing);
  }
  SUBCASE("messages behind the ring (the overflow)") {
    const std::string filler(4000, 'x');
    while ((group.region().flags() & region::kFlagOverflow) == 0)
      send_text(group, filler);
    CHECK(client_door() == Door::kServer);
    CHECK(client_push() == Region::Put::kDivert);
    CHECK(receive_door(group.region().flags(), Region::Take::kEmpty, false).door == Door::kServer);
    receive_all(group);
    CHECK(client_door() == Door::kRing);
  }
  SUBCASE("writers parked for room") {
    fixture.set_params(8, 8);
    RecordingWaiter writer;
    send_text(group, "12345678");
    auto parked = group.send_or_park(bytes_of("next"), 1000, writer, Group::kWaitForever);
    REQUIRE(parked.ok());
    REQUIRE_FALSE(parked.value().has_value());
    CHECK(client_door() == Door::kServer);
    CHECK(client_push() == Region::Put::kDivert);
    receive_all(group);
    CHECK(writer.completions() == 1);
    CHECK(client_door() == Door::kRing);
  }
  SUBCASE("a removed group") {
    group.close(std::errc::identifier_removed);
    CHECK(client_door() == Door::kServer);
    CHECK(client_push() == Region::Put::kClosed);
  }
}
