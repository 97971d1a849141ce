// Which door a member's call takes: the region's ring (the library's fast path) or the server
// (the device). The rules live here and nowhere else, so that changing one (the send delay, the
// overflow, a new flag) is one edit: the client library asks send_door() / receive_door() before
// and after it tries the ring, Region::push() refuses a client's push that sends_through_server()
// (a library that skipped the question still cannot land a message in front of the server's
// overflow or around its delay), and the server's tests check that every state in which it keeps
// messages or writers of its own is published as one of these flags (tests/unit/door_test.cpp).
//
// Contract: pure functions of what they are given (no loads, no system calls): the caller reads
// the header once (read_published) and passes what it knows of the call. They never block.
// Memory ordering: read_published() loads each field once, sequentially consistent. The rules
// read before a push are a hint; what keeps FIFO across doors is push()'s own look at the flags
// after its reservation: the server sets OVERFLOW before its own message leaves the ring's
// order (it holds publish_mu_ from its failed push to the flag, and a batch sets it first).
#pragma once

#include <errno.h>

#include <cstdint>
#include <optional>

#include "region/layout.hpp"
#include "region/region.hpp"

namespace synchmess::region {

// What the server publishes for the clients, as read once.
struct Published {
  uint32_t flags = 0;
  uint32_t send_delay_ms = 0;
  uint64_t max_message_size = 0;
  uint64_t max_storage_size = 0;
};

inline Published read_published(const Header& header) noexcept {
  return {header.flags.load(), header.send_delay_ms.load(), header.max_message_size.load(),
          header.max_storage_size.load()};
}

// The flags that send a member's send through the server: it holds messages behind the ring
// (OVERFLOW) or writers waiting for room (WRITERS_WAIT), whom nobody may overtake; the ring is
// broken (CORRUPT); the group is gone (CLOSED: the device answers ENODEV).
inline constexpr uint32_t kSendThroughServer =
    kFlagClosed | kFlagOverflow | kFlagWritersWait | kFlagCorrupt;
// The flags that send a receive through the server before it looks at the ring: the ring is
// broken, or the group is gone (the device answers; a receive that already waited on the ring
// answers EIDRM itself). OVERFLOW matters only once the ring is empty (the ring is older).
inline constexpr uint32_t kReceiveThroughServer = kFlagClosed | kFlagCorrupt;

// Whatever its size, a send goes through the server: the flags say so, or the group has a send
// delay (the server's to keep: its timers). Region::push() refuses a client's push on this.
constexpr bool sends_through_server(uint32_t flags, uint32_t send_delay_ms) noexcept {
  return (flags & kSendThroughServer) != 0 || send_delay_ms != 0;
}

enum class Door : uint8_t {
  kRing,    // use the ring (a receive: look, or wait on avail_seq, again)
  kServer,  // go through the device: the server answers
  kFail,    // answer `error` now, without the server
  kDone,    // the ring did it
};

struct Way {
  Door door;
  int error = 0;  // kFail: the errno
};

// A send of `length` bytes (> 0). `ring`: nullopt before the ring is tried, then what
// Region::push answered. `may_wait`: the call has a send timeout and may block (only asked when
// the budget is full).
constexpr Way send_door(const Published& state, uint64_t length, uint64_t max_payload,
                        std::optional<Region::Put> ring, bool may_wait = false) noexcept {
  if (!ring) {
    if ((state.flags & kFlagClosed) != 0) return {Door::kServer};
    if (length > state.max_message_size) return {Door::kFail, EMSGSIZE};
    if (length > max_payload || sends_through_server(state.flags, state.send_delay_ms)) {
      return {Door::kServer};
    }
    return {Door::kRing};
  }
  switch (*ring) {
    case Region::Put::kStored:
      return {Door::kDone};
    case Region::Put::kNoBudget:
      // At once ENOSPC, unless this send may wait for room: the server keeps the waiting
      // writers, in arrival order, for both doors. One larger than the budget never fits.
      if (length > state.max_storage_size || !may_wait) return {Door::kFail, ENOSPC};
      return {Door::kServer};
    default:
      return {Door::kServer};  // no room in the ring, diverted, contended, broken, closed
  }
}

// A receive. `ring`: nullopt before the ring is looked at, then what Region::pop answered.
// `waited`: the call already waited on the ring. A message taken is the caller's whatever the
// flags say now (exactly once: it is out of the ring).
constexpr Way receive_door(uint32_t flags, std::optional<Region::Take> ring, bool waited) noexcept {
  if (ring == Region::Take::kTaken) return {Door::kDone};
  if ((flags & kFlagClosed) != 0) {
    return waited ? Way{Door::kFail, EIDRM} : Way{Door::kServer};  // the device says ENODEV
  }
  if ((flags & kReceiveThroughServer) != 0) return {Door::kServer};
  if (!ring) return {Door::kRing};
  switch (*ring) {
    case Region::Take::kCorrupt:
      return {Door::kServer};
    default:
      // Messages behind the ring (the server's overflow) are younger than the ring's and only
      // the server has them: once the ring has nothing, the server answers.
      if ((flags & kFlagOverflow) != 0) return {Door::kServer};
      return {Door::kRing};
  }
}

}  // namespace synchmess::region
