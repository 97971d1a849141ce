#include "server/fast_path.hpp"

#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "region/handshake.hpp"
#include "region/layout.hpp"
#include "server/log.hpp"

namespace synchmess::server {
namespace {

using core::make_error;
using Clock = core::TimerQueue::Clock;

constexpr int kBacklog = 128;
constexpr int kAcceptsPerEvent = 64;

// `count` random bytes, or nothing when the kernel has no randomness to give.
std::optional<std::string> random_bytes(std::size_t count) noexcept {
  std::string bytes(count, '\0');
  std::size_t filled = 0;
  while (filled < count) {
    const ssize_t got = ::getrandom(bytes.data() + filled, count - filled, GRND_NONBLOCK);
    if (got < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    filled += static_cast<std::size_t>(got);
  }
  return bytes;
}

std::string hex_of(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text;
  for (const char byte : bytes) {
    text += kDigits[static_cast<unsigned char>(byte) >> 4];
    text += kDigits[static_cast<unsigned char>(byte) & 15];
  }
  return text;
}

}  // namespace

// One client's connection: first its hello, then (authenticated) nothing but its end.
class FastPath::Connection final : public EventSource {
 public:
  Connection(FastPath& owner, int fd, Clock::time_point accepted) noexcept
      : owner_(owner), fd_(fd), accepted_(accepted) {}

  void on_readable(const Event& event, Worker&) noexcept override {
    char buffer[SYNCH_FASTPATH_SECRET_BYTES + 1];
    ssize_t got = 0;
    {
      // Once rearmed, the next event may run on another worker and close the connection at
      // once. The kernel orders that after our epoll_ctl, but ThreadSanitizer cannot see it
      // (it models no release in EPOLL_CTL_MOD) and reported the close racing our rearm: the
      // descriptor's uses and its close are ordered by io_mu_ as well.
      std::lock_guard io(io_mu_);
      if (fd_closed_) return;
      got = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
        event.rearm();
        return;
      }
    }
    if (got == SYNCH_FASTPATH_SECRET_BYTES && !authenticated() &&
        owner_.on_hello(*this, std::string(buffer, static_cast<std::size_t>(got)))) {
      std::lock_guard io(io_mu_);
      if (!fd_closed_) event.rearm();
      return;
    }
    owner_.close_connection(*this);  // its end, an error, a bad hello, or talk after it
  }

  bool authenticated() const noexcept {
    std::lock_guard lock(owner_.mu_);
    return group_ != nullptr;
  }

 private:
  friend class FastPath;
  FastPath& owner_;
  const int fd_;
  const Clock::time_point accepted_;
  uint64_t id_ = 0;                     // set before the source is watched
  std::shared_ptr<core::Group> group_;  // guarded by owner_.mu_: set once authenticated
  unsigned slot_ = 0;                   // guarded by owner_.mu_
  bool closed_ = false;                 // guarded by owner_.mu_
  // Lock order: owner_.mu_, then io_mu_ (close_fd()); on_readable takes io_mu_ alone.
  std::mutex io_mu_;
  bool fd_closed_ = false;  // guarded by io_mu_

 public:
  // Ends the descriptor's use: out of the loop, closed. Under owner_.mu_.
  void close_fd(EventLoop& loop) noexcept {
    std::lock_guard io(io_mu_);
    fd_closed_ = true;
    loop.remove(id_, fd_);
    ::close(fd_);
  }
};

class FastPath::ListenerSource final : public EventSource {
 public:
  explicit ListenerSource(FastPath& owner) noexcept : owner_(owner) {}
  void on_readable(const Event& event, Worker&) noexcept override {
    owner_.accept_connections();
    event.rearm();
  }

 private:
  FastPath& owner_;
};

// A group's eventfd: clients changed something the server asked to hear of.
class FastPath::GroupSource final : public EventSource {
 public:
  explicit GroupSource(std::shared_ptr<core::Group> group) noexcept : group_(std::move(group)) {}
  void on_readable(const Event& event, Worker&) noexcept override {
    group_->on_region_activity();  // reads the eventfd: one wake-up, however many writes
    event.rearm();
  }

