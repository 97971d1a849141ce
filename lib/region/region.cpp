#include "region/region.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "region/door.hpp"

namespace synchmess::region {
namespace {

using core::make_error;

constexpr int kWakeAll = 0x7fffffff;

// Shared futexes (not FUTEX_PRIVATE_FLAG): waiters and wakers live in different processes.
long futex(void* word, int op, uint32_t value, const timespec* timeout) noexcept {
  return ::syscall(SYS_futex, word, op, value, timeout, nullptr, 0);
}

std::optional<bool> futex_wait(void* word, uint32_t expected,
                               std::chrono::nanoseconds timeout) noexcept {
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  const timespec relative{static_cast<time_t>(seconds.count()),
                          static_cast<long>((timeout - seconds).count())};
  if (futex(word, FUTEX_WAIT, expected, &relative) == 0) return true;
  if (errno == EAGAIN) return true;  // the word moved before we slept
  if (errno == EINTR) return std::nullopt;
  return false;  // ETIMEDOUT
}

void futex_wake(void* word, int count) noexcept {
  futex(word, FUTEX_WAKE, static_cast<uint32_t>(count), nullptr);
}

// Payload copies. A consumer that read `head` just before the ring went round may look for a
// tag at a position that is now inside another record's payload: it reads that word
// atomically, finds the tag wrong and gives up, so the protocol never uses the bytes. Under
// ThreadSanitizer the payload is copied with relaxed atomic word accesses so that this benign
// overlap is not reported; elsewhere memcpy.
#if defined(__SANITIZE_THREAD__)
void copy_into_ring(std::byte* to, const std::byte* from, size_t size) noexcept {
  for (size_t i = 0; i < size; ++i) {
    std::atomic_ref<std::byte>(to[i]).store(from[i], std::memory_order_relaxed);
  }
}
void copy_out_of_ring(std::byte* to, const std::byte* from, size_t size) noexcept {
  for (size_t i = 0; i < size; ++i) {
    to[i] = std::atomic_ref<const std::byte>(from[i]).load(std::memory_order_relaxed);
  }
}
#else
void copy_into_ring(std::byte* to, const std::byte* from, size_t size) noexcept {
  std::memcpy(to, from, size);
}
void copy_out_of_ring(std::byte* to, const std::byte* from, size_t size) noexcept {
  std::memcpy(to, from, size);
}
#endif

constexpr bool is_power_of_two(uint64_t value) noexcept {
  return value != 0 && (value & (value - 1)) == 0;
}

// Subtracts without going below zero (a corrupt region must not make a counter wrap).
void saturating_sub(std::atomic<uint64_t>& counter, uint64_t amount) noexcept {
  uint64_t value = counter.load();
  for (int tries = 0; tries < Region::kMaxCounterTries; ++tries) {
    const uint64_t next = value > amount ? value - amount : 0;
    if (counter.compare_exchange_weak(value, next)) return;
  }
}
void saturating_sub(std::atomic<uint32_t>& counter, uint32_t amount) noexcept {
  uint32_t value = counter.load();
  for (int tries = 0; tries < Region::kMaxCounterTries; ++tries) {
    const uint32_t next = value > amount ? value - amount : 0;
    if (counter.compare_exchange_weak(value, next)) return;
  }
}

// The futex half of the barrier word: its generation (the high 32 bits, little-endian).
void* barrier_futex(Header& header) noexcept {
  return reinterpret_cast<char*>(&header.barrier) + sizeof(uint32_t);
}
constexpr uint64_t barrier_word(uint32_t generation, uint32_t sleepers) noexcept {
  return uint64_t{generation} << 32 | sleepers;
}
constexpr uint32_t generation_of(uint64_t word) noexcept {
  return static_cast<uint32_t>(word >> 32);
}
constexpr uint32_t sleepers_of(uint64_t word) noexcept {
  return static_cast<uint32_t>(word);
}

}  // namespace

// ---- life ----

Region::~Region() {
  unmap();
}

Region::Region(Region&& other) noexcept
    : base_(other.base_),
      fd_(other.fd_),
      notify_fd_(other.notify_fd_),
      ring_bytes_(other.ring_bytes_),
      region_bytes_(other.region_bytes_) {
  take_slots(other);
  other.base_ = nullptr;
  other.fd_ = -1;
}

Region& Region::operator=(Region&& other) noexcept {
  if (this != &other) {
    unmap();
    base_ = other.base_;
    fd_ = other.fd_;
    notify_fd_ = other.notify_fd_;
    ring_bytes_ = other.ring_bytes_;
    region_bytes_ = other.region_bytes_;
    take_slots(other);
    other.base_ = nullptr;
    other.fd_ = -1;
  }
  return *this;
}

void Region::take_slots(Region& other) noexcept {
  for (std::size_t word = 0; word < assigned_.size(); ++word) {
    assigned_[word].store(other.assigned_[word].exchange(0));
  }
}

void Region::unmap() noexcept {
  if (base_ != nullptr) ::munmap(base_, region_bytes_);
  if (fd_ >= 0) ::close(fd_);
  base_ = nullptr;
  fd_ = -1;
}

core::Result<Region> Region::create(std::string_view name, uint64_t ring_bytes) noexcept {
  if (!is_power_of_two(ring_bytes) || ring_bytes < kMinRingBytes || ring_bytes > kMaxRingBytes) {
    return make_error(std::errc::invalid_argument);
  }
  char memfd_name[64];
  std::snprintf(memfd_name, sizeof memfd_name, "synchmess:%.*s",
                static_cast<int>(std::min<size_t>(name.size(), 50)), name.data());
  const int fd = ::memfd_create(memfd_name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return make_error(static_cast<std::errc>(errno));
  const uint64_t bytes = kRingOffset + ring_bytes;
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    const int error = errno;
    ::close(fd);
    return make_error(static_cast<std::errc>(error));
  }
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    const int error = errno;
    ::close(fd);
    return make_error(static_cast<std::errc>(error));
  }
  Region region;
  region.base_ = base;
  region.fd_ = fd;
  region.ring_bytes_ = ring_bytes;
  region.region_bytes_ = bytes;
  // The pages come zeroed: every atomic starts at 0 and no tag is valid for any position.
  Header& header = region.header();
  header.magic = kMagic;
  header.version = kLayoutVersion;
  header.header_bytes = kHeaderBytes;
  header.client_count = kMaxClients;
  header.ring_offset = kRingOffset;
  header.ring_bytes = ring_bytes;
  header.region_bytes = bytes;
  region.client(kServerSlot).in_use.store(1);
  region.assigned_[0].store(1);  // slot 0: the server
  return region;
}

