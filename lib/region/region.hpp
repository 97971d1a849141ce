// Region: a group's shared-memory region, mapped, and the operations on it (docs/DESIGN.md,
// "The fast path"). ONE implementation: the server (core::Group) and the client library use it.
//
// Contract:
// - push() stores one message at the ring's tail or says why not; pop() takes the oldest
//   available message exactly once or says why not; nothing here blocks: waiting (futex words,
//   wait_*) is the caller's choice, and the server never calls the wait_* functions.
// - FIFO is the order of reservations (a CAS on `tail`); exactly once is the COMMITTED ->
//   CLAIMED CAS of a record's tag; the budget is a CAS loop on `stored_bytes` and is given back
//   when reclaim passes a record (or by release_budget() for what never reached the ring).
// - Everything read from the region is read once, checked, then used: positions must be
//   ordered and within the ring of each other, lengths within the ring, states known; what fails
//   a check is Corrupt (the caller stops using the ring: kFlagCorrupt). Offsets are masked by the
//   ring size from this object's own copy (never re-read), every loop is bounded. A corrupt
//   region may lose or garble its own messages, never crash or hang the process that maps it.
// Thread-safety: every operation, any thread of any process mapping the region.
// Lifetime: the mapping lives as long as this object (move-only); it outlives the descriptor.
// Memory ordering: positions, counters and wait words are sequentially consistent (each is also
// one side of a Dekker pair: a waiter counts itself before its last look, a publisher bumps the
// word before it reads the count); storing a tag COMMITTED releases the payload and the claim's
// CAS acquires it; storing FREE releases the space to the reclaimer, whose acquire load of the
// tag precedes the CAS that hands the space back to producers.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "core/result.hpp"
#include "region/layout.hpp"

namespace synchmess::region {

class Region {
 public:
  // How many CAS tries an operation makes before it gives up (kContended): a member writing
  // the same word in a loop must not keep a server thread.
  static constexpr int kMaxTries = 64;
  // The same for counters whose update has no fallback (the budget, waiter counts, the
  // barrier's sleepers): each lost CAS is another thread's update won, so honest contention
  // never comes near this many; a member writing the word without pause does, and then the
  // update fails (a reservation as a full budget, a count left as it was: its group's garbage).
  static constexpr int kMaxCounterTries = 4096;
  static constexpr unsigned kReclaimBatch = 64;

  Region() noexcept = default;
  ~Region();
  Region(Region&& other) noexcept;
  Region& operator=(Region&& other) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  // Server: a new region with a ring of `ring_bytes` (a power of two in
  // [kMinRingBytes, kMaxRingBytes]): a sealed memfd (no shrink, no grow), mapped, its header
  // written. The descriptor is kept (fd()) to hand to clients.
  static core::Result<Region> create(std::string_view name, uint64_t ring_bytes) noexcept;
  // Client (and tests): maps the region of `memfd` and checks it (seals, identity, sizes);
  // EPROTO when it is not one. Does not take the descriptor over: close it after.
  static core::Result<Region> attach(int memfd) noexcept;

  bool mapped() const noexcept { return base_ != nullptr; }
  int fd() const noexcept { return fd_; }  // the server's memfd; -1 for attached regions
  uint64_t ring_bytes() const noexcept { return ring_bytes_; }
  uint64_t region_bytes() const noexcept { return region_bytes_; }
  // The largest message the ring takes; larger ones go through the device.
  uint64_t max_payload() const noexcept { return ring_bytes_ / 4 - kRecordHeaderBytes; }
  // The most records the ring can hold (each at least a 16-byte header): every walk's bound.
  uint64_t records() const noexcept { return ring_bytes_ / kRecordAlign; }

  Header& header() const noexcept { return *static_cast<Header*>(base_); }
  // Requires slot < kMaxClients.
  ClientEntry& client(unsigned slot) const noexcept;

  // ---- client slots (server) ----
  // Which slots are taken is the server's own knowledge (never read from the region).