 private:
  const std::shared_ptr<core::Group> group_;
};

core::Result<std::unique_ptr<FastPath>> FastPath::create(EventLoop& loop, core::TimerQueue& timers,
                                                         Settings settings) noexcept {
  // A name nobody else holds: another process may have bound one like it (then try again).
  for (int tries = 0; tries < 8; ++tries) {
    const auto random = random_bytes(8);
    if (!random) return make_error(std::errc::resource_unavailable_try_again);
    std::string name = "synchmess-" + std::to_string(::getpid()) + "-" + hex_of(*random);
    auto listener = region::handshake::listen_on(name, kBacklog);
    if (!listener) {
      if (listener.error() == std::errc::address_in_use) continue;
      return make_error(listener.error());
    }
    std::unique_ptr<FastPath> fast_path(
        new FastPath(loop, timers, settings, listener.value(), std::move(name)));
    auto added = loop.add(fast_path->listener_fd_, std::make_shared<ListenerSource>(*fast_path));
    if (!added) return make_error(added.error());
    fast_path->listener_id_ = added.value();
    timers.arm(fast_path->tick_timer_, timers.now() + settings.maintenance_period);
    return fast_path;
  }
  return make_error(std::errc::address_in_use);
}

FastPath::FastPath(EventLoop& loop, core::TimerQueue& timers, Settings settings, int listener,
                   std::string name) noexcept
    : loop_(loop),
      timers_(timers),
      settings_(settings),
      listener_fd_(listener),
      socket_name_(std::move(name)),
      tick_timer_(&FastPath::on_tick, this) {}

FastPath::~FastPath() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;  // a tick running now does not arm itself again
  }
  timers_.cancel_sync(tick_timer_);
  std::lock_guard lock(mu_);
  if (listener_id_ != 0) loop_.remove(listener_id_, listener_fd_);
  ::close(listener_fd_);
  for (auto& [id, connection] : connections_) {
    connection->close_fd(loop_);
    connection->closed_ = true;
  }
  connections_.clear();
  for (auto& [group, served] : groups_) {
    if (served.source_id != 0) loop_.remove(served.source_id, served.group->notify_fd());
  }
  groups_.clear();
}

// ---- groups and offers ----

void FastPath::add_group(const std::shared_ptr<core::Group>& group) noexcept {
  std::lock_guard lock(mu_);
  if (stopped_ || groups_.count(group.get()) != 0) return;
  Served served;
  served.group = group;
  if (group->notify_fd() >= 0) {
    auto added = loop_.add(group->notify_fd(), std::make_shared<GroupSource>(group));
    if (added) {
      served.source_id = added.value();
    } else {
      log::warning(
          "group '{}': cannot watch its eventfd ({}): clients' sends reach parked "
          "readers late",
          group->name(), std::strerror(core::to_errno(added.error())));
    }
  }
  groups_.emplace(group.get(), std::move(served));
}

void FastPath::remove_group(const std::shared_ptr<core::Group>& group) noexcept {
  std::lock_guard lock(mu_);
  auto served = groups_.find(group.get());
  if (served == groups_.end()) return;
  if (served->second.source_id != 0) loop_.remove(served->second.source_id, group->notify_fd());
  for (const std::string& secret : served->second.offers)
    offers_.erase(secret);
  groups_.erase(served);
  // Its clients see the group closed in the region; their connections end here (each then
  // closes itself on its worker).
  for (auto& [id, connection] : connections_) {
    if (connection->group_ == group) ::shutdown(connection->fd_, SHUT_RDWR);
  }
}