core::Result<Region> Region::attach(int memfd) noexcept {
  struct stat st {};
  if (::fstat(memfd, &st) != 0) return make_error(static_cast<std::errc>(errno));
  const int seals = ::fcntl(memfd, F_GET_SEALS);
  constexpr int kNeeded = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  const uint64_t bytes = static_cast<uint64_t>(st.st_size);
  if (seals < 0 || (seals & kNeeded) != kNeeded || bytes < kRingOffset + kMinRingBytes ||
      bytes > kRingOffset + kMaxRingBytes) {
    return make_error(std::errc::protocol_error);
  }
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (base == MAP_FAILED) return make_error(static_cast<std::errc>(errno));
  Region region;
  region.base_ = base;
  region.region_bytes_ = bytes;
  // The identity, read once: it must describe exactly this mapping.
  const Header& header = region.header();
  const uint64_t ring_bytes = header.ring_bytes;
  if (header.magic != kMagic || header.version != kLayoutVersion ||
      header.ring_offset != kRingOffset || !is_power_of_two(ring_bytes) ||
      ring_bytes < kMinRingBytes || kRingOffset + ring_bytes != bytes ||
      header.region_bytes != bytes) {
    return make_error(std::errc::protocol_error);
  }
  region.ring_bytes_ = ring_bytes;
  return region;
}

std::optional<uint16_t> Region::open_client(pid_t pid) noexcept {
  for (std::size_t word = 0; word < assigned_.size(); ++word) {
    uint64_t bits = assigned_[word].load();
    while (bits != ~uint64_t{0}) {
      const unsigned bit = static_cast<unsigned>(std::countr_one(bits));
      if (!assigned_[word].compare_exchange_weak(bits, bits | uint64_t{1} << bit)) continue;
      const auto slot = static_cast<uint16_t>(word * 64 + bit);
      ClientEntry& entry = client(slot);
      clear_entry(entry);  // whatever an earlier holder (or a member) left in it goes first
      entry.pid.store(static_cast<uint32_t>(pid));
      entry.in_use.store(1);
      return slot;
    }
  }
  return std::nullopt;
}