  // Assigns a free client slot to process `pid`: its entry cleared, marked in use. None when
  // all kMaxClients - 1 are taken.
  std::optional<uint16_t> open_client(pid_t pid) noexcept;
  // The slot may be assigned again; repair_client() frees it when it is done.
  void free_slot(unsigned slot) noexcept;
  // A slot whose client never got the region (its grant could not be sent): its entry cleared
  // and the slot free, with no walk of the ring (the caller may hold a lock of other groups).
  void release_unused_slot(unsigned slot) noexcept;
  bool slot_assigned(unsigned slot) const noexcept;

  // Where a client tells the server of changes it wants to hear of (server_interest); -1: none.
  void set_notify_fd(int fd) noexcept { notify_fd_ = fd; }

  // ---- messages ----

  enum class Put {
    kStored,     // committed: available
    kNoBudget,   // the budget is full (nothing held)
    kNoRoom,     // the ring has no room (nothing held: the caller goes to the server)
    kDivert,     // the rules send it through the server (door.hpp; nothing held)
    kTooBig,     // larger than max_payload()
    kClosed,     // the group was removed
    kContended,  // kMaxTries CASes lost (nothing held)
    kCorrupt,    // the ring's positions make no sense
  };
  // Stores `payload` from client `slot`. `budget_limit`: the group's max_storage_size (the
  // server passes its own, a client the published one). `charge_budget` false: the caller has
  // reserved the bytes already (the server's budget is this ring's counter too); they then stay
  // reserved whatever the result, for the caller to place or give back.
  Put push(std::span<const std::byte> payload, uint16_t slot, uint64_t budget_limit,
           bool charge_budget) noexcept;

  enum class Take {
    kTaken,      // a message was taken: `length` its size, min(length, out.size()) bytes copied
    kEmpty,      // nothing in the ring
    kPending,    // the oldest message is still being written: retry (or wait on avail_seq)
    kContended,  // kMaxTries CASes lost
    kCorrupt,
  };
  Take pop(std::span<std::byte> out, uint16_t slot, uint32_t& length) noexcept;

  // Hands back the space of consumed records at the front (at most `max_records`), with their
  // budget; returns how many it passed. push() and pop() call it.
  std::size_t reclaim(unsigned max_records = kReclaimBatch) noexcept;

  // The budget counter: a CAS reservation against `limit`, and giving bytes back (never below
  // zero, whatever the region holds).
  bool reserve_budget(uint64_t bytes, uint64_t limit) noexcept;
  void release_budget(uint64_t bytes) noexcept;

  // ---- waiting (clients) ----

  // Counts the caller as a waiting reader (the header's and its client entry's counts) until
  // the matching stop_waiting_reader().
  void start_waiting_reader(uint16_t slot) noexcept;
  void stop_waiting_reader(uint16_t slot) noexcept;
  // Sleeps while avail_seq == seen, at most `timeout`. True when woken or the word moved, false
  // on timeout; EINTR comes back as nullopt.
  std::optional<bool> wait_avail(uint32_t seen, std::chrono::nanoseconds timeout) noexcept;

  // ---- the barrier ----

  // Counts a sleeper in the current generation; returns that generation.
  uint32_t barrier_enter(uint16_t slot) noexcept;
  // A sleeper gives up (a signal): true when it was uncounted, false when an awake already
  // took it (it was woken).
  bool barrier_cancel(uint16_t slot, uint32_t generation) noexcept;
  // The sleeper of `generation` woke: true when the generation moved on.
  bool barrier_passed(uint32_t generation) const noexcept;
  // A woken sleeper's own bookkeeping (its client entry's count).
  void barrier_left(uint16_t slot, uint32_t generation) noexcept;
  // Sleeps while the generation is `generation`, at most `timeout` (nullopt: EINTR).
  std::optional<bool> barrier_wait(uint32_t generation, std::chrono::nanoseconds timeout) noexcept;
  // Ends the current generation: returns its sleepers (of every door) and wakes them.
  uint32_t barrier_awake(uint16_t slot) noexcept;
  uint32_t barrier_sleepers() const noexcept;
  uint32_t barrier_generation() const noexcept;

  // ---- the server's side ----

  void set_flags(uint32_t bits) noexcept;
  void clear_flags(uint32_t bits) noexcept;
  uint32_t flags() const noexcept;
  void set_interest(uint32_t bits) noexcept;
  void clear_interest(uint32_t bits) noexcept;
  void publish_params(uint64_t max_message_size, uint64_t max_storage_size) noexcept;
  void publish_send_delay(uint32_t milliseconds) noexcept;
  // Wakes every waiter of every word (the group closed, a repair changed the ring).
  void wake_all() noexcept;

