#include "core/group.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/baton.hpp"

namespace synchmess::core {

void Waiter::on_timeout(void* self) noexcept {
  auto* waiter = static_cast<Waiter*>(self);
  waiter->parked_on_->on_wait_timeout(*waiter);
}

namespace {

region::Region new_region(std::string_view name) noexcept {
  auto created = region::Region::create(name, region::kDefaultRingBytes);
  if (!created) std::abort();  // in-process users only: as an allocation failure would
  return std::move(created.value());
}

}  // namespace

Group::Group(std::string name, uid_t owner, const Params& params, TimerQueue& timers,
             Quotas& quotas) noexcept
    : Group(name, owner, params, timers, quotas, new_region(name)) {}

Group::Group(std::string name, uid_t owner, const Params& params, TimerQueue& timers,
             Quotas& quotas, region::Region region) noexcept
    : name_(std::move(name)),
      owner_(owner),
      params_(params),
      timers_(timers),
      quotas_(quotas),
      region_(std::move(region)),
      notify_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      delay_timer_(&Group::on_delay_timer, this),
      barrier_(region_) {
  region_.publish_params(params_.max_message_size(), params_.max_storage_size());
  region_.publish_send_delay(0);
}

Group::~Group() {
  close(std::errc::identifier_removed);
  timers_.cancel_sync(delay_timer_);
  if (notify_fd_ >= 0) ::close(notify_fd_);
  if (counts_lingering_) quotas_.lingering_group_gone(owner_);
}

// ---- messages ----

namespace {

// What glibc's malloc really takes for a request of n bytes: n plus its 8-byte chunk header,
// rounded up to 16, at least 32.
constexpr uint64_t malloc_chunk(uint64_t n) noexcept {
  const uint64_t chunk = (n + 8 + 15) & ~uint64_t{15};
  return chunk < 32 ? 32 : chunk;
}

}  // namespace

uint64_t Group::footprint(uint64_t size) noexcept {
  // A std::map node: the red-black header (colour and three links) and the key/value pair.
  constexpr uint64_t kMapNode =
      malloc_chunk(4 * sizeof(void*) + sizeof(std::pair<const DelayKey, MessagePtr>));
  // A place in the overflow behind the ring (a std::deque of pointers).
  constexpr uint64_t kSlot = sizeof(MessagePtr);
  constexpr uint64_t kContainers = kMapNode > kSlot ? kMapNode : kSlot;
  return malloc_chunk(sizeof(Message) + size) + kContainers;
}

Result<MessagePtr> Group::charged_message(std::span<const std::byte> bytes, uid_t sender) noexcept {
  const uint64_t charge = footprint(bytes.size());
  if (auto charged = quotas_.charge_memory(sender, charge); !charged) {
    return make_error(charged.error());
  }
  MessagePtr message =
      Message::create(bytes, QuotaCharge{&quotas_, sender, static_cast<uint32_t>(charge)});
  if (!message) {
    quotas_.uncharge_memory(sender, charge);
    return make_error(std::errc::not_enough_memory);
  }
  return message;
}

bool Group::reserve_storage(uint64_t size) noexcept {
  const uint64_t limit = params_.max_storage_size();
  // The server's own count first: what it keeps for the group never passes the limit, whatever
  // members write into the region (a counter they hold at 0 lifted the bound, issue 14).
  uint64_t held = held_bytes_.load();
  do {
    if (size > limit || held > limit - size) return false;
  } while (!held_bytes_.compare_exchange_weak(held, held + size));
  // Then the region's counter: every door's sends count against the same budget. A ring the
  // server found broken is not used any more, nor is its counter (a member's toy by then).
  if (ring_broken_.load() || region_.reserve_budget(size, limit)) return true;
  held_bytes_.fetch_sub(size);
  return false;
}

Result<std::size_t> Group::send(std::span<const std::byte> bytes, uid_t sender) noexcept {
  if (closed()) return make_error(std::errc::no_such_device);
  const uint64_t size = bytes.size();
  if (size == 0) return std::size_t{0};
  if (size > params_.max_message_size()) return make_error(std::errc::message_size);

  // The quotas first (their refusal is final), then the group's budget: it can never be
  // exceeded, whatever the concurrency, and a writer parked for space comes first. The copy is
  // made last, so a refused send costs no allocation.
  const uint64_t charge = footprint(size);
  if (auto charged = quotas_.charge_memory(sender, charge); !charged) {
    return make_error(charged.error());
  }
  if (writers_waiting_.load() != 0 || !reserve_storage(size)) {
    quotas_.uncharge_memory(sender, charge);
    return make_error(std::errc::no_space_on_device);
  }
  MessagePtr message =
      Message::create(bytes, QuotaCharge{&quotas_, sender, static_cast<uint32_t>(charge)});
  if (!message) {
    quotas_.uncharge_memory(sender, charge);
    release_storage(size);
    return make_error(std::errc::not_enough_memory);
  }
  if (auto stored = store(std::move(message)); !stored) return make_error(stored.error());
  settle();
  return bytes.size();
}

Result<std::optional<std::size_t>> Group::send_or_park(std::span<const std::byte> bytes,
                                                       uid_t sender, Waiter& writer,
                                                       std::chrono::milliseconds timeout) noexcept {
  if (closed()) return make_error(std::errc::no_such_device);
  const uint64_t size = bytes.size();
  if (size == 0) return std::optional<std::size_t>(0);
  if (size > params_.max_message_size()) return make_error(std::errc::message_size);
  if (size > params_.max_storage_size()) return make_error(std::errc::no_space_on_device);
  auto message = charged_message(bytes, sender);
  if (!message) return make_error(message.error());
  bool reserved = writers_waiting_.load() == 0 && reserve_storage(size);
  if (!reserved) {
    std::lock_guard lock(writers_mu_);
    // Count ourselves before the last look: a receiver that frees space after this look sees
    // the count and admits us (both sequentially consistent).
    writers_waiting_.fetch_add(1);
    if (closed()) {
      writers_waiting_.fetch_sub(1);
      return make_error(std::errc::no_such_device);
    }
    reserved = parked_writers_.empty() && reserve_storage(size);
    if (!reserved) {
      writer.carried_ = std::move(message.value());
      writer.parked_on_ = this;
      writer.writer_ = true;
      parked_writers_.push_back(writer);
      if (timeout != kWaitForever) timers_.arm(writer.timeout_, timers_.now() + timeout);
      update_room_interest();
      return std::optional<std::size_t>();
    }
    writers_waiting_.fetch_sub(1);
  }
  if (auto stored = store(std::move(message.value())); !stored) return make_error(stored.error());
  settle();
  return std::optional<std::size_t>(size);
}

bool Group::cancel_send(Waiter& writer) noexcept {
  if (!unpark(writers_mu_, parked_writers_, writers_waiting_, writer)) return false;
  timers_.cancel_sync(writer.timeout_);
  writer.carried_.reset();  // not sent: its charge goes back
  settle();                 // the writers behind it may fit now
  return true;
}

Status Group::store(MessagePtr message) noexcept {
  const uint64_t size = message->size();
  const uint32_t delay_ms = send_delay();
  if (delay_ms == 0) {
    std::lock_guard lock(publish_mu_);
    return publish_locked(std::move(message));
  }

  std::lock_guard lock(delay_mu_);
  if (closed()) {  // close() already emptied the delayed messages: do not add one after it
    release_storage(size);
    return make_error(std::errc::no_such_device);
  }
  const DelayKey key{timers_.now() + std::chrono::milliseconds(delay_ms), next_write_sequence_++};
  delayed_.emplace(key, std::move(message));
  delayed_bytes_ += size;
  if (delayed_.begin()->first == key) rearm_delay_timer_locked();
  return {};
}

class Group::BatchPublication {
 public:
  // Publishes a run of messages as one step (a flush, an expiry): the server's own sends wait
  // for publish_mu_, and clients are sent through the server meanwhile (kFlagOverflow), so
  // nothing lands inside the run. A client that reserved ring space before it went first.
  BatchPublication(Group& group, std::size_t count) noexcept
      : group_(group), lock_(group.publish_mu_), active_(count > 1) {
    if (active_) group_.region_.set_flags(region::kFlagOverflow);
  }
  ~BatchPublication() {
    if (active_ && !group_.overflow_active_) group_.region_.clear_flags(region::kFlagOverflow);
  }
  BatchPublication(const BatchPublication&) = delete;
  BatchPublication& operator=(const BatchPublication&) = delete;