void Region::free_slot(unsigned slot) noexcept {
  if (slot == kServerSlot || slot >= kMaxClients) return;
  assigned_[slot / 64].fetch_and(~(uint64_t{1} << (slot % 64)));
}

void Region::release_unused_slot(unsigned slot) noexcept {
  if (slot == kServerSlot || slot >= kMaxClients) return;
  clear_entry(client(slot));
  free_slot(slot);
}

void Region::clear_entry(ClientEntry& entry) noexcept {
  entry.in_use.store(0);
  entry.pid.store(0);
  entry.pending_bytes.store(0);
  entry.pending_position.store(0);
  entry.pending_span.store(0);
  entry.readers_waiting.store(0);
  entry.barrier.store(0);
}

bool Region::slot_assigned(unsigned slot) const noexcept {
  return slot < kMaxClients && (assigned_[slot / 64].load() >> (slot % 64) & 1) != 0;
}

ClientEntry& Region::client(unsigned slot) const noexcept {
  auto* table = reinterpret_cast<ClientEntry*>(static_cast<char*>(base_) + kHeaderBytes);
  return table[slot % kMaxClients];
}

RecordHeader& Region::record_at(uint64_t position) const noexcept {
  // Masked to a record start as well: whatever position a peer wrote, the 16-byte header lies
  // aligned and inside the ring (callers refuse unaligned positions before they get here).
  const uint64_t offset = position & (ring_bytes_ - 1) & ~uint64_t{kRecordAlign - 1};
  return *reinterpret_cast<RecordHeader*>(static_cast<char*>(base_) + kRingOffset + offset);
}

std::byte* Region::payload_at(uint64_t position) const noexcept {
  return reinterpret_cast<std::byte*>(&record_at(position)) + kRecordHeaderBytes;
}

Region::View Region::view(uint64_t position, uint64_t end) const noexcept {
  View view;
  view.record = &record_at(position);
  if (!is_record_start(position)) {  // only a peer's garbage puts a position there
    view.shape = Shape::kBroken;
    return view;
  }
  view.tag = view.record->tag.load(std::memory_order_acquire);
  // State 0 is no tag at all: zeroed memory (a fresh or punched ring) reads as a tag for
  // position 0 of lap 0 otherwise.
  if (!tag_is_for(view.tag, position) || tag_state(view.tag) == 0) return view;  // kUntagged
  view.state = tag_state(view.tag);
  view.length = view.record->length.load(std::memory_order_relaxed);
  const bool pad = view.state == static_cast<uint8_t>(RecordState::kPad);
  view.span = pad ? kRecordHeaderBytes + view.length : record_span(view.length);
  const uint64_t offset = position & (ring_bytes_ - 1);
  const bool known = view.state >= static_cast<uint8_t>(RecordState::kReserved) &&
                     view.state <= static_cast<uint8_t>(RecordState::kPad);
  view.shape = !known || view.span > end - position || offset + view.span > ring_bytes_ ||
                       (!pad && view.length > max_payload())
                   ? Shape::kBroken
                   : Shape::kWhole;
  return view;
}

void Region::notify_server(uint16_t slot, uint32_t interest) const noexcept {
  if (slot == kServerSlot || notify_fd_ < 0) return;
  if ((header().server_interest.load() & interest) == 0) return;
  const uint64_t one = 1;
  (void)!::write(notify_fd_, &one, sizeof one);  // EAGAIN (the counter is full): it is readable
}

// ---- the budget ----

bool Region::reserve_budget(uint64_t bytes, uint64_t limit) noexcept {
  std::atomic<uint64_t>& stored = header().stored_bytes;
  uint64_t value = stored.load();
  // Bounded: a member writing the counter in a loop makes the CAS lose; after
  // kMaxCounterTries the reservation fails as a full budget would (its group's sends: ENOSPC).
  for (int tries = 0; tries < kMaxCounterTries; ++tries) {
    if (bytes > limit || value > limit - bytes) return false;
    if (stored.compare_exchange_weak(value, value + bytes)) return true;
  }
  return false;
}

void Region::release_budget(uint64_t bytes) noexcept {
  saturating_sub(header().stored_bytes, bytes);
}

// ---- messages ----