  // What the server may believe of the ring now: read once, clamped, counted.
  struct Snapshot {
    uint64_t queued = 0;  // available messages (and sends under way) in the ring
    uint64_t stored_bytes = 0;
    uint64_t readers_waiting = 0;
    bool empty = true;
    bool sane = true;
    bool cut = false;  // the walk stopped at `walk_at_most` records before the tail
  };
  // `count_at_most`: stop counting available messages there (readiness needs only one).
  // `walk_at_most`: records looked at, at most (never more than the ring's D / 16).
  Snapshot snapshot(uint64_t count_at_most = ~uint64_t{0},
                    uint64_t walk_at_most = ~uint64_t{0}) const noexcept;
  // The oldest record is a send still under way (reserved, its copy not committed yet): the
  // group is not empty, its next message is nanoseconds away (or, its producer dead, a repair
  // away). A reader that would answer "empty" waits for it instead.
  bool front_pending() const noexcept;

  // A client (slot) is gone: what it held is taken back (docs/DESIGN.md, failure matrix), and
  // at kDone its slot is free. kLater: a reservation may still be untagged (its or a live
  // producer's): call again later, with `grace_over` once the dead client's own untagged
  // reservation may be written over (a live producer tags within nanoseconds).
  enum class Repair { kDone, kLater };
  Repair repair_client(unsigned slot, bool grace_over) noexcept;

  // Corrects the budget counter at a quiet moment: when the ring is empty and no send is in
  // progress it must equal `server_held` (what the server holds: overflow, delayed messages,
  // its own reservations: the caller holds what keeps those still). What a client killed
  // between two steps left behind in the counter goes away here. True when it corrected.
  bool audit(uint64_t server_held) noexcept;

  // An empty ring gives its pages back to the system (a PAD over the whole ring, punched out
  // of the memfd, reclaimed). False when the ring is not empty (nothing done).
  bool trim() noexcept;

 private:
  // A record as read at `position`: its tag and shape, read once. kUntagged: its tag is not
  // for this position (reserved and not written yet, or another lap's); kBroken: an unknown
  // state, or a span that passes `end`, the ring's end (no record straddles it) or a length
  // over max_payload(); kWhole otherwise.
  enum class Shape { kUntagged, kBroken, kWhole };
  struct View {
    Shape shape = Shape::kUntagged;
    RecordHeader* record = nullptr;
    uint64_t tag = 0;
    uint8_t state = 0;
    uint64_t length = 0;
    uint64_t span = 0;
  };
  View view(uint64_t position, uint64_t end) const noexcept;
  // A whole FREE or PAD record: nothing to take, its space to hand back.
  static bool passable(const View& record) noexcept;
  RecordHeader& record_at(uint64_t position) const noexcept;
  static void clear_entry(ClientEntry& entry) noexcept;
  // Tags the `span` bytes at `position` as PADs of `owner`, as push() lays out a reservation:
  // one to the ring's end and one from its start when the span crosses the end (a record never
  // straddles it); the last one holds `budget`. The later piece is tagged first.
  void tag_pads(uint64_t position, uint64_t span, uint16_t owner, uint64_t budget) noexcept;
  std::byte* payload_at(uint64_t position) const noexcept;
  void notify_server(uint16_t slot, uint32_t interest) const noexcept;
  void unmap() noexcept;
  void take_slots(Region& other) noexcept;
  // Moves `head` over the FREE and PAD records at the front (a repair made some), at most
  // `max_records` of them, so that reclaim can give their space and budget back without waiting
  // for the next receive.
  void skip_dead_front(uint64_t max_records) noexcept;

  void* base_ = nullptr;
  int fd_ = -1;         // owned: the server's memfd
  int notify_fd_ = -1;  // not owned
  uint64_t ring_bytes_ = 0;
  uint64_t region_bytes_ = 0;
  std::array<std::atomic<uint64_t>, kMaxClients / 64> assigned_{};  // the server's slot bitmap
};

}  // namespace synchmess::region
