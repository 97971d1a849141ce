#include "core/group.hpp"

#include <algorithm>
#include <thread>
#include <vector>

#include "core/baton.hpp"

namespace synchmess::core {

void Waiter::on_timeout(void* self) noexcept {
  auto* waiter = static_cast<Waiter*>(self);
  waiter->parked_on_->on_wait_timeout(*waiter);
}

Group::Group(std::string name, uid_t owner, const Params& params, TimerQueue& timers,
             Quotas& quotas) noexcept
    : name_(std::move(name)),
      owner_(owner),
      params_(params),
      timers_(timers),
      quotas_(quotas),
      delay_timer_(&Group::on_delay_timer, this) {}

Group::~Group() {
  close(std::errc::identifier_removed);
  timers_.cancel_sync(delay_timer_);
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
  constexpr uint64_t kSlot = MessageQueue::bytes_per_slot();
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
  const uint64_t budget = params_.max_storage_size();
  uint64_t stored = stored_bytes_.load();
  do {
    if (stored + size > budget) return false;
  } while (!stored_bytes_.compare_exchange_weak(stored, stored + size));
  return true;
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
    bool published;
    if (publish_gate_.fetch_add(1) & kBatchBit) {
      // A flush or expiry run is being published: go after it, not into the middle of it.
      publish_gate_.fetch_sub(1);
      std::lock_guard lock(delay_mu_);
      published = make_available(std::move(message));
    } else {
      published = make_available(std::move(message));
      publish_gate_.fetch_sub(1);
    }
    if (!published) return make_error(std::errc::not_enough_memory);
    return {};
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
  // Opens a batch when `count` messages (more than one) are about to be published together.
  BatchPublication(Group& group, std::size_t count) noexcept : group_(group), active_(count > 1) {
    if (!active_) return;
    group_.publish_gate_.fetch_or(kBatchBit);
    for (int spins = 0; (group_.publish_gate_.load() & ~kBatchBit) != 0; ++spins) {
      if (spins > 64) std::this_thread::yield();  // a sender was preempted inside its push
    }
  }
  ~BatchPublication() {
    if (active_) group_.publish_gate_.fetch_and(~kBatchBit);
  }
  BatchPublication(const BatchPublication&) = delete;
  BatchPublication& operator=(const BatchPublication&) = delete;

 private:
  Group& group_;
  const bool active_;
};

bool Group::make_available(MessagePtr message) noexcept {
  const uint64_t size = message->size();
  if (!queue_.push(std::move(message))) {
    release_storage(size);
    return false;
  }
  queued_messages_.fetch_add(1);
  return true;
}

void Group::release_storage(uint64_t bytes) noexcept {
  stored_bytes_.fetch_sub(bytes);
}

MessagePtr Group::take_message() noexcept {
  MessagePtr message = queue_.pop();
  if (message) {
    queued_messages_.fetch_sub(1);
    release_storage(message->size());
  }
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
  WaiterList admitted;  // local: only this thread follows it
  WaiterList too_big;   // the budget was lowered below their size: they can never fit
  {
    std::lock_guard lock(writers_mu_);
    while (Waiter* writer = parked_writers_.front()) {
      const uint64_t size = writer->carried_->size();
      const bool never = size > params_.max_storage_size();
      if (!never && !reserve_storage(size)) break;  // arrival order: nobody overtakes it
      parked_writers_.remove(*writer);
      writers_waiting_.fetch_sub(1);
      (never ? too_big : admitted).push_back(*writer);
    }
  }
  while (Waiter* writer = too_big.pop_front()) {
    timers_.cancel_sync(writer->timeout_);
    writer->carried_.reset();
    writer->complete(WaitOutcome::failed(std::errc::no_space_on_device));
  }
  bool stored_any = false;
  while (Waiter* writer = admitted.pop_front()) {
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
    // and serves us (both sequentially consistent).
    readers_waiting_.fetch_add(1);
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
    if (!make_available(std::move(node.mapped()))) continue;  // out of memory: dropped, freed
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
      if (make_available(std::move(node.mapped()))) ++flushed;
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
  ready.readable = queued_messages_.load() > 0;
  // A writer waiting for space comes before any other: no POLLOUT while one waits.
  ready.writable = !ready.closed && writers_waiting_.load() == 0 &&
                   stored_bytes_.load() + params_.max_message_size() <= params_.max_storage_size();
  return ready;
}

void Group::watch(ReadyWatcher& watcher) noexcept {
  std::lock_guard lock(watch_mu_);
  watcher.prev_ = nullptr;
  watcher.next_ = watchers_head_;
  if (watchers_head_ != nullptr) watchers_head_->prev_ = &watcher;
  watchers_head_ = &watcher;
  watchers_.fetch_add(1);
}

void Group::unwatch(ReadyWatcher& watcher) noexcept {
  std::lock_guard lock(watch_mu_);
  (watcher.prev_ != nullptr ? watcher.prev_->next_ : watchers_head_) = watcher.next_;
  if (watcher.next_ != nullptr) watcher.next_->prev_ = watcher.prev_;
  watcher.prev_ = watcher.next_ = nullptr;
  watchers_.fetch_sub(1);
}

void Group::on_params_changed() noexcept {
  settle();  // a raised budget lets writers in; a lowered one fails those that can never fit
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
  const uint64_t stored = stored_bytes_.load();
  stats.queued_bytes = stored > delayed_bytes ? stored - delayed_bytes : 0;
  const int64_t queued = queued_messages_.load();
  stats.queued_messages = queued > 0 ? static_cast<uint64_t>(queued) : 0;
  stats.sleepers = barrier_.sleepers();
  stats.readers_waiting = readers_waiting_.load();
  return stats;
}

// ---- lifecycle ----

void Group::close(std::errc reason) noexcept {
  if (closed_.exchange(true)) return;
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
  while (take_message()) {
  }
  notify_watchers();
}

}  // namespace synchmess::core