 private:
  Group& group_;
  std::lock_guard<std::mutex> lock_;
  const bool active_;
};

Status Group::publish_locked(MessagePtr message) noexcept {
  const uint64_t size = message->size();
  if (!overflow_active_ && !ring_broken_.load()) {
    switch (region_.push(message->data(), region::kServerSlot, 0, /*charge_budget=*/false)) {
      case region::Region::Put::kStored:
        ring_took(size);
        return {};  // the ring has it (and its bytes); the heap copy goes
      case region::Region::Put::kCorrupt:
        mark_ring_broken();  // members broke the ring: the server carries on without it
        break;
      default:
        break;  // no room, too big, contended: behind the ring
    }
  }
  // Behind the ring, in FIFO order: clients send through the server until it is empty again.
  if (!overflow_active_) {
    overflow_active_ = true;
    region_.set_flags(region::kFlagOverflow);
    region_.set_interest(region::kInterestRoom);
    // Clients waiting on the ring would not hear of a message behind it (one too big for the
    // ring, say): they look again, see the flag, and read through the server.
    if (region_.header().readers_waiting.load() != 0) region_.wake_all();
  }
  try {
    overflow_.push_back(std::move(message));
  } catch (const std::bad_alloc&) {  // the deque's next block: the message is not stored
    release_storage(size);
    return make_error(std::errc::not_enough_memory);
  }
  overflow_count_.fetch_add(1);
  overflow_bytes_ += size;
  return {};
}

void Group::refill_locked() noexcept {
  // A broken ring is not refilled: the overflow is the group's queue from then on.
  while (overflow_active_ && !ring_broken_.load()) {
    if (overflow_.empty()) {
      overflow_active_ = false;  // empty: clients may use the ring again
      region_.clear_interest(region::kInterestRoom);
      region_.clear_flags(region::kFlagOverflow);
      return;
    }
    const Message& front = *overflow_.front();
    if (region_.push(front.data(), region::kServerSlot, 0, false) != region::Region::Put::kStored) {
      return;  // no room yet (or too big for the ring): it stays first behind it
    }
    overflow_bytes_ -= front.size();  // the ring's record holds them now
    ring_took(front.size());
    overflow_.pop_front();
    overflow_count_.fetch_sub(1);
  }
}

void Group::mark_ring_broken() noexcept {
  region_.set_flags(region::kFlagCorrupt);  // clients go through the device from now on
  if (!ring_broken_.exchange(true)) {
    report_corrupt("a member broke its shared ring: the group is served through the server only");
  }
}

void Group::report_corrupt(std::string_view what) noexcept {
  if (observer_ != nullptr && !corrupt_reported_.exchange(true)) {
    observer_->on_region_corrupt(*this, what);
  }
}

void Group::release_storage(uint64_t bytes) noexcept {
  held_bytes_.fetch_sub(bytes);
  region_.release_budget(bytes);
}

namespace {

// The server's copy-out buffer for ring pops: one per thread, as large as the largest record
// of any ring, left uninitialized: a pop writes only what it copies, so only the pages of the
// largest message popped become resident (a zero-filled vector would touch all of it, up to
// 4 MiB a thread with --region-size 16M). Empty when it cannot be allocated.
std::span<std::byte> pop_buffer(std::size_t size) noexcept {
  thread_local std::unique_ptr<std::byte[]> buffer;
  thread_local std::size_t capacity = 0;
  if (capacity < size) {
    buffer.reset(new (std::nothrow) std::byte[size]);
    capacity = buffer ? size : 0;
  }
  return {buffer.get(), capacity < size ? 0 : size};
}

}  // namespace

MessagePtr Group::take_message() noexcept {
  // The ring holds the oldest messages; what the server holds behind it is younger. (Without
  // a copy-out buffer, out of memory, only the server's own messages can be taken.)
  const std::span<std::byte> buffer = pop_buffer(region_.max_payload());
  if (!ring_broken_.load() && !buffer.empty()) {
    uint32_t length = 0;
    switch (region_.pop(buffer, region::kServerSlot, length)) {
      case region::Region::Take::kTaken:
        return Message::create(std::span(buffer.data(), length));
      case region::Region::Take::kPending:
      case region::Region::Take::kContended: {
        // The oldest is being written. When it is our own refill (another thread, under
        // publish_mu_), it is done once we hold the lock; a client's commit tells us
        // (kInterestReaders) and front_pending() keeps readers from answering "empty".
        std::lock_guard lock(publish_mu_);
        if (region_.pop(buffer, region::kServerSlot, length) == region::Region::Take::kTaken) {
          return Message::create(std::span(buffer.data(), length));
        }
        return nullptr;
      }
      case region::Region::Take::kCorrupt:
        mark_ring_broken();
        break;
      case region::Region::Take::kEmpty:
        break;
    }
  }
  if (overflow_count_.load() == 0) return nullptr;
  std::lock_guard lock(publish_mu_);
  // Once more under the lock: a refill may have moved older messages into the ring meanwhile.
  if (!ring_broken_.load() && !buffer.empty()) {
    uint32_t length = 0;
    if (region_.pop(buffer, region::kServerSlot, length) == region::Region::Take::kTaken) {
      return Message::create(std::span(buffer.data(), length));
    }
  }
  MessagePtr message;
  if (!overflow_.empty()) {
    message = std::move(overflow_.front());
    overflow_.pop_front();
    overflow_count_.fetch_sub(1);
    overflow_bytes_ -= message->size();
    release_storage(message->size());
  }
  refill_locked();
  return message;
}

void Group::settle() noexcept {
  // Readers first (they take what is available), then writers (they take the space freed);
  // again while writers brought new messages.
  do {
    deliver_to_readers();
  } while (admit_writers());
  notify_watchers();
}

bool Group::deliver_to_readers() noexcept {
  // Hand messages to parked readers, oldest reader first. The seq_cst load pairs with the
  // reader's seq_cst increment before its last look at the queue (see receive_or_park()).
  bool delivered = false;
  while (readers_waiting_.load() != 0) {
    Waiter* reader = nullptr;
    MessagePtr message;
    {
      std::lock_guard lock(readers_mu_);
      reader = parked_readers_.front();
      if (reader == nullptr) break;
      // A dying reader is skipped before a message is taken for it (SPEC: a reader that dies
      // while it waits never takes a message with it).
      if (!reader->caller_dying()) {
        message = take_message();
        if (!message) break;
      }
      parked_readers_.remove(*reader);
      readers_waiting_.fetch_sub(1);
      if (parked_readers_.empty()) region_.clear_interest(region::kInterestReaders);
    }
    timers_.cancel_sync(reader->timeout_);
    delivered = delivered || message != nullptr;
    reader->complete(message ? WaitOutcome::delivered(std::move(message))
                             : WaitOutcome::failed(std::errc::interrupted));
  }
  return delivered;
}

bool Group::admit_writers() noexcept {
  // The seq_cst load pairs with the writer's seq_cst increment before its last look at the
  // budget (see send_or_park()).
  if (writers_waiting_.load() == 0) return false;
  Waiter* admitted;  // chains detached under writers_mu_: only this thread follows them
  Waiter* too_big;   // the budget was lowered below their size: they can never fit
  {
    std::lock_guard lock(writers_mu_);
    WaiterList admitting;
    WaiterList refusing;
    while (Waiter* writer = parked_writers_.front()) {
      const uint64_t size = writer->carried_->size();
      const bool never = size > params_.max_storage_size();
      if (!never && !reserve_storage(size)) break;  // arrival order: nobody overtakes it
      parked_writers_.remove(*writer);
      writers_waiting_.fetch_sub(1);
      (never ? refusing : admitting).push_back(*writer);
    }
    admitted = admitting.detach_all();
    too_big = refusing.detach_all();
    update_room_interest();
  }
  while (Waiter* writer = too_big) {
    too_big = WaiterList::chain_next(*writer);
    timers_.cancel_sync(writer->timeout_);
    writer->carried_.reset();
    writer->complete(WaitOutcome::failed(std::errc::no_space_on_device));
  }
  bool stored_any = false;
  while (Waiter* writer = admitted) {
    admitted = WaiterList::chain_next(*writer);
    timers_.cancel_sync(writer->timeout_);
    const Status stored = store(std::move(writer->carried_));
    stored_any = stored_any || stored.ok();
    writer->complete(stored ? WaitOutcome::woken() : WaitOutcome::failed(stored.error()));
  }
  return stored_any;
}

Result<MessagePtr> Group::try_receive() noexcept {
  if (closed()) return make_error(std::errc::no_such_device);
  MessagePtr message = take_message();
  if (message) after_space_freed();
  return message;
}

Result<MessagePtr> Group::receive_or_park(Waiter& waiter,
                                          std::chrono::milliseconds timeout) noexcept {
  if (closed()) return make_error(std::errc::no_such_device);
  MessagePtr message;
  {
    std::lock_guard lock(readers_mu_);
    // Count ourselves before the last look: a sender that pushes after this look sees the count
    // (a client: the interest bit) and serves us (both sequentially consistent).
    readers_waiting_.fetch_add(1);
    region_.set_interest(region::kInterestReaders);
    message = take_message();
    if (!message && !closed()) {
      waiter.parked_on_ = this;
      waiter.writer_ = false;
      parked_readers_.push_back(waiter);
      if (timeout != kWaitForever) timers_.arm(waiter.timeout_, timers_.now() + timeout);
      return MessagePtr{};
    }
    readers_waiting_.fetch_sub(1);
  }
  if (!message) return make_error(std::errc::no_such_device);
  after_space_freed();
  return message;
}

void Group::after_space_freed() noexcept {
  // The seq_cst load pairs with a parking writer's increment (see admit_writers()).
  if (writers_waiting_.load() != 0) {
    settle();
  } else if (watchers_.load() != 0) {
    notify_watchers();  // POLLOUT may have changed
  }
}

bool Group::unpark(std::mutex& mu, WaiterList& list, std::atomic<uint64_t>& count,
                   Waiter& waiter) noexcept {
  std::lock_guard lock(mu);
  if (!list.contains(waiter)) return false;  // served, admitted or cancelled meanwhile
  list.remove(waiter);
  count.fetch_sub(1);
  after_unpark(list);
  return true;
}

void Group::fail_parked(std::mutex& mu, WaiterList& list, std::atomic<uint64_t>& count,
                        std::errc reason) noexcept {
  Waiter* chain;
  {
    std::lock_guard lock(mu);
    chain = list.detach_all();
    count.store(0);
  }
  while (chain != nullptr) {
    Waiter* next = WaiterList::chain_next(*chain);
    timers_.cancel_sync(chain->timeout_);
    chain->carried_.reset();  // a writer's message is never sent
    chain->complete(WaitOutcome::failed(reason));
    chain = next;
  }
}

bool Group::cancel_receive(Waiter& waiter) noexcept {
  if (!unpark(readers_mu_, parked_readers_, readers_waiting_, waiter)) return false;
  timers_.cancel_sync(waiter.timeout_);
  return true;
}

void Group::after_unpark(WaiterList& list) noexcept {
  if (&list == &parked_readers_) {
    if (list.empty()) region_.clear_interest(region::kInterestReaders);
  } else {
    update_room_interest();
  }
}

void Group::on_wait_timeout(Waiter& waiter) noexcept {
  if (!waiter.writer_) {
    if (unpark(readers_mu_, parked_readers_, readers_waiting_, waiter)) {
      waiter.complete(WaitOutcome::timeout());
    }
    return;
  }
  if (!unpark(writers_mu_, parked_writers_, writers_waiting_, waiter)) return;
  waiter.carried_.reset();
  waiter.complete(WaitOutcome::timeout());
  settle();  // the writers behind it may fit now
}

namespace {

// An in-process wait: parks like a server request, then sleeps on a futex baton.
class BlockingWait final : public Waiter {
 public:
  void complete(WaitOutcome outcome) noexcept override {
    outcome_ = std::move(outcome);
    baton_.post();
  }
  Baton& baton() noexcept { return baton_; }
  WaitOutcome& outcome() noexcept { return outcome_; }

