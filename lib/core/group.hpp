// Group: the state behind one /dev/synch/<name> device.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <synchmess/synchmess.h>

#include "core/barrier.hpp"
#include "core/message.hpp"
#include "core/params.hpp"
#include "core/quotas.hpp"
#include "core/result.hpp"
#include "core/timer_queue.hpp"
#include "core/waiter.hpp"
#include "region/region.hpp"

namespace synchmess::core {

// Told when a group's readiness may have changed (a message became available, space was freed,
// the group was closed). A server keeps one per open file to answer poll().
// Contract: on_ready_changed() runs under the group's watcher lock, on the thread that changed
// the state; it must be short and must not call back into the group's watch()/unwatch().
class ReadyWatcher {
 public:
  virtual ~ReadyWatcher() = default;
  virtual void on_ready_changed() noexcept = 0;

 private:
  friend class Group;
  ReadyWatcher* prev_ = nullptr;  // guarded by Group::watch_mu_
  ReadyWatcher* next_ = nullptr;  // guarded by Group::watch_mu_
};

class Group;

// Told of what the server should log about a group: its shared region was found corrupt (a
// member wrote what no library writes) or could not be drained at removal; at most once per
// group. `what` is a sentence that says which, for the log.
// Contract: runs on the thread that found it, possibly under the group's locks; it must be short
// and must not call back into the group.
class GroupObserver {
 public:
  virtual ~GroupObserver() = default;
  virtual void on_region_corrupt(const Group& group, std::string_view what) noexcept = 0;
};

struct Readiness {
  bool readable = false;  // a message is available (POLLIN)
  bool writable = false;  // a message of max_message_size bytes would fit (POLLOUT)
  bool closed = false;    // the group was removed (POLLERR)
};

// Contract (SPEC.md "Messages", "Delays, revoke, flush", "Barrier"):
// - send() stores one whole message, immediately or after the group's send delay, never waits,
//   and fails with EMSGSIZE, EDQUOT or ENOSPC at once; a zero-length send stores nothing.
//   send_or_park() waits for the group's budget instead (parked writers, served in arrival
//   order; no other send overtakes them).
// - Messages become available in FIFO order (immediate ones at send, delayed ones at expiry,
//   flushed ones at flush in write order) and each is received exactly once.
// - The storage budget counts available and delayed bytes and is never exceeded, even under
//   concurrent senders (a reservation is one CAS on `stored_bytes_`).
// - Waiting (parked readers and writers, barrier sleepers) holds no thread; see Waiter.
// - close() (group removed, server stopping) fails every waiter with its reason; later calls
//   fail with ENODEV.
// Thread-safety: every method may be called from any thread at any time.
// Lifetime: owned by shared_ptr (registry, open files). The destructor closes the group and
// cancels its timers.
// Memory ordering: a send happens-before the receive that returns its message; counters used
// for readiness and parking are sequentially consistent with the queue operations, so a reader
// that parks and a sender that checks for parked readers never both miss each other.
// Lock order (a thread holding one may take only those after it; checked by TSan in CI):
//   1. readers_mu_, writers_mu_, delay_mu_: at most one of the three at a time;
//   2. publish_mu_ (taken under any of them: a parked reader's take, a batch publication,
//      maintain()'s audit);
//   3. the TimerQueue's mu_ (arm/cancel under any of the above; never cancel_sync(), which
//      waits for a running callback: callbacks run under the TimerQueue's run_mu_ and take 1
//      and 2, so cancel_sync() runs with no lock held);
//   4. leaves: the GroupObserver's (a log's rate limit), called under 1 or 2.
// watch_mu_ is taken with no other lock of the group held (notify_watchers(), watch()), and
// the watchers' callbacks (their own file's lock) run under it; the Barrier's lock is taken
// alone and calls nothing. readers_mu_ is held across a parked reader's caller_dying() (a
// /proc read: DESIGN.md, "Dying readers" says why).
class Group {
 public:
  using Clock = TimerQueue::Clock;
  static constexpr std::chrono::milliseconds kWaitForever = std::chrono::milliseconds::max();

  // Messages are charged to `quotas` (their sender's share and the global bound); the group's
  // available messages, budget and barrier live in `region` (the fast path's shared memory).
  Group(std::string name, uid_t owner, const Params& params, TimerQueue& timers, Quotas& quotas,
        region::Region region) noexcept;
  // With a region of its own (in-process users, tests: the process ends if none can be made).
  Group(std::string name, uid_t owner, const Params& params, TimerQueue& timers,
        Quotas& quotas = Quotas::unlimited()) noexcept;
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  const std::string& name() const noexcept { return name_; }
  uid_t owner() const noexcept { return owner_; }
  // A removed group that files still hold open (a FUSE mount keeps them until their release)
  // lingers, counted among its owner's lingering groups (Quotas::group_removed, at removal)
  // until it is destroyed: the Registry sets this for the groups it installs.
  void count_lingering() noexcept { counts_lingering_ = true; }
  // Where a corrupt region is reported (nullptr: nowhere). Set before the group is shared.
  void set_observer(GroupObserver* observer) noexcept { observer_ = observer; }

