// The layout of a group's shared-memory region (docs/DESIGN.md, "The fast path"): what lives at
// which offset of the memfd the server creates and its clients map. Offsets from the start of
// the region, little-endian, no pointers: every process maps it at its own address.
//
// Contract: the server writes the identity line once at creation and publishes the parameter
// line; every other field is shared state that any member may change, so whoever reads it must
// treat it as untrusted (region.hpp checks what it reads).
// Memory ordering: see region.hpp; every field is a lock-free, address-free std::atomic, so the
// same object works in every process that maps the region.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace synchmess::region {

inline constexpr uint32_t kMagic = 0x524d5953;  // "SYMR"
// 2: no space_seq word, no STOPPING flag (neither had a reader).
inline constexpr uint32_t kLayoutVersion = 2;
inline constexpr std::size_t kHeaderBytes = 4096;
inline constexpr std::size_t kClientTableBytes = 16384;
inline constexpr std::size_t kRingOffset = kHeaderBytes + kClientTableBytes;
inline constexpr unsigned kMaxClients = 256;  // slot 0 is the server's own
inline constexpr uint16_t kServerSlot = 0;
inline constexpr uint64_t kMinRingBytes = uint64_t{64} << 10;
inline constexpr uint64_t kMaxRingBytes = uint64_t{16} << 20;
inline constexpr uint64_t kDefaultRingBytes = uint64_t{256} << 10;
inline constexpr std::size_t kRecordAlign = 16;
inline constexpr std::size_t kRecordHeaderBytes = 16;

// header.flags
inline constexpr uint32_t kFlagClosed = 1u << 0;       // the group was removed: EIDRM
inline constexpr uint32_t kFlagOverflow = 1u << 1;     // the server holds messages behind the ring
inline constexpr uint32_t kFlagWritersWait = 1u << 2;  // device writers wait for room
inline constexpr uint32_t kFlagCorrupt = 1u << 3;      // the server found the ring broken

// header.server_interest: the server wants to hear (eventfd) of ...
inline constexpr uint32_t kInterestReaders = 1u << 0;  // new messages (parked device readers)
inline constexpr uint32_t kInterestPollers = 1u << 1;  // any change of readiness (poll handles)
inline constexpr uint32_t kInterestRoom = 1u << 2;     // freed room (overflow, parked writers)
inline constexpr uint32_t kInterestBarrier = 1u << 3;  // awakes (parked device sleepers)

// Record states (the low 8 bits of a tag).
enum class RecordState : uint8_t {
  kReserved = 1,   // a producer owns it and is copying its payload
  kCommitted = 2,  // available, in FIFO position
  kClaimed = 3,    // a consumer took it and is copying it out
  kFree = 4,       // consumed: reclaim passes over it and gives its budget back
  kPad = 5,        // padding: skipped; gives back `budget` bytes (an abandoned reservation)
};

// A tag: [position / 16 : 40][owner slot : 16][state : 8].
constexpr uint64_t make_tag(uint64_t position, uint16_t owner, RecordState state) noexcept {
  return ((position / kRecordAlign) & ((uint64_t{1} << 40) - 1)) << 24 | uint64_t{owner} << 8 |
         static_cast<uint8_t>(state);
}
constexpr bool tag_is_for(uint64_t tag, uint64_t position) noexcept {
  return (tag >> 24) == ((position / kRecordAlign) & ((uint64_t{1} << 40) - 1));
}
constexpr uint16_t tag_owner(uint64_t tag) noexcept {
  return static_cast<uint16_t>(tag >> 8);
}
constexpr uint8_t tag_state(uint64_t tag) noexcept {
  return static_cast<uint8_t>(tag);
}

struct RecordHeader {
  std::atomic<uint64_t> tag;
  std::atomic<uint32_t> length;  // payload bytes (a PAD: its span minus this header)
  std::atomic<uint32_t> budget;  // bytes of the group's budget this record holds
};
static_assert(sizeof(RecordHeader) == kRecordHeaderBytes, "a record header is 16 bytes");

// Every record starts at a multiple of 16: positions are only ever advanced by spans (multiples
// of 16), so any other value of a shared position is a peer's garbage.
constexpr bool is_record_start(uint64_t position) noexcept {
  return position % kRecordAlign == 0;
}

// The bytes a record of `length` payload bytes spans.
constexpr uint64_t record_span(uint64_t length) noexcept {
  return (kRecordHeaderBytes + length + kRecordAlign - 1) & ~uint64_t{kRecordAlign - 1};
}

struct alignas(64) Header {
  // Identity (written once by the server).
  uint32_t magic;
  uint32_t version;
  uint32_t header_bytes;
  uint32_t client_count;
  uint64_t ring_offset;
  uint64_t ring_bytes;
  uint64_t region_bytes;
  // Published by the server.
  alignas(64) std::atomic<uint64_t> max_message_size;
  std::atomic<uint64_t> max_storage_size;
  std::atomic<uint32_t> send_delay_ms;
  std::atomic<uint32_t> flags;
  std::atomic<uint32_t> server_interest;
  // The ring's positions, each on a line of its own.
  alignas(64) std::atomic<uint64_t> tail;
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> reclaim;
  // The budget: available, delayed and reserved payload bytes, whichever door.
  alignas(64) std::atomic<uint64_t> stored_bytes;
  // Wait words (futexes are 32-bit). Only readers wait on the ring: a writer that must wait
  // for room waits in the server (DESIGN.md, "Waiting").
  alignas(64) std::atomic<uint32_t> avail_seq;
  std::atomic<uint32_t> readers_waiting;
  // The barrier: [generation : 32 | sleepers : 32]; the futex is the generation half.
  alignas(64) std::atomic<uint64_t> barrier;
};
static_assert(sizeof(Header) <= kHeaderBytes, "the header fits its page");

struct alignas(64) ClientEntry {
  std::atomic<uint32_t> in_use;  // written by the server only
  std::atomic<uint32_t> pid;     // likewise
  // A send in progress (what a client killed mid-send holds; see Region::repair_client).
  std::atomic<uint64_t> pending_bytes;
  std::atomic<uint64_t> pending_position;
  std::atomic<uint64_t> pending_span;
  // This client's threads waiting in a receive, and on the barrier ([generation | count]).
  std::atomic<uint32_t> readers_waiting;
  std::atomic<uint64_t> barrier;
};
static_assert(sizeof(ClientEntry) == 64, "one line per client");
static_assert(kMaxClients * sizeof(ClientEntry) <= kClientTableBytes, "the table fits its pages");
static_assert(kMaxClients % 64 == 0, "the server's slot bitmap is made of 64-bit words");

// Shared between processes: the atomics must be free of locks and of addresses.
static_assert(std::atomic<uint64_t>::is_always_lock_free, "64-bit atomics without locks");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "32-bit atomics without locks");

}  // namespace synchmess::region