  // Sleeps up to `timeout`; when it ends without a completion and `cancel` succeeds, returns
  // EINTR (a signal) or nothing (the time passed); otherwise waits for the completion that is
  // under way and returns nothing: the outcome is then in outcome().
  template <class Cancel>
  std::optional<FutexWaitResult> wait(std::chrono::milliseconds timeout, Cancel cancel) noexcept {
    const auto woke = baton_.wait(timeout == Group::kWaitForever
                                      ? std::nullopt
                                      : std::optional<std::chrono::nanoseconds>(timeout));
    if (woke != FutexWaitResult::kWoken && cancel()) return woke;
    while (baton_.wait() != FutexWaitResult::kWoken) {
    }
    return std::nullopt;
  }

 private:
  WaitOutcome outcome_;
  Baton baton_;
};

}  // namespace

Result<MessagePtr> Group::receive(std::chrono::milliseconds timeout) noexcept {
  auto message = try_receive();
  if (!message || message.value() || timeout.count() <= 0) return message;

  BlockingWait waiter;
  auto parked = receive_or_park(waiter, kWaitForever);  // the baton keeps the time
  if (!parked || parked.value()) return parked;
  if (const auto ended = waiter.wait(timeout, [&] { return cancel_receive(waiter); })) {
    if (*ended == FutexWaitResult::kInterrupted) return make_error(std::errc::interrupted);
    return MessagePtr{};
  }
  // Completed (perhaps by a sender while we gave up): take what it brings.
  WaitOutcome& outcome = waiter.outcome();
  if (outcome.error != std::errc{}) return make_error(outcome.error);
  return std::move(outcome.message);  // nullptr when timed out
}

Result<std::size_t> Group::send(std::span<const std::byte> bytes, uid_t sender,
                                std::chrono::milliseconds timeout) noexcept {
  if (timeout.count() <= 0) return send(bytes, sender);
  BlockingWait waiter;
  auto parked = send_or_park(bytes, sender, waiter, kWaitForever);
  if (!parked) return make_error(parked.error());
  if (parked.value()) return *parked.value();
  if (const auto ended = waiter.wait(timeout, [&] { return cancel_send(waiter); })) {
    if (*ended == FutexWaitResult::kInterrupted) return make_error(std::errc::interrupted);
    return make_error(std::errc::no_space_on_device);
  }
  const WaitOutcome& outcome = waiter.outcome();
  if (outcome.error != std::errc{}) return make_error(outcome.error);
  if (outcome.timed_out) return make_error(std::errc::no_space_on_device);
  return bytes.size();
}

// ---- delays ----

void Group::on_delay_timer(void* self) noexcept {
  auto* group = static_cast<Group*>(self);
  std::size_t released;
  {
    std::lock_guard lock(group->delay_mu_);
    const Clock::time_point now = group->timers_.now();
    BatchPublication batch(*group, group->due_count_locked(now, 2));
    released = group->release_due_locked(now);
    group->rearm_delay_timer_locked();
  }
  if (released != 0) group->settle();
}

std::size_t Group::due_count_locked(Clock::time_point now, std::size_t at_most) const noexcept {
  std::size_t count = 0;
  for (auto it = delayed_.begin(); it != delayed_.end() && count < at_most; ++it) {
    if (it->first.first > now) break;
    ++count;
  }
  return count;
}

std::size_t Group::release_due_locked(Clock::time_point now) noexcept {
  std::size_t released = 0;
  while (!delayed_.empty() && delayed_.begin()->first.first <= now) {
    auto node = delayed_.extract(delayed_.begin());
    const uint64_t size = node.mapped()->size();
    delayed_bytes_ -= size;
    if (!publish_locked(std::move(node.mapped()))) continue;  // out of memory: dropped, freed
    ++released;
  }
  return released;
}

void Group::rearm_delay_timer_locked() noexcept {
  if (delayed_.empty()) {
    timers_.cancel(delay_timer_);
  } else {
    timers_.arm(delay_timer_, delayed_.begin()->first.first);
  }
}

std::size_t Group::revoke_delayed() noexcept {
  std::size_t released;
  std::size_t revoked;
  {
    std::lock_guard lock(delay_mu_);
    // Messages whose delay expired are available even if the timer has not run yet.
    const Clock::time_point now = timers_.now();
    BatchPublication batch(*this, due_count_locked(now, 2));
    released = release_due_locked(now);
    revoked = delayed_.size();
    delayed_.clear();
    release_storage(delayed_bytes_);
    delayed_bytes_ = 0;
    timers_.cancel(delay_timer_);
  }
  if (released != 0 || revoked != 0) settle();  // freed space: writers, watchers
  return revoked;
}

std::size_t Group::flush() noexcept {
  std::size_t flushed = 0;
  {
    std::lock_guard lock(delay_mu_);
    BatchPublication batch(*this, delayed_.size());  // the whole flush is one step
    flushed += release_due_locked(timers_.now());
    // The rest in write order.
    std::vector<std::map<DelayKey, MessagePtr>::node_type> pending;
    pending.reserve(delayed_.size());
    while (!delayed_.empty())
      pending.push_back(delayed_.extract(delayed_.begin()));
    std::sort(pending.begin(), pending.end(),
              [](const auto& a, const auto& b) { return a.key().second < b.key().second; });
    for (auto& node : pending) {
      delayed_bytes_ -= node.mapped()->size();
      if (publish_locked(std::move(node.mapped()))) ++flushed;
    }
    timers_.cancel(delay_timer_);
  }
  if (flushed != 0) settle();
  return flushed;
}

// ---- barrier ----

Status Group::sleep_on_barrier() noexcept {
  if (closed()) return make_error(std::errc::no_such_device);
  return barrier_.sleep();
}

Status Group::park_on_barrier(Waiter& waiter) noexcept {
  if (closed()) return make_error(std::errc::no_such_device);
  barrier_.park(waiter);
  return {};
}

Result<uint64_t> Group::awake_barrier() noexcept {
  if (closed()) return make_error(std::errc::no_such_device);
  return barrier_.awake();
}

// ---- readiness and statistics ----

Readiness Group::readiness() const noexcept {
  Readiness ready;
  ready.closed = closed();
  uint64_t stored = held_bytes_.load();
  ready.readable = overflow_count_.load() > 0;
  if (!ring_broken_.load()) {
    // One available message is enough, looked for among kReadinessWalk records: a front of
    // that many consumed or padding records is no ring's a library leaves (a member's forgery),
    // and is reported readable rather than walked (a read then finds what there is).
    const region::Region::Snapshot ring = region_.snapshot(1, kReadinessWalk);
    ready.readable = ready.readable || ring.queued > 0 || ring.cut;
    stored = std::max(stored, ring.stored_bytes);  // the server's own count is never above it
  }
  // A writer waiting for space comes before any other: no POLLOUT while one waits.
  ready.writable = !ready.closed && writers_waiting_.load() == 0 &&
                   stored + params_.max_message_size() <= params_.max_storage_size();
  return ready;
}

void Group::watch(ReadyWatcher& watcher) noexcept {
  std::lock_guard lock(watch_mu_);
  watcher.prev_ = nullptr;
  watcher.next_ = watchers_head_;
  if (watchers_head_ != nullptr) watchers_head_->prev_ = &watcher;
  watchers_head_ = &watcher;
  watchers_.fetch_add(1);
  region_.set_interest(region::kInterestPollers);  // clients' changes must reach the pollers
}

void Group::unwatch(ReadyWatcher& watcher) noexcept {
  std::lock_guard lock(watch_mu_);
  (watcher.prev_ != nullptr ? watcher.prev_->next_ : watchers_head_) = watcher.next_;
  if (watcher.next_ != nullptr) watcher.next_->prev_ = watcher.prev_;
  watcher.prev_ = watcher.next_ = nullptr;
  if (watchers_.fetch_sub(1) == 1) region_.clear_interest(region::kInterestPollers);
}

void Group::on_params_changed() noexcept {
  region_.publish_params(params_.max_message_size(), params_.max_storage_size());
  settle();  // a raised budget lets writers in; a lowered one fails those that can never fit
}

void Group::set_send_delay(uint32_t milliseconds) noexcept {
  send_delay_ms_.store(milliseconds, std::memory_order_relaxed);
  region_.publish_send_delay(milliseconds);  // clients send delayed messages through the server
}

void Group::on_region_activity() noexcept {
  uint64_t count = 0;
  (void)!::read(notify_fd_, &count, sizeof count);  // the eventfd's counter: just a wake-up
  barrier_.on_generation_changed();
  {
    std::lock_guard lock(publish_mu_);
    refill_locked();
  }
  settle();
}

void Group::maintain() noexcept {
  if (closed()) return;
  if (ring_broken_.load()) {
    // Served through the server only: the flag that tells clients so is said again (members
    // can clear it), and nothing of the ring is audited or trimmed.
    region_.set_flags(region::kFlagCorrupt);
    return;
  }
  region::Header& header = region_.header();
  const uint64_t tail = header.tail.load();
  const uint64_t stored = header.stored_bytes.load();
  // Only a ring that did not move for a whole period: a send between its budget and its
  // record (a few instructions) is long over by then, so what the audit sees is what is held.
  const bool quiet = tail == maintained_tail_ && stored == maintained_stored_;
  maintained_tail_ = tail;
  maintained_stored_ = stored;
  if (!quiet) return;
  {
    std::lock_guard delay_lock(delay_mu_);  // in the lock order (group.hpp)
    std::lock_guard publish_lock(publish_mu_);
    if (region_.audit(delayed_bytes_ + overflow_bytes_)) audits_.fetch_add(1);
  }
  // A ring that was used gives its pages back once, until it is used again.
  if (tail != 0 && tail != trimmed_tail_ && region_.trim()) {
    trimmed_tail_ = header.tail.load();
    maintained_tail_ = trimmed_tail_;
  }
  if (overflow_count_.load() != 0) {
    {
      std::lock_guard lock(publish_mu_);
      refill_locked();  // a send that met the trim's reservation went behind the ring
    }
    settle();
  }
}

void Group::update_room_interest() noexcept {
  // Clients' freed room matters while writers wait (the flag sends every writer through us,
  // behind them) or the server holds messages behind the ring.
  if (writers_waiting_.load() != 0) {
    region_.set_flags(region::kFlagWritersWait);
    region_.set_interest(region::kInterestRoom);
    return;
  }
  region_.clear_flags(region::kFlagWritersWait);
  if (!overflow_active_.load()) region_.clear_interest(region::kInterestRoom);
}

void Group::notify_watchers() noexcept {
  if (watchers_.load() == 0) return;
  std::lock_guard lock(watch_mu_);
  for (ReadyWatcher* watcher = watchers_head_; watcher != nullptr; watcher = watcher->next_) {
    watcher->on_ready_changed();
  }
}

synch_group_stats Group::stats() const noexcept {
  synch_group_stats stats{};
  uint64_t delayed_bytes;
  {
    std::lock_guard lock(delay_mu_);
    stats.delayed_messages = delayed_.size();
    delayed_bytes = delayed_bytes_;
  }
  stats.delayed_bytes = delayed_bytes;
  // A ring the server found broken is not walked: what the server holds is the group's queue,
  // by its own counts.
  const bool broken = ring_broken_.load();
  const region::Region::Snapshot ring = broken ? region_.snapshot(0, 0) : region_.snapshot();
  const uint64_t stored = broken ? held_bytes_.load() : ring.stored_bytes;
  stats.queued_bytes = stored > delayed_bytes ? stored - delayed_bytes : 0;
  stats.queued_messages = (broken ? 0 : ring.queued) + overflow_count_.load();
  stats.sleepers = barrier_.sleepers();
  stats.readers_waiting = readers_waiting_.load() + ring.readers_waiting;
  return stats;
}

// ---- lifecycle ----

void Group::close(std::errc reason) noexcept {
  if (closed_.exchange(true)) return;
  region_.set_flags(region::kFlagClosed);  // clients' calls and waits end with EIDRM
  region_.wake_all();
  barrier_.close(reason);
  fail_parked(readers_mu_, parked_readers_, readers_waiting_, reason);
  fail_parked(writers_mu_, parked_writers_, writers_waiting_, reason);

  {
    std::lock_guard lock(delay_mu_);
    delayed_.clear();
    release_storage(delayed_bytes_);
    delayed_bytes_ = 0;
    timers_.cancel(delay_timer_);
  }
  {
    // What the server holds behind the ring: its own, counted, dropped whole.
    std::lock_guard lock(publish_mu_);
    overflow_.clear();
    release_storage(overflow_bytes_);
    overflow_bytes_ = 0;
    overflow_count_.store(0);
  }
  // A removed group may live on while files of it stay open (a FUSE mount keeps them until
  // their release): its messages are gone, and so are its ring's pages, once the ring is empty
  // (trim() punches nothing under a pop still copying out or a client's reservation).
  if (!ring_broken_.load() && drain_ring()) region_.trim();
  notify_watchers();
}

bool Group::drain_ring() noexcept {
  // Bounded twice, whatever members write meanwhile (a ring they keep refilling never empties,
  // issue 14): by the messages the ring can hold (one of a byte spans 32 bytes: more taken than
  // that are a member's doing) and by kCloseDrainTime (a large ring of small messages may need
  // longer, and lost CASes take no message: its pages then stay until the region's last
  // mapping goes, as a member's would).
  const auto give_up = std::chrono::steady_clock::now() + kCloseDrainTime;
  const uint64_t most = region_.records() / 2 + region::Region::kMaxTries;
  uint64_t taken = 0;
  uint32_t length = 0;
  for (uint64_t tries = 1;; ++tries) {
    switch (region_.pop({}, region::kServerSlot, length)) {  // an empty buffer: nothing copied
      case region::Region::Take::kEmpty:
        return true;
      case region::Region::Take::kCorrupt:
        mark_ring_broken();
        return false;
      case region::Region::Take::kPending:
        // A send under way at the front (or a client killed mid-send, which its repair ends):
        // nobody's fault, and nobody reads the group any more. What is behind it stays.
        return false;
      case region::Region::Take::kTaken:
        if (length == 0) {
          // No sender makes an empty message (a zero-length write stores nothing): forged.
          report_corrupt("a member forged its shared ring (an empty message in it at removal)");
          return false;
        }
        if (++taken > most) {
          report_corrupt(
              "a member forged its shared ring (more messages in it at removal than it holds)");
          return false;
        }
        break;
      case region::Region::Take::kContended:  // other poppers won: the time bound counts them
        break;
    }
    if (tries % 64 == 0 && std::chrono::steady_clock::now() > give_up) {
      report_corrupt(
          "its shared ring was not emptied within the bound at removal (a member may "
          "be refilling it): what is left stays unreachable in its pages until the "
          "region's last mapping goes");
      return false;
    }
  }
}

}  // namespace synchmess::core
