// server::FastPath: offers, the handshake on its socket, and what happens when a client's
// connection ends (docs/DESIGN.md, "The handshake", "Failure matrix"), on a real event loop.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include "core/registry.hpp"
#include "region/handshake.hpp"
#include "region/region.hpp"
#include "server/event_loop.hpp"
#include "server/fast_path.hpp"
#include "test_support.hpp"

using namespace synchmess::test;
using synchmess::region::Region;
using synchmess::server::EventLoop;
using synchmess::server::EventSource;
using synchmess::server::FastPath;
namespace handshake = synchmess::region::handshake;

namespace {

class TimerSource final : public EventSource {
 public:
  explicit TimerSource(TimerQueue& timers) noexcept : timers_(timers) {}
  void on_readable(const synchmess::server::Event& event,
                   synchmess::server::Worker&) noexcept override {
    timers_.run_due();
    event.rearm();
  }

 private:
  TimerQueue& timers_;
};

// A server's fast path on a loop of two workers, serving one group.
struct Server {
  explicit Server(FastPath::Settings settings = {}) {
    auto created = EventLoop::create(2);
    REQUIRE(created.ok());
    loop = std::move(created.value());
    REQUIRE(loop->add(timers->fd(), std::make_shared<TimerSource>(*timers)).ok());
    auto made = FastPath::create(*loop, *timers, settings);
    REQUIRE(made.ok());
    fast_path = std::move(made.value());
    fast_path->add_group(group);
    loop->start();
  }
  ~Server() {
    fast_path->stop();
    loop->stop();
    fast_path.reset();
    loop->remove_all();
  }
  std::unique_ptr<TimerQueue> timers = make_timer_queue();
  Params params;
  std::shared_ptr<Group> group = std::make_shared<Group>("fast", kOwner, params, *timers);
  std::unique_ptr<EventLoop> loop;
  std::unique_ptr<FastPath> fast_path;
};

// A client's end of a handshake: the connection, and what the grant brought.
struct Client {
  int socket = -1;
  handshake::Received grant{};
  ~Client() {
    if (socket >= 0) ::close(socket);
    if (grant.memfd > 0) ::close(grant.memfd);
    if (grant.eventfd > 0) ::close(grant.eventfd);
  }
};

std::string name_of(const synch_fastpath_offer& offer) {
  return std::string(offer.socket_name, strnlen(offer.socket_name, sizeof offer.socket_name));
}

// Connects and says `secret`; the grant's result.
synchmess::core::Result<handshake::Received> knock(const synch_fastpath_offer& offer,
                                                   const uint8_t* secret, Client& client) {
  auto connected = handshake::connect_to(name_of(offer));
  REQUIRE(connected.ok());
  client.socket = connected.value();
  REQUIRE(::send(client.socket, secret, SYNCH_FASTPATH_SECRET_BYTES, MSG_NOSIGNAL) ==
          SYNCH_FASTPATH_SECRET_BYTES);
  auto received = handshake::receive_grant(client.socket);
  if (received.ok()) client.grant = received.value();
  return received;
}

synch_fastpath_offer offer_of(Server& server, uid_t uid) {
  auto offer = server.fast_path->offer(server.group, uid);
  REQUIRE(offer.ok());
  return offer.value();
}

}  // namespace