Region::Put Region::push(std::span<const std::byte> payload, uint16_t slot, uint64_t budget_limit,
                         bool charge_budget) noexcept {
  const uint64_t length = payload.size();
  if (length > max_payload()) return Put::kTooBig;
  Header& header = this->header();
  // A client's push follows the rules of which door (door.hpp), whether or not its caller
  // asked. The server decides for itself: it knows whether its group is closed or holds an
  // overflow (it checks before it pushes); the region's flags, which any member can write, are
  // for the clients.
  if (slot != kServerSlot) {
    const uint32_t flags = header.flags.load();
    if ((flags & kFlagClosed) != 0) return Put::kClosed;
    if (sends_through_server(flags, header.send_delay_ms.load())) return Put::kDivert;
  }
  ClientEntry* entry = slot != kServerSlot ? &client(slot) : nullptr;

  // 1. The budget, with the intent noted first (what a client killed here holds: pending).
  if (charge_budget) {
    if (entry != nullptr) {
      entry->pending_span.store(0);
      entry->pending_bytes.store(length);
    }
    if (!reserve_budget(length, budget_limit)) {
      if (entry != nullptr) entry->pending_bytes.store(0);
      return Put::kNoBudget;
    }
  }
  const auto give_back = [&] {
    if (charge_budget) release_budget(length);
    if (entry != nullptr) entry->pending_bytes.store(0);
  };

  // 2. Ring space at the tail: the record, and a PAD before it when it would straddle the end.
  const uint64_t span = record_span(length);
  uint64_t position = 0;
  uint64_t pad = 0;
  uint64_t tail = header.tail.load();
  for (int tries = 0;; ++tries) {
    if (tries == kMaxTries) {
      give_back();
      return Put::kContended;
    }
    const uint64_t reclaim = header.reclaim.load();
    if (tail < reclaim || tail - reclaim > ring_bytes_ || !is_record_start(tail)) {
      // `tail` may be stale (others went round the ring since): only a tail that did not move
      // while `reclaim` was read makes the pair a fact.
      const uint64_t now = header.tail.load();
      if (now != tail) {
        tail = now;
        continue;
      }
      give_back();
      return Put::kCorrupt;
    }
    const uint64_t offset = tail & (ring_bytes_ - 1);
    pad = offset + span > ring_bytes_ ? ring_bytes_ - offset : 0;
    if (tail + pad + span - reclaim > ring_bytes_) {
      // Full, unless consumed records at the front wait for their reclaim.
      if (this->reclaim() == 0) {
        give_back();
        return Put::kNoRoom;
      }
      tail = header.tail.load();
      continue;
    }
    if (entry != nullptr) {
      entry->pending_position.store(tail);
      entry->pending_span.store(pad + span);
    }
    if (header.tail.compare_exchange_weak(tail, tail + pad + span)) {
      position = tail;
      break;
    }
  }

  // 3. Tag the record RESERVED (then the PAD: a repair finds the start untagged otherwise).
  const uint64_t at = position + pad;
  RecordHeader& record = record_at(at);
  record.length.store(static_cast<uint32_t>(length), std::memory_order_relaxed);
  record.budget.store(static_cast<uint32_t>(length), std::memory_order_relaxed);
  record.tag.store(make_tag(at, slot, RecordState::kReserved), std::memory_order_release);
  if (pad != 0) {
    RecordHeader& padding = record_at(position);
    padding.length.store(static_cast<uint32_t>(pad - kRecordHeaderBytes),
                         std::memory_order_relaxed);
    padding.budget.store(0, std::memory_order_relaxed);
    padding.tag.store(make_tag(position, slot, RecordState::kPad), std::memory_order_release);
  }
  if (entry != nullptr) entry->pending_bytes.store(0);  // the record holds the bytes now

  // 4. The server may have queued messages or writers since we looked: nobody overtakes them.
  if (slot != kServerSlot && (header.flags.load() & kSendThroughServer) != 0) {
    record.length.store(static_cast<uint32_t>(span - kRecordHeaderBytes),
                        std::memory_order_relaxed);
    record.budget.store(charge_budget ? static_cast<uint32_t>(length) : 0,
                        std::memory_order_relaxed);
    record.tag.store(make_tag(at, slot, RecordState::kPad), std::memory_order_release);
    header.avail_seq.fetch_add(1);  // a reader waiting for this record moves on
    if (header.readers_waiting.load() != 0) futex_wake(&header.avail_seq, kWakeAll);
    reclaim();
    return Put::kDivert;
  }

  // 5. The payload, then COMMITTED: available.
  if (length != 0) copy_into_ring(payload_at(at), payload.data(), length);
  record.tag.store(make_tag(at, slot, RecordState::kCommitted), std::memory_order_release);
  header.avail_seq.fetch_add(1);
  if (header.readers_waiting.load() != 0) futex_wake(&header.avail_seq, 1);
  notify_server(slot, kInterestReaders | kInterestPollers);
  return Put::kStored;
}