core::Result<synch_fastpath_offer> FastPath::offer(const std::shared_ptr<core::Group>& group,
                                                   uid_t uid) noexcept {
  if (!settings_.offers) return make_error(std::errc::operation_not_supported);
  auto secret = random_bytes(SYNCH_FASTPATH_SECRET_BYTES);
  if (!secret) return make_error(std::errc::resource_unavailable_try_again);
  std::lock_guard lock(mu_);
  if (stopped_) return make_error(static_cast<std::errc>(ESHUTDOWN));
  auto served = groups_.find(group.get());
  if (served == groups_.end()) return make_error(std::errc::no_such_device);
  std::deque<std::string>& live = served->second.offers;
  while (live.size() >= settings_.offers_per_group) {
    offers_.erase(live.front());
    live.pop_front();
  }
  offers_[*secret] = Offer{group, uid, timers_.now() + settings_.offer_lifetime};
  live.push_back(*secret);

  synch_fastpath_offer offer{};
  std::memcpy(offer.secret, secret->data(), sizeof offer.secret);
  static_assert(sizeof offer.socket_name == SYNCH_FASTPATH_SOCKET_MAX);
  std::memcpy(offer.socket_name, socket_name_.data(),
              std::min(socket_name_.size(), sizeof offer.socket_name - 1));
  offer.version = region::kLayoutVersion;
  return offer;
}

void FastPath::stop() noexcept {
  std::lock_guard lock(mu_);
  if (stopped_) return;
  stopped_ = true;
  offers_.clear();
  for (auto& [group, served] : groups_)
    served.offers.clear();
  ::shutdown(listener_fd_, SHUT_RDWR);  // closed by the destructor (a worker may be in accept)
  for (auto& [id, connection] : connections_)
    ::shutdown(connection->fd_, SHUT_RDWR);
}

std::size_t FastPath::clients() const noexcept {
  std::lock_guard lock(mu_);
  return static_cast<std::size_t>(
      std::count_if(connections_.begin(), connections_.end(),
                    [](const auto& entry) { return entry.second->group_ != nullptr; }));
}

// ---- connections ----

void FastPath::accept_connections() noexcept {
  for (int accepted = 0; accepted < kAcceptsPerEvent; ++accepted) {
    const int fd = ::accept4(listener_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        log::warning("fast path: cannot accept a connection: {}", std::strerror(errno));
      }
      return;
    }
    std::lock_guard lock(mu_);
    if (stopped_ || unauthenticated_ >= settings_.max_unauthenticated) {
      ::close(fd);  // the client uses the device
      continue;
    }
    auto connection = std::make_shared<Connection>(*this, fd, timers_.now());
    connection->id_ = loop_.register_source(fd, connection);
    if (!loop_.watch(connection->id_)) {
      loop_.remove(connection->id_, fd);
      ::close(fd);
      continue;
    }
    connections_.emplace(connection->id_, std::move(connection));
    ++unauthenticated_;
  }
}

bool FastPath::on_hello(Connection& connection, const std::string& secret) noexcept {
  ucred peer{};
  socklen_t peer_size = sizeof peer;
  if (::getsockopt(connection.fd_, SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) != 0) return false;
  std::lock_guard lock(mu_);
  if (stopped_ || connection.closed_) return false;
  auto found = offers_.find(secret);
  if (found == offers_.end()) return false;
  const Offer offer = found->second;
  offers_.erase(found);  // once, whatever follows
  if (auto served = groups_.find(offer.group.get()); served != groups_.end()) {
    std::deque<std::string>& live = served->second.offers;
    live.erase(std::remove(live.begin(), live.end(), secret), live.end());
  } else {
    return false;  // removed since
  }
  if (timers_.now() > offer.expires || offer.group->closed()) return false;
  if (peer.uid != offer.uid && peer.uid != 0) return false;  // someone else's secret

  region::Region& region = offer.group->region();
  const auto slot = region.open_client(peer.pid);
  if (!slot) return false;  // the client table is full: the device serves this one
  const region::handshake::Grant grant{region::handshake::kGrantMagic, region::kLayoutVersion,
                                       *slot, 0, region.region_bytes()};
  if (!region::handshake::send_grant(connection.fd_, grant, region.fd(),
                                     offer.group->notify_fd())) {
    region.release_unused_slot(*slot);  // it never had the region: nothing to repair
    return false;
  }
  connection.group_ = offer.group;
  connection.slot_ = *slot;
  --unauthenticated_;
  return true;
}