TEST_CASE("FastPath: a live secret buys a slot and the group's region, once") {
  Server server;
  const synch_fastpath_offer offer = offer_of(server, ::geteuid());
  CHECK(name_of(offer) == server.fast_path->socket_name());
  CHECK(offer.version == synchmess::region::kLayoutVersion);

  Client client;
  auto granted = knock(offer, offer.secret, client);
  REQUIRE(granted.ok());
  const unsigned slot = granted.value().grant.slot;
  CHECK(slot != synchmess::region::kServerSlot);
  CHECK(server.group->region().slot_assigned(slot));
  CHECK(server.fast_path->clients() == 1);
  auto attached = Region::attach(granted.value().memfd);
  REQUIRE(attached.ok());
  Region& region = attached.value();
  CHECK(region.client(slot).pid.load() == static_cast<uint32_t>(::getpid()));
  const std::string text = "through shared memory";
  CHECK(region.push(bytes_of(text), static_cast<uint16_t>(slot), 1 << 20, true) ==
        Region::Put::kStored);
  CHECK(try_receive_text(*server.group) == text);

  // The same secret again: the connection is closed without a grant.
  Client again;
  auto refused = knock(offer, offer.secret, again);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error() == std::errc::connection_reset);

  // A made-up secret: likewise.
  uint8_t wrong[SYNCH_FASTPATH_SECRET_BYTES] = {1, 2, 3};
  Client guesser;
  CHECK_FALSE(knock(offer, wrong, guesser).ok());
  CHECK(server.fast_path->clients() == 1);
}

TEST_CASE("FastPath: a client's end gives its slot back, with what it held") {
  Server server;
  const synch_fastpath_offer offer = offer_of(server, ::geteuid());
  unsigned slot = 0;
  {
    Client client;
    auto granted = knock(offer, offer.secret, client);
    REQUIRE(granted.ok());
    slot = granted.value().grant.slot;
    auto attached = Region::attach(granted.value().memfd);
    REQUIRE(attached.ok());
    Region& region = attached.value();
    // It dies waiting in a receive and asleep on the barrier: its counts must go.
    region.start_waiting_reader(static_cast<uint16_t>(slot));
    (void)region.barrier_enter(static_cast<uint16_t>(slot));
    CHECK(server.group->stats().readers_waiting == 1);
    CHECK(server.group->stats().sleepers == 1);
  }  // the connection closes as a process's would when it dies
  CHECK(eventually([&] { return server.fast_path->clients() == 0; }));
  CHECK(eventually([&] { return !server.group->region().slot_assigned(slot); }));
  CHECK(server.group->stats().readers_waiting == 0);
  CHECK(server.group->stats().sleepers == 0);
}

TEST_CASE("FastPath: a process killed mid-send holds nothing once its connection ended") {
  Server server;
  const synch_fastpath_offer offer = offer_of(server, ::geteuid());
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // No threads, no doctest here: the handshake, a reserved budget and a record left
    // RESERVED (as a producer killed while copying leaves it), then wait to be killed.
    auto connected = handshake::connect_to(name_of(offer));
    if (!connected.ok()) ::_exit(1);
    if (::send(connected.value(), offer.secret, sizeof offer.secret, MSG_NOSIGNAL) !=
        static_cast<ssize_t>(sizeof offer.secret)) {
      ::_exit(2);
    }
    auto granted = handshake::receive_grant(connected.value());
    if (!granted.ok()) ::_exit(3);
    auto attached = Region::attach(granted.value().memfd);
    if (!attached.ok()) ::_exit(4);
    Region& region = attached.value();
    const auto slot = static_cast<uint16_t>(granted.value().grant.slot);
    const std::string text(100, 'k');
    if (region.push(bytes_of(text), slot, 1 << 20, true) != Region::Put::kStored) ::_exit(5);
    // A second message, reserved and never committed: what a producer killed mid-copy leaves.
    synchmess::region::Header& header = region.header();
    const uint64_t at = header.tail.load();
    region.header().stored_bytes.fetch_add(200);
    header.tail.store(at + synchmess::region::record_span(200));
    auto* record = reinterpret_cast<synchmess::region::RecordHeader*>(
        reinterpret_cast<char*>(&header) + synchmess::region::kRingOffset +
        (at & (region.ring_bytes() - 1)));
    record->length.store(200);
    record->budget.store(200);
    record->tag.store(make_tag(at, slot, synchmess::region::RecordState::kReserved));
    (void)!::write(ready[1], "r", 1);
    for (;;)
      ::pause();
  }
  ::close(ready[1]);
  char byte = 0;
  REQUIRE(::read(ready[0], &byte, 1) == 1);
  ::close(ready[0]);
  CHECK(server.group->stats().queued_bytes == 300);
  ::kill(child, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(eventually([&] { return server.fast_path->clients() == 0; }));
  // Its committed message stays (it was sent); the reserved one is taken back.
  CHECK(try_receive_text(*server.group) == std::string(100, 'k'));
  CHECK(eventually([&] { return server.group->stats().queued_bytes == 0; }));
  CHECK(server.group->region().header().stored_bytes.load() == 0);
  CHECK_FALSE(try_receive_text(*server.group).has_value());
}