Region::Take Region::pop(std::span<std::byte> out, uint16_t slot, uint32_t& length) noexcept {
  Header& header = this->header();
  for (int tries = 0; tries < kMaxTries; ++tries) {
    const uint64_t head = header.head.load();
    const uint64_t tail = header.tail.load();
    if (head == tail) {
      // Records passed on the way (PADs, claims finished elsewhere) may wait for their reclaim.
      if (header.reclaim.load() != head) reclaim();
      return Take::kEmpty;
    }
    // What was read at a `head` that moved meanwhile (consumers went on, perhaps round the
    // ring) proves nothing: look again. Only an unmoved head makes a verdict.
    if (head > tail || tail - head > ring_bytes_) {
      if (header.head.load() != head) continue;
      return Take::kCorrupt;
    }
    const View record = view(head, tail);
    if (record.shape != Shape::kWhole && header.head.load() != head) continue;
    if (record.shape == Shape::kUntagged) return Take::kPending;  // reserved, not tagged yet
    if (record.shape == Shape::kBroken) return Take::kCorrupt;
    switch (static_cast<RecordState>(record.state)) {
      case RecordState::kReserved:
        return Take::kPending;
      case RecordState::kCommitted: {
        uint64_t expected = record.tag;
        if (!record.record->tag.compare_exchange_strong(
                expected, make_tag(head, slot, RecordState::kClaimed), std::memory_order_acq_rel)) {
          continue;  // another consumer took it
        }
        uint64_t moving = head;
        header.head.compare_exchange_strong(moving, head + record.span);
        const size_t copy = std::min<size_t>(record.length, out.size());
        if (copy != 0) copy_out_of_ring(out.data(), payload_at(head), copy);
        record.record->tag.store(make_tag(head, slot, RecordState::kFree),
                                 std::memory_order_release);
        length = static_cast<uint32_t>(record.length);
        // A PAD behind it (a repair's, the ring's end) holds budget.
        skip_dead_front(kReclaimBatch);
        reclaim();
        // Room for what the server holds behind the ring or its parked writers; readiness.
        notify_server(slot, kInterestRoom | kInterestPollers);
        return Take::kTaken;
      }
      case RecordState::kClaimed:
      case RecordState::kFree:
      case RecordState::kPad: {
        uint64_t moving = head;  // help: it is taken, or nothing to take
        header.head.compare_exchange_strong(moving, head + record.span);
        continue;
      }
    }
  }
  return Take::kContended;
}

bool Region::passable(const View& record) noexcept {
  return record.shape == Shape::kWhole &&
         (record.state == static_cast<uint8_t>(RecordState::kFree) ||
          record.state == static_cast<uint8_t>(RecordState::kPad));
}

void Region::skip_dead_front(uint64_t max_records) noexcept {
  Header& header = this->header();
  for (uint64_t steps = 0; steps < max_records; ++steps) {
    uint64_t head = header.head.load();
    const uint64_t tail = header.tail.load();
    if (head >= tail || tail - head > ring_bytes_) return;
    const View record = view(head, tail);
    if (!passable(record)) return;
    header.head.compare_exchange_strong(head, head + record.span);
  }
}

std::size_t Region::reclaim(unsigned max_records) noexcept {
  Header& header = this->header();
  std::size_t passed = 0;
  for (int tries = 0; passed < max_records && tries < kMaxTries + static_cast<int>(max_records);
       ++tries) {
    uint64_t reclaim = header.reclaim.load();
    const uint64_t head = header.head.load();
    if (reclaim >= head || head - reclaim > ring_bytes_) break;
    const View record = view(reclaim, head);
    if (!passable(record)) break;
    const uint64_t budget = record.record->budget.load(std::memory_order_relaxed);
    if (!header.reclaim.compare_exchange_strong(reclaim, reclaim + record.span)) continue;
    release_budget(budget);
    ++passed;
  }
  return passed;
}

// ---- waiting ----

void Region::start_waiting_reader(uint16_t slot) noexcept {
  client(slot).readers_waiting.fetch_add(1);
  header().readers_waiting.fetch_add(1);
}