  // ---- messages ----

  // Sends `bytes` as one message from uid `sender`, who is charged its footprint(); returns
  // bytes.size(). EMSGSIZE: larger than max_message_size. EDQUOT: the sender's share of message
  // memory is full; ENOSPC: the global bound on message memory, or the group's stored bytes would
  // exceed max_storage_size. ENOMEM. ENODEV: the group was closed.
  Result<std::size_t> send(std::span<const std::byte> bytes, uid_t sender) noexcept;
  // In-process sends are charged to the group's owner.
  Result<std::size_t> send(std::span<const std::byte> bytes) noexcept {
    return send(bytes, owner_);
  }

  // The memory the server spends on one stored message of `size` bytes, as the quotas count it:
  // its allocation (header and payload, rounded as glibc's malloc rounds a request: 8 bytes of
  // chunk header, a multiple of 16, at least 32) plus its place in the containers (the larger of
  // its share of a ring segment and a node of the delayed-message map).
  static uint64_t footprint(uint64_t size) noexcept;

  // Takes the oldest available message; nullptr when there is none. Never waits.
  Result<MessagePtr> try_receive() noexcept;
  // The oldest message is a client's send still being copied into the shared ring (see
  // region::Region::front_pending): try_receive() gave nullptr, but the group is not empty.
  bool message_pending() const noexcept { return region_.front_pending(); }

  // In-process receive: blocks the calling thread (futex) up to `timeout` for a message.
  // nullptr when the timeout passed; EINTR when a signal handler interrupted the wait.
  Result<MessagePtr> receive(std::chrono::milliseconds timeout) noexcept;

  // Server receive: returns a message at once when one is available. Otherwise parks `waiter`
  // and returns nullptr: the waiter completes later with a message, with timed_out after
  // `timeout` (kWaitForever: never), or with EIDRM when the group is closed.
  Result<MessagePtr> receive_or_park(Waiter& waiter, std::chrono::milliseconds timeout) noexcept;

  // Removes a parked reader (its caller was interrupted). True when it was still parked;
  // false when it has been or is being completed.
  bool cancel_receive(Waiter& waiter) noexcept;

  // Server send with a send timeout (SPEC "Messages"): sends at once when the message fits and
  // no writer waits before it (returns the size). When only the group's budget stands in the
  // way, parks `writer` with the message and returns nothing: writers are served in arrival
  // order as receives, revokes or a raised budget free space, and the writer completes with
  // success (sent), timed_out after `timeout` (kWaitForever: never), ENOSPC when the budget
  // was lowered below its size, or EIDRM when the group is closed. Refusals that no wait can
  // end fail at once: EMSGSIZE, EDQUOT and the global bound's ENOSPC, and ENOSPC for a message
  // larger than max_storage_size.
  Result<std::optional<std::size_t>> send_or_park(std::span<const std::byte> bytes, uid_t sender,
                                                  Waiter& writer,
                                                  std::chrono::milliseconds timeout) noexcept;
  // Removes a parked writer (interrupted): its message is not sent. As cancel_receive.
  bool cancel_send(Waiter& writer) noexcept;
  // In-process send that blocks the calling thread (futex) up to `timeout` for space; timed_out
  // gives ENOSPC, a signal handler EINTR.
  Result<std::size_t> send(std::span<const std::byte> bytes, uid_t sender,
                           std::chrono::milliseconds timeout) noexcept;

  // ---- delays ----

  void set_send_delay(uint32_t milliseconds) noexcept;
  uint32_t send_delay() const noexcept { return send_delay_ms_.load(std::memory_order_relaxed); }

  // Discards every delayed message whose delay has not expired; returns how many. Their bytes
  // are free at once. Messages whose delay expired are available and stay.
  std::size_t revoke_delayed() noexcept;

  // Makes every delayed message available now, in write order; returns how many.
  std::size_t flush() noexcept;

  // ---- barrier ----
  // The group's Barrier behind a closed check: once the group is closed, these fail with
  // ENODEV (sleepers already parked or asleep when it closed got EIDRM from the Barrier).

