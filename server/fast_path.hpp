// FastPath: the server's side of the fast path (docs/DESIGN.md, "The fast path"): offers and
// the handshake socket, each client's connection (its end is how the server learns of the
// client's death, and what it held is taken back then), the groups' eventfds, and the periodic
// care of every region (repairs that had to wait, trimming, budget audits).
//
// Contract:
// - offer() hands out a one-time secret for one group, valid `offer_lifetime`, to a caller the
//   device authorized (the handler checks O_RDWR); at most `offers_per_group` live per group
//   (the oldest goes first), so members of one group cannot crowd out another's.
// - A connection that sends a live secret, from the uid it was offered to (or root), gets a
//   client slot and the region's memfd and the group's eventfd; anything else is closed. A
//   connection that says nothing within `hello_deadline` is closed; at most
//   `max_unauthenticated` wait at once (others are closed at accept).
// - When a client's connection ends, its slot is repaired (Region::repair_client) at once, or
//   at the next maintenance tick when a reservation may still be in flight; the slot is
//   reused only after its repair is done.
// - Work per event is bounded: a group's eventfd costs one on_region_activity(), whatever a
//   member writes into it.
// Thread-safety: every method, any thread; sources run on the event loop's workers.
// Lifetime: create() after the loop, destroy after the loop stopped (the destructor closes
// every descriptor it holds and cancels its timer).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <synchmess/synchmess.h>

#include "core/group.hpp"
#include "core/result.hpp"
#include "core/timer_queue.hpp"
#include "server/event_loop.hpp"

namespace synchmess::server {

class FastPath {
 public:
  struct Settings {
    bool offers = true;  // false (--no-fast-path): offers are refused, EOPNOTSUPP
    std::chrono::milliseconds offer_lifetime{5000};
    std::chrono::milliseconds hello_deadline{2000};
    std::chrono::milliseconds maintenance_period{1000};
    unsigned max_unauthenticated = 256;
    unsigned offers_per_group = 64;
  };

  // Listens on a fresh abstract socket, "synchmess-<pid>-<random>".
  static core::Result<std::unique_ptr<FastPath>> create(EventLoop& loop, core::TimerQueue& timers,
                                                        Settings settings) noexcept;
  ~FastPath();
  FastPath(const FastPath&) = delete;
  FastPath& operator=(const FastPath&) = delete;

  // An installed group: its eventfd is watched and its region cared for.
  void add_group(const std::shared_ptr<core::Group>& group) noexcept;
  // A removed group: its offers are void, its clients' connections are ended.
  void remove_group(const std::shared_ptr<core::Group>& group) noexcept;
  // EOPNOTSUPP (offers disabled), ESHUTDOWN (stopped), ENODEV (the group is not served here).
  core::Result<synch_fastpath_offer> offer(const std::shared_ptr<core::Group>& group,
                                           uid_t uid) noexcept;
  // No more offers or handshakes; every connection is ended (the server is stopping).
  void stop() noexcept;

  const std::string& socket_name() const noexcept { return socket_name_; }
  std::size_t clients() const noexcept;  // connections that hold a slot

  class Connection;

 private:
  class ListenerSource;
  class GroupSource;
  struct Offer {
    std::shared_ptr<core::Group> group;
    uid_t uid;
    core::TimerQueue::Clock::time_point expires;
  };
  struct Served {
    std::shared_ptr<core::Group> group;
    uint64_t source_id = 0;          // the eventfd's source
    std::deque<std::string> offers;  // its live secrets, oldest first
  };
  struct PendingRepair {
    std::shared_ptr<core::Group> group;
    unsigned slot;
  };

  FastPath(EventLoop& loop, core::TimerQueue& timers, Settings settings, int listener,
           std::string name) noexcept;
  void accept_connections() noexcept;
  // A connection's hello: the secret it sent (exactly SYNCH_FASTPATH_SECRET_BYTES bytes). True
  // when it was granted a slot; false: the connection is to be closed.
  bool on_hello(Connection& connection, const std::string& secret) noexcept;
  // Ends a connection (its source removed, its descriptor closed) and repairs its slot.
  void close_connection(Connection& connection) noexcept;
  void repair(const std::shared_ptr<core::Group>& group, unsigned slot) noexcept;
  static void on_tick(void* self) noexcept;
  void tick() noexcept;

  EventLoop& loop_;
  core::TimerQueue& timers_;
  const Settings settings_;
  const int listener_fd_;
  const std::string socket_name_;
  uint64_t listener_id_ = 0;
  core::Timer tick_timer_;

  mutable std::mutex mu_;
  bool stopped_ = false;                                         // guarded by mu_
  std::map<const core::Group*, Served> groups_;                  // guarded by mu_
  std::unordered_map<std::string, Offer> offers_;                // guarded by mu_
  std::map<uint64_t, std::shared_ptr<Connection>> connections_;  // guarded by mu_
  unsigned unauthenticated_ = 0;                                 // guarded by mu_
  std::vector<PendingRepair> repairs_;                           // guarded by mu_
};

}  // namespace synchmess::server