void Region::stop_waiting_reader(uint16_t slot) noexcept {
  saturating_sub(header().readers_waiting, 1);
  saturating_sub(client(slot).readers_waiting, 1);
}

std::optional<bool> Region::wait_avail(uint32_t seen, std::chrono::nanoseconds timeout) noexcept {
  return futex_wait(&header().avail_seq, seen, timeout);
}

// ---- the barrier ----

uint32_t Region::barrier_enter(uint16_t slot) noexcept {
  Header& header = this->header();
  // One RMW, no CAS loop (a member writing the word in a loop must not keep the caller): the
  // count is the low half, so only a count a member set to 2^32 - 1 carries into the generation.
  const uint32_t generation = generation_of(header.barrier.fetch_add(1));
  if (slot != kServerSlot) {
    std::atomic<uint64_t>& mine = client(slot).barrier;
    uint64_t own = mine.load();
    for (int tries = 0; tries < kMaxCounterTries; ++tries) {
      const uint64_t next =
          generation_of(own) == generation ? own + 1 : barrier_word(generation, 1);
      if (mine.compare_exchange_weak(own, next)) break;
    }
  }
  return generation;
}

bool Region::barrier_cancel(uint16_t slot, uint32_t generation) noexcept {
  Header& header = this->header();
  uint64_t word = header.barrier.load();
  for (int tries = 0;; ++tries) {
    if (generation_of(word) != generation || sleepers_of(word) == 0) return false;  // woken
    if (tries == kMaxCounterTries) return false;  // a member writes it without pause: woken
    if (header.barrier.compare_exchange_weak(word, word - 1)) break;
  }
  barrier_left(slot, generation);
  return true;
}

bool Region::barrier_passed(uint32_t generation) const noexcept {
  return generation_of(header().barrier.load()) != generation;
}

void Region::barrier_left(uint16_t slot, uint32_t generation) noexcept {
  if (slot == kServerSlot) return;
  std::atomic<uint64_t>& mine = client(slot).barrier;
  uint64_t own = mine.load();
  for (int tries = 0; tries < kMaxCounterTries && generation_of(own) == generation &&
                      sleepers_of(own) != 0 && !mine.compare_exchange_weak(own, own - 1);
       ++tries) {
  }
}

std::optional<bool> Region::barrier_wait(uint32_t generation,
                                         std::chrono::nanoseconds timeout) noexcept {
  return futex_wait(barrier_futex(header()), generation, timeout);
}

uint32_t Region::barrier_awake(uint16_t slot) noexcept {
  Header& header = this->header();
  uint64_t word = header.barrier.load();
  int tries = 0;
  while (!header.barrier.compare_exchange_weak(word, barrier_word(generation_of(word) + 1, 0))) {
    // A member writing the word without pause: the awake happens all the same, in one RMW
    // (the generation it moves from may then be a member's value: that group's garbage).
    if (++tries == kMaxCounterTries) {
      word = header.barrier.exchange(barrier_word(generation_of(word) + 1, 0));
      break;
    }
  }
  futex_wake(barrier_futex(header), kWakeAll);
  notify_server(slot, kInterestBarrier);
  return sleepers_of(word);
}

uint32_t Region::barrier_sleepers() const noexcept {
  return sleepers_of(header().barrier.load());
}

uint32_t Region::barrier_generation() const noexcept {
  return generation_of(header().barrier.load());
}

// ---- the server's side ----

void Region::set_flags(uint32_t bits) noexcept {
  header().flags.fetch_or(bits);
}
void Region::clear_flags(uint32_t bits) noexcept {
  header().flags.fetch_and(~bits);
}
uint32_t Region::flags() const noexcept {
  return header().flags.load();
}
void Region::set_interest(uint32_t bits) noexcept {
  header().server_interest.fetch_or(bits);
}
void Region::clear_interest(uint32_t bits) noexcept {
  header().server_interest.fetch_and(~bits);
}

void Region::publish_params(uint64_t max_message_size, uint64_t max_storage_size) noexcept {
  header().max_message_size.store(max_message_size);
  header().max_storage_size.store(max_storage_size);
}

void Region::publish_send_delay(uint32_t milliseconds) noexcept {
  header().send_delay_ms.store(milliseconds);
}

void Region::wake_all() noexcept {
  Header& header = this->header();
  header.avail_seq.fetch_add(1);
  futex_wake(&header.avail_seq, kWakeAll);
  futex_wake(barrier_futex(header), kWakeAll);
}