  Status sleep_on_barrier() noexcept;
  Status park_on_barrier(Waiter& waiter) noexcept;  // see Barrier::park
  bool cancel_barrier_wait(Waiter& waiter) noexcept { return barrier_.cancel(waiter); }
  Result<uint64_t> awake_barrier() noexcept;
  Barrier& barrier() noexcept { return barrier_; }

  // ---- readiness and statistics ----

  Readiness readiness() const noexcept;
  void watch(ReadyWatcher& watcher) noexcept;
  void unwatch(ReadyWatcher& watcher) noexcept;
  // Tells the watchers that readiness may have changed.
  void notify_watchers() noexcept;
  // The parameters changed: a raised budget may let parked writers in; readiness may change.
  void on_params_changed() noexcept;

  // ---- the shared region (fast path) ----
  region::Region& region() noexcept { return region_; }
  // The eventfd clients write to when the server wants to hear of their changes
  // (server_interest): the server watches it and calls on_region_activity().
  int notify_fd() const noexcept { return notify_fd_; }
  // Clients changed the region: answers parked readers, writers and sleepers, refills the ring.
  void on_region_activity() noexcept;
  // The server's periodic care of the region (about once a second, one caller at a time): a
  // ring that stayed empty and still for a whole period gives its pages back (Region::trim),
  // and its budget counter is corrected to what the server holds (Region::audit: what a client
  // killed mid-send left in it).
  void maintain() noexcept;
  uint64_t budget_corrections() const noexcept { return audits_.load(); }
  // What the server keeps of the group's budget on its own heap (delayed messages, the
  // overflow, sends on their way), by its own count: never above max_storage_size at the time
  // each was reserved, whatever members write into the region.
  uint64_t held_bytes() const noexcept { return held_bytes_.load(); }

  synch_group_stats stats() const noexcept;
  // Writers parked for room (not in synch_group_stats, whose layout is ABI; in the listing).
  uint64_t writers_waiting() const noexcept { return writers_waiting_.load(); }

  // ---- lifecycle ----

  // Ends every wait with `reason`, discards delayed and available messages; later operations
  // fail with ENODEV. Idempotent (the first reason wins). Bounded whatever the region holds:
  // what the server keeps is dropped, and the ring is drained for at most kCloseDrainTime (so
  // that its pages can go back, Region::trim); what a member keeps refilling stays in the ring,
  // unreachable, until the region's last mapping goes.
  void close(std::errc reason) noexcept;
  static constexpr std::chrono::milliseconds kCloseDrainTime{10};
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

 private:
  friend class Waiter;
  using DelayKey = std::pair<Clock::time_point, uint64_t>;  // (due, write sequence)

  // How many records readiness() looks at for one available message (see there).
  static constexpr uint64_t kReadinessWalk = 256;

  static void on_delay_timer(void* self) noexcept;
  void on_wait_timeout(Waiter& waiter) noexcept;

  // Creates the message of a send: charges the quotas (EDQUOT / ENOSPC), copies the bytes.
  Result<MessagePtr> charged_message(std::span<const std::byte> bytes, uid_t sender) noexcept;
  // Reserves `size` bytes of the group's budget; false when they do not fit.
  bool reserve_storage(uint64_t size) noexcept;
  // Stores a message whose bytes are reserved: available now, or delayed by the send delay.
  // ENOMEM (nothing stored, bytes released) when memory ran out; ENODEV when closed.
  Status store(MessagePtr message) noexcept;
  // Takes the oldest message (the ring, then the overflow behind it); nullptr when none is
  // available now.
  MessagePtr take_message() noexcept;
  // Makes a message whose bytes are reserved available: into the ring, or behind it (the
  // overflow) when the ring has no room or the server already holds some. Requires publish_mu_.
  Status publish_locked(MessagePtr message) noexcept;
  // Moves the overflow's messages into the ring while it has room. Requires publish_mu_.
  void refill_locked() noexcept;
  // The room interest and the writers-wait flag follow the parked writers and the overflow.
  void update_room_interest() noexcept;
  void after_unpark(WaiterList& list) noexcept;
  // After messages became available or space was freed: hands messages to parked readers and
  // space to parked writers, in turns until neither can move, then tells watchers.
  void settle() noexcept;
  bool deliver_to_readers() noexcept;  // true when a parked reader was answered
  bool admit_writers() noexcept;       // true when a parked writer's message was stored
  // After a receive freed space: admits parked writers, or tells watchers (POLLOUT).
  void after_space_freed() noexcept;
  void release_storage(uint64_t bytes) noexcept;
  // The server found the ring broken (members wrote garbage): it uses its overflow queue only.
  void mark_ring_broken() noexcept;
  // Tells the observer, once per group, that members corrupted the region.
  void report_corrupt(std::string_view what) noexcept;
  // The ring's messages dropped at close(), within kCloseDrainTime; true when it is empty.
  bool drain_ring() noexcept;
  // The ring took a message whose bytes the server counted as its own (held_bytes_).
  void ring_took(uint64_t bytes) noexcept { held_bytes_.fetch_sub(bytes); }
  // Takes `waiter` off `list` (guarded by `mu`, counted in `count`); false when it is not on it.
  bool unpark(std::mutex& mu, WaiterList& list, std::atomic<uint64_t>& count,
              Waiter& waiter) noexcept;
  // Completes every waiter of `list` with `reason` (a writer's message is dropped).
  void fail_parked(std::mutex& mu, WaiterList& list, std::atomic<uint64_t>& count,
                   std::errc reason) noexcept;