void FastPath::close_connection(Connection& connection) noexcept {
  std::shared_ptr<core::Group> group;
  unsigned slot = 0;
  std::shared_ptr<Connection> keep;  // the source may be the last owner: it goes after us
  {
    std::lock_guard lock(mu_);
    if (connection.closed_) return;
    connection.closed_ = true;
    connection.close_fd(loop_);
    if (connection.group_ == nullptr) --unauthenticated_;
    group = std::move(connection.group_);
    slot = connection.slot_;
    if (auto entry = connections_.find(connection.id_); entry != connections_.end()) {
      keep = std::move(entry->second);
      connections_.erase(entry);
    }
  }
  if (group) repair(group, slot);
}

void FastPath::repair(const std::shared_ptr<core::Group>& group, unsigned slot) noexcept {
  // A removed group's ring is not walked: nothing in it is anybody's any more (its clients'
  // connections end at its removal, all at once: a walk each would be work for nothing).
  if (group->closed()) return;
  // At once: a client that died holding records held them; one that died between reserving
  // space and tagging it needs the grace period (the next tick) to be told from a live one.
  if (group->region().repair_client(slot, false) == region::Region::Repair::kDone) {
    group->on_region_activity();
    return;
  }
  std::lock_guard lock(mu_);
  repairs_.push_back({group, slot});
}

// ---- the tick ----

void FastPath::on_tick(void* self) noexcept {
  static_cast<FastPath*>(self)->tick();
}

void FastPath::tick() noexcept {
  const Clock::time_point now = timers_.now();
  std::vector<PendingRepair> repairs;
  std::vector<std::shared_ptr<core::Group>> groups;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    repairs.swap(repairs_);
    for (auto offer = offers_.begin(); offer != offers_.end();) {
      if (now <= offer->second.expires) {
        ++offer;
        continue;
      }
      if (auto served = groups_.find(offer->second.group.get()); served != groups_.end()) {
        std::deque<std::string>& live = served->second.offers;
        live.erase(std::remove(live.begin(), live.end(), offer->first), live.end());
      }
      offer = offers_.erase(offer);
    }
    for (auto& [id, connection] : connections_) {
      if (connection->group_ == nullptr && now - connection->accepted_ > settings_.hello_deadline) {
        ::shutdown(connection->fd_, SHUT_RDWR);  // silent too long: it closes itself
      }
    }
    groups.reserve(groups_.size());
    for (auto& [key, served] : groups_)
      groups.push_back(served.group);
  }
  // One repair (a walk of the ring, up to D / 16 records) per group and tick: the tick runs
  // among the timers of every group, and members can keep their dead slots' repairs from
  // finishing (an untagged record in front that never gets its tag). The ones not tried this
  // tick go first next time, before the ones tried again: a slot that never finishes cannot
  // keep its group's other dead slots waiting.
  std::vector<PendingRepair> untried;
  std::vector<PendingRepair> again;
  std::vector<const core::Group*> walked;
  for (PendingRepair& pending : repairs) {
    if (pending.group->closed()) continue;  // nothing left to take back
    if (std::find(walked.begin(), walked.end(), pending.group.get()) != walked.end()) {
      untried.push_back(std::move(pending));
      continue;
    }
    walked.push_back(pending.group.get());
    if (pending.group->region().repair_client(pending.slot, true) ==
        region::Region::Repair::kDone) {
      pending.group->on_region_activity();
    } else {
      again.push_back(std::move(pending));  // a live producer is mid-send in front of it
    }
  }
  for (const auto& group : groups)
    group->maintain();
  {
    std::lock_guard lock(mu_);
    // Queued meanwhile: untried too, after the ones this tick left out.
    untried.insert(untried.end(), std::make_move_iterator(repairs_.begin()),
                   std::make_move_iterator(repairs_.end()));
    untried.insert(untried.end(), std::make_move_iterator(again.begin()),
                   std::make_move_iterator(again.end()));
    repairs_.swap(untried);
    if (stopped_) return;
  }
  timers_.arm(tick_timer_, timers_.now() + settings_.maintenance_period);
}

}  // namespace synchmess::server