Region::Snapshot Region::snapshot(uint64_t count_at_most, uint64_t walk_at_most) const noexcept {
  const Header& header = this->header();
  Snapshot snapshot;
  const uint64_t reclaim = header.reclaim.load();
  const uint64_t head = header.head.load();
  const uint64_t tail = header.tail.load();
  snapshot.sane = reclaim <= head && head <= tail && tail - reclaim <= ring_bytes_;
  snapshot.empty = !snapshot.sane || head == tail;
  snapshot.stored_bytes = header.stored_bytes.load();
  snapshot.readers_waiting = std::min<uint64_t>(header.readers_waiting.load(), 1u << 20);
  // The available messages, counted (a counter a killed client could leave wrong is not kept):
  // the COMMITTED records from head to tail, a bounded walk.
  uint64_t position = head;
  const uint64_t walk = std::min(walk_at_most, records());
  uint64_t steps = 0;
  for (; !snapshot.empty && position < tail && steps < walk && snapshot.queued < count_at_most;
       ++steps) {
    const View record = view(position, tail);
    if (record.shape != Shape::kWhole) break;  // being written (the rest follows it), or broken
    if (record.state == static_cast<uint8_t>(RecordState::kCommitted) ||
        record.state == static_cast<uint8_t>(RecordState::kReserved)) {
      ++snapshot.queued;  // a reserved one is a send that took effect (its copy is under way)
    }
    position += record.span;
  }
  snapshot.cut = steps == walk && position < tail;
  return snapshot;
}

bool Region::front_pending() const noexcept {
  const Header& header = this->header();
  const uint64_t head = header.head.load();
  const uint64_t tail = header.tail.load();
  if (head >= tail || tail - head > ring_bytes_) return false;
  const View record = view(head, tail);
  if (header.head.load() != head) return false;  // taken meanwhile: not pending now
  return record.shape == Shape::kUntagged ||
         (record.shape == Shape::kWhole &&
          record.state == static_cast<uint8_t>(RecordState::kReserved));
}

bool Region::audit(uint64_t server_held) noexcept {
  Header& header = this->header();
  uint64_t stored = header.stored_bytes.load();
  const uint64_t tail = header.tail.load();
  if (header.head.load() != tail || header.reclaim.load() != tail) return false;
  for (unsigned slot = 1; slot < kMaxClients; ++slot) {
    // Only assigned slots: the table's other pages stay untouched (not resident).
    if (slot_assigned(slot) && client(slot).pending_bytes.load() != 0) return false;
  }
  if (header.tail.load() != tail) return false;
  // Nothing in the ring, nothing reserved: the budget is what the server holds. A send that
  // reserved since `stored` was read makes the CAS fail (the next audit tries again).
  if (stored == server_held) return false;
  return header.stored_bytes.compare_exchange_strong(stored, server_held);
}