  // Moves the delayed messages due at `now` to the queue. Requires delay_mu_ and, when more than
  // one may be due, an open batch (BatchPublication).
  std::size_t release_due_locked(Clock::time_point now) noexcept;
  std::size_t due_count_locked(Clock::time_point now, std::size_t at_most) const noexcept;
  void rearm_delay_timer_locked() noexcept;

  // A run of messages published as one step (flush, expiry of several): immediate sends cannot
  // land inside it. Requires delay_mu_. See publish_gate_.
  class BatchPublication;

  const std::string name_;
  const uid_t owner_;
  bool counts_lingering_ = false;  // set once, before the group is shared
  const Params& params_;
  TimerQueue& timers_;
  Quotas& quotas_;

  region::Region region_;  // the ring of available messages, the budget, the barrier word
  const int notify_fd_;    // eventfd: clients tell the server of changes (server_interest)

  std::atomic<uint64_t> readers_waiting_{0};  // parked readers (checked by every send)
  std::atomic<uint64_t> writers_waiting_{0};  // parked writers (checked by every receive)
  std::atomic<uint64_t> watchers_{0};         // registered ReadyWatchers (checked likewise)
  // Read by every operation, rarely written: a line of their own.
  alignas(64) std::atomic<uint32_t> send_delay_ms_{0};
  std::atomic<bool> closed_{false};

  // The server's side of publication: its own pushes into the ring, the overflow behind it (in
  // FIFO order: once it holds a message every later one joins it, clients included, until it is
  // empty again), and runs published as one step.
  std::mutex publish_mu_;
  // A plain FIFO: every push and pop already holds publish_mu_ (a refill must peek at the
  // front before the ring takes it), so a lock-free queue would buy nothing here.
  std::deque<MessagePtr> overflow_;           // guarded by publish_mu_
  std::atomic<bool> overflow_active_{false};  // written under publish_mu_
  // The server's own verdict (the region's kFlagCorrupt is what clients see; members can
  // write it, so the server never reads it).
  std::atomic<bool> ring_broken_{false};
  std::atomic<bool> corrupt_reported_{false};
  GroupObserver* observer_ = nullptr;  // set once, before the group is shared
  // The server's own count of the group's budget that it keeps on its heap: delayed messages,
  // the overflow, and sends between their reservation and their place (ring or heap). Reserved
  // against max_storage_size beside the region's counter, which members can write: whatever
  // the region says, what the server stores for the group stays within the limit.
  std::atomic<uint64_t> held_bytes_{0};
  std::atomic<uint64_t> overflow_count_{0};
  uint64_t overflow_bytes_ = 0;  // guarded by publish_mu_: the payload of overflow_

  // maintain()'s own (one caller at a time).
  uint64_t maintained_tail_ = 0;
  uint64_t maintained_stored_ = 0;
  uint64_t trimmed_tail_ = 0;
  std::atomic<uint64_t> audits_{0};

  mutable std::mutex readers_mu_;
  WaiterList parked_readers_;  // guarded by readers_mu_

  mutable std::mutex writers_mu_;  // never held with readers_mu_ or delay_mu_ (lock order above)
  WaiterList parked_writers_;      // guarded by writers_mu_, in arrival order

  mutable std::mutex delay_mu_;             // also serializes pushes of released delayed messages
  std::map<DelayKey, MessagePtr> delayed_;  // guarded by delay_mu_, by (due, write sequence)
  uint64_t delayed_bytes_ = 0;              // guarded by delay_mu_
  uint64_t next_write_sequence_ = 0;        // guarded by delay_mu_
  Timer delay_timer_;                       // armed at delayed_'s earliest due

  std::mutex watch_mu_;
  ReadyWatcher* watchers_head_ = nullptr;  // guarded by watch_mu_

  Barrier barrier_;  // over region_'s barrier word: declared after it
};

}  // namespace synchmess::core