TEST_CASE("FastPath: refusals: offers off, an expired secret, another uid's, a removed group") {
  SUBCASE("offers disabled (--no-fast-path)") {
    Server server(FastPath::Settings{.offers = false});
    auto offer = server.fast_path->offer(server.group, ::geteuid());
    REQUIRE_FALSE(offer.ok());
    CHECK(offer.error() == std::errc::operation_not_supported);
  }
  SUBCASE("an expired secret") {
    Server server(FastPath::Settings{.offer_lifetime = std::chrono::milliseconds(20)});
    const synch_fastpath_offer offer = offer_of(server, ::geteuid());
    // The secret's lifetime passing is the subject (a real clock: the offer's expiry).
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    Client client;
    CHECK_FALSE(knock(offer, offer.secret, client).ok());
  }
  SUBCASE("a secret offered to another uid") {
    Server server;
    const uid_t other = ::geteuid() == 0 ? 4321 : ::geteuid() + 1;
    const synch_fastpath_offer offer = offer_of(server, other);
    if (::geteuid() == 0) {
      // Root may use any secret; an unprivileged process of a third uid may not.
      const pid_t child = ::fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        if (::setresuid(65534, 65534, 65534) != 0) ::_exit(10);
        Client client;
        auto connected = handshake::connect_to(name_of(offer));
        if (!connected.ok()) ::_exit(11);
        client.socket = connected.value();
        if (::send(client.socket, offer.secret, sizeof offer.secret, MSG_NOSIGNAL) < 0) {
          ::_exit(12);
        }
        auto granted = handshake::receive_grant(client.socket);
        ::_exit(granted.ok() ? 13 : 0);
      }
      int status = 0;
      REQUIRE(::waitpid(child, &status, 0) == child);
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    } else {
      Client client;
      CHECK_FALSE(knock(offer, offer.secret, client).ok());
    }
    CHECK(server.fast_path->clients() == 0);
  }
  SUBCASE("a removed group: no offers, and its clients' connections end") {
    Server server;
    const synch_fastpath_offer offer = offer_of(server, ::geteuid());
    Client client;
    REQUIRE(knock(offer, offer.secret, client).ok());
    const synch_fastpath_offer unused = offer_of(server, ::geteuid());
    server.group->close(std::errc::identifier_removed);
    server.fast_path->remove_group(server.group);
    pollfd item{client.socket, POLLIN, 0};
    CHECK(::poll(&item, 1, 10000) == 1);  // the end of the connection
    char byte;
    CHECK(::recv(client.socket, &byte, 1, 0) == 0);
    Client late;
    CHECK_FALSE(knock(unused, unused.secret, late).ok());
    auto offer_again = server.fast_path->offer(server.group, ::geteuid());
    REQUIRE_FALSE(offer_again.ok());
    CHECK(offer_again.error() == std::errc::no_such_device);
  }
}

TEST_CASE("FastPath: a silent connection is closed after the hello deadline") {
  Server server(FastPath::Settings{.hello_deadline = std::chrono::milliseconds(10),
                                   .maintenance_period = std::chrono::milliseconds(20)});
  const synch_fastpath_offer offer = offer_of(server, ::geteuid());
  auto connected = handshake::connect_to(name_of(offer));
  REQUIRE(connected.ok());
  pollfd item{connected.value(), POLLIN, 0};
  CHECK(::poll(&item, 1, 10000) == 1);
  char byte;
  CHECK(::recv(connected.value(), &byte, 1, 0) == 0);
  ::close(connected.value());
}