Region::Repair Region::repair_client(unsigned slot, bool grace_over) noexcept {
  if (slot == kServerSlot || slot >= kMaxClients) return Repair::kDone;
  Header& header = this->header();
  ClientEntry& entry = client(slot);
  const uint64_t pending_bytes = entry.pending_bytes.load();
  const uint64_t pending_position = entry.pending_position.load();
  const uint64_t pending_span = entry.pending_span.load();
  bool pending_placed = pending_bytes == 0;  // true once the pending bytes are in a record

  // Walk the unreclaimed records; the dead client's are finished for it.
  uint64_t position = header.reclaim.load();
  uint64_t tail = header.tail.load();
  // A stale `reclaim` (others reclaimed round the ring since) is read again; a pair that stays
  // impossible while reclaim does not move is a broken ring.
  for (int tries = 0; (tail < position || tail - position > ring_bytes_) && tries < kMaxTries;
       ++tries) {
    const uint64_t now = header.reclaim.load();
    if (now == position) break;
    position = now;
    tail = header.tail.load();
  }
  if (tail < position || tail - position > ring_bytes_) {
    set_flags(kFlagCorrupt);
  } else {
    for (uint64_t steps = 0; position < tail && steps <= ring_bytes_ / kRecordAlign; ++steps) {
      const View seen = view(position, tail);
      RecordHeader& record = *seen.record;
      if (seen.shape != Shape::kWhole) {
        // Consumers reclaimed past us meanwhile (and producers may have reused the space):
        // what we read there is not this walk's; go on from the front as it is now.
        const uint64_t front = header.reclaim.load();
        if (front > position && front <= tail) {
          position = front;
          continue;
        }
      }
      if (seen.shape == Shape::kUntagged) {
        // Reserved and never tagged: the dead client's own (its pending reservation), or a live
        // producer's about to be (it tags within nanoseconds; after the grace it is not one).
        if (pending_placed || position != pending_position || pending_span == 0 ||
            pending_span > tail - position || !grace_over) {
          return Repair::kLater;
        }
        // (Its span may hold a PAD to the ring's end and the record at its start: as two PADs.)
        tag_pads(position, pending_span, static_cast<uint16_t>(slot), pending_bytes);
        pending_placed = true;
        position += pending_span;
        continue;
      }
      if (seen.shape == Shape::kBroken) {
        set_flags(kFlagCorrupt);
        break;
      }
      const uint8_t state = seen.state;
      const uint64_t span = seen.span;
      if (tag_owner(seen.tag) == slot) {
        if (position == pending_position) pending_placed = true;  // tagged: a record holds them
        if (state == static_cast<uint8_t>(RecordState::kReserved)) {
          // Copying in when it died: skipped, its bytes given back at reclaim.
          record.length.store(static_cast<uint32_t>(span - kRecordHeaderBytes),
                              std::memory_order_relaxed);
          record.tag.store(make_tag(position, static_cast<uint16_t>(slot), RecordState::kPad),
                           std::memory_order_release);
        } else if (state == static_cast<uint8_t>(RecordState::kClaimed)) {
          // Copying out when it died: the message went with it; the space comes back.
          record.tag.store(make_tag(position, static_cast<uint16_t>(slot), RecordState::kFree),
                           std::memory_order_release);
        }
      }
      position += span;
    }
  }
  if (!pending_placed) release_budget(pending_bytes);  // reserved, never placed in the ring

  // Its waiters: the counts it added.
  saturating_sub(header.readers_waiting, entry.readers_waiting.exchange(0));
  const uint64_t own = entry.barrier.exchange(0);
  uint64_t word = header.barrier.load();
  for (int tries = 0; tries < kMaxCounterTries && sleepers_of(own) != 0; ++tries) {
    if (generation_of(word) != generation_of(own)) break;  // woken by an awake already
    const uint32_t sleepers = sleepers_of(word);
    const uint32_t take = std::min(sleepers, sleepers_of(own));
    if (header.barrier.compare_exchange_weak(word, word - take)) break;
  }
  clear_entry(entry);
  free_slot(slot);
  // Readers waiting behind a record it held move on; the front may be reclaimable now.
  skip_dead_front(records());
  reclaim(static_cast<unsigned>(records()));
  wake_all();
  return Repair::kDone;
}

void Region::tag_pads(uint64_t position, uint64_t span, uint16_t owner, uint64_t budget) noexcept {
  const uint64_t to_end = std::min(span, ring_bytes_ - (position & (ring_bytes_ - 1)));
  const uint64_t pieces[2][2] = {{position + to_end, span - to_end}, {position, to_end}};
  for (const auto& [at, bytes] : pieces) {
    if (bytes == 0) continue;
    RecordHeader& record = record_at(at);
    record.length.store(static_cast<uint32_t>(bytes - kRecordHeaderBytes),
                        std::memory_order_relaxed);
    // The budget on the last piece (the one a reclaim passes last).
    const bool last = at + bytes == position + span;
    record.budget.store(last ? static_cast<uint32_t>(budget) : 0, std::memory_order_relaxed);
    record.tag.store(make_tag(at, owner, RecordState::kPad), std::memory_order_release);
  }
}

bool Region::trim() noexcept {
  Header& header = this->header();
  uint64_t tail = header.tail.load();
  if (header.head.load() != tail || header.reclaim.load() != tail) return false;
  if (!is_record_start(tail)) return false;  // garbage: the PADs below would not fit
  // Reserve the whole ring as one PAD (nobody can reserve until it is reclaimed), punch its
  // pages out of the memfd, then tag, skip and reclaim it.
  if (!header.tail.compare_exchange_strong(tail, tail + ring_bytes_)) return false;
  if (fd_ >= 0) {
    ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(kRingOffset),
                static_cast<off_t>(ring_bytes_));
  }
  tag_pads(tail, ring_bytes_, kServerSlot, 0);
  uint64_t head = tail;
  header.head.compare_exchange_strong(head, tail + ring_bytes_);
  reclaim(2);
  return true;
}

}  // namespace synchmess::region
