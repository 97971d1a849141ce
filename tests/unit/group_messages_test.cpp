// Group messages: sizes, the storage budget, FIFO and exactly-once, short reads, readiness and
// watchers, statistics, and receiving with a timeout (SPEC "Messages").
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace synchmess::test;
using synchmess::core::ReadyWatcher;

namespace {

struct CountingWatcher final : ReadyWatcher {
  std::atomic<int> calls{0};
  void on_ready_changed() noexcept override { calls.fetch_add(1); }
};

// Checks the counters of a quiescent group.
void check_stats(const Group& group, uint64_t queued_messages, uint64_t queued_bytes,
                 uint64_t delayed_messages = 0, uint64_t delayed_bytes = 0) {
  const auto stats = group.stats();
  CHECK(stats.queued_messages == queued_messages);
  CHECK(stats.queued_bytes == queued_bytes);
  CHECK(stats.delayed_messages == delayed_messages);
  CHECK(stats.delayed_bytes == delayed_bytes);
}

}  // namespace

// ---- reading and writing ----

TEST_CASE("Group: an empty group gives nullptr at once") {
  GroupFixture fixture;
  auto received = fixture.group.try_receive();
  REQUIRE(received.ok());
  CHECK(received.value() == nullptr);

  // receive() without a timeout does not wait either.
  auto no_wait = fixture.group.receive(0ms);
  REQUIRE(no_wait.ok());
  CHECK(no_wait.value() == nullptr);
  check_stats(fixture.group, 0, 0);
  CHECK(fixture.group.stats().readers_waiting == 0);
}

TEST_CASE("Group: each send is one message, received whole, in FIFO order") {
  GroupFixture fixture;
  const std::vector<std::string> texts = {"first", "second message", "3", std::string(4096, 'x')};
  for (const auto& text : texts)
    send_text(fixture.group, text);
  check_stats(fixture.group, 4, 5 + 14 + 1 + 4096);
  CHECK(receive_all(fixture.group) == texts);
  check_stats(fixture.group, 0, 0);
}

TEST_CASE("Group: a short read copies what fits and still consumes the whole message") {
  GroupFixture fixture;
  send_text(fixture.group, "hello world");
  send_text(fixture.group, "next");

  auto received = fixture.group.try_receive();
  REQUIRE(received.ok());
  REQUIRE(received.value() != nullptr);
  std::array<std::byte, 5> small{};
  CHECK(received.value()->copy_to(small) == 5);
  CHECK(std::string(reinterpret_cast<const char*>(small.data()), small.size()) == "hello");

  // The rest of the first message is gone: the next read gets the next message.
  CHECK(try_receive_text(fixture.group) == "next");
  CHECK(try_receive_text(fixture.group) == std::nullopt);
}

TEST_CASE("Message::copy_to copies as many bytes as the smaller of buffer and message") {
  auto message = Message::create(bytes_of("abcdef"));
  REQUIRE(message != nullptr);
  std::array<std::byte, 10> large{};
  CHECK(message->copy_to(large) == 6);
  CHECK(std::string(reinterpret_cast<const char*>(large.data()), 6) == "abcdef");
  CHECK(message->copy_to(std::span<std::byte>()) == 0);
  std::array<std::byte, 6> exact{};
  CHECK(message->copy_to(exact) == 6);
}

TEST_CASE("Group: a send of 0 bytes returns 0 and stores nothing") {
  GroupFixture fixture;
  CountingWatcher watcher;
  fixture.group.watch(watcher);

  auto sent = fixture.group.send({});
  REQUIRE(sent.ok());
  CHECK(sent.value() == 0);
  check_stats(fixture.group, 0, 0);
  CHECK(try_receive_text(fixture.group) == std::nullopt);
  CHECK_FALSE(fixture.group.readiness().readable);

  SUBCASE("also with a send delay") {
    fixture.group.set_send_delay(10);
    auto delayed = fixture.group.send({});
    REQUIRE(delayed.ok());
    CHECK(delayed.value() == 0);
    check_stats(fixture.group, 0, 0, 0, 0);
    CHECK(fixture.timers->armed() == 0);
    CHECK(fixture.group.flush() == 0);
  }
  SUBCASE("also when the storage is full") {
    fixture.set_params(10, 10);
    send_text(fixture.group, "0123456789");
    auto empty = fixture.group.send({});
    REQUIRE(empty.ok());
    CHECK(empty.value() == 0);
    check_stats(fixture.group, 1, 10);
  }
  fixture.group.unwatch(watcher);
}

TEST_CASE("Group: exactly max_message_size is accepted, one byte more fails with EMSGSIZE") {
  GroupFixture fixture;
  fixture.set_params(100, 1000);
  const std::string fits(100, 'a');
  const std::string too_big(101, 'b');
  CHECK(error_of(fixture.group.send(bytes_of(too_big))) == std::errc::message_size);
  check_stats(fixture.group, 0, 0);
  send_text(fixture.group, fits);
  check_stats(fixture.group, 1, 100);

  SUBCASE("the default limit is 4096") {
    Params defaults;
    Group group("defaults", kOwner, defaults, *fixture.timers);
    send_text(group, std::string(4096, 'c'));
    CHECK(error_of(group.send(bytes_of(std::string(4097, 'c')))) == std::errc::message_size);
  }
  SUBCASE("the largest setting, 126976 bytes") {
    fixture.set_params(126976, 1 << 20);
    send_text(fixture.group, std::string(126976, 'd'));
    CHECK(error_of(fixture.group.send(bytes_of(std::string(126977, 'd')))) ==
          std::errc::message_size);
  }
  SUBCASE("EMSGSIZE wins over ENOSPC") {
    fixture.set_params(100, 100);
    CHECK(error_of(fixture.group.send(bytes_of(std::string(100, 'e')))) ==
          std::errc::no_space_on_device);
    CHECK(error_of(fixture.group.send(bytes_of(too_big))) == std::errc::message_size);
  }
}

TEST_CASE("Group: the storage budget can be filled exactly, one more byte fails with ENOSPC") {
  GroupFixture fixture;
  fixture.set_params(400, 1000);
  send_text(fixture.group, std::string(400, 'a'));
  send_text(fixture.group, std::string(400, 'b'));
  send_text(fixture.group, std::string(200, 'c'));
  check_stats(fixture.group, 3, 1000);
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);
  check_stats(fixture.group, 3, 1000);  // the failed send stored nothing

  // A receive frees its bytes at once.
  CHECK(try_receive_text(fixture.group) == std::string(400, 'a'));
  check_stats(fixture.group, 2, 600);
  send_text(fixture.group, std::string(400, 'd'));
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);
  CHECK(receive_all(fixture.group) == std::vector<std::string>{std::string(400, 'b'),
                                                               std::string(200, 'c'),
                                                               std::string(400, 'd')});
  check_stats(fixture.group, 0, 0);
}

TEST_CASE("Group: delayed messages count against the storage budget") {
  GroupFixture fixture;
  fixture.set_params(100, 150);
  fixture.group.set_send_delay(1000);
  send_text(fixture.group, std::string(100, 'a'));
  fixture.group.set_send_delay(0);
  send_text(fixture.group, std::string(50, 'b'));
  check_stats(fixture.group, 1, 50, 1, 100);
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);
  fixture.group.set_send_delay(1000);
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);
}

TEST_CASE("Group: lowering the limits keeps the stored messages, later sends obey them") {
  GroupFixture fixture;
  fixture.set_params(1000, 3000);
  send_text(fixture.group, std::string(1000, 'a'));
  send_text(fixture.group, std::string(1000, 'b'));
  fixture.group.set_send_delay(50);
  send_text(fixture.group, std::string(1000, 'c'));
  fixture.group.set_send_delay(0);

  fixture.set_params(10, 50);  // both below what is stored
  check_stats(fixture.group, 2, 2000, 1, 1000);
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);
  CHECK(error_of(fixture.group.send(bytes_of(std::string(11, 'x')))) == std::errc::message_size);

  // The delayed message still lands: the limit never drops a stored message later.
  fixture.advance(50ms);
  check_stats(fixture.group, 3, 3000);
  CHECK(receive_all(fixture.group) == std::vector<std::string>{std::string(1000, 'a'),
                                                               std::string(1000, 'b'),
                                                               std::string(1000, 'c')});

  // Empty again: the new budget applies in full.
  for (int i = 0; i < 5; ++i)
    send_text(fixture.group, "0123456789");
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);
}

TEST_CASE("Group: raising the limits applies to the next send") {
  GroupFixture fixture;
  fixture.set_params(10, 10);
  CHECK(error_of(fixture.group.send(bytes_of(std::string(20, 'a')))) == std::errc::message_size);
  fixture.set_params(20, 20);
  send_text(fixture.group, std::string(20, 'a'));
}

// ---- readiness, watchers, statistics ----

TEST_CASE("Group::readiness: readable while a message is available, writable while one fits") {
  GroupFixture fixture;
  fixture.set_params(100, 250);
  auto ready = fixture.group.readiness();
  CHECK_FALSE(ready.readable);
  CHECK(ready.writable);
  CHECK_FALSE(ready.closed);

  send_text(fixture.group, std::string(100, 'a'));
  ready = fixture.group.readiness();
  CHECK(ready.readable);
  CHECK(ready.writable);  // 100 + 100 <= 250

  send_text(fixture.group, std::string(60, 'b'));
  ready = fixture.group.readiness();
  CHECK(ready.readable);
  CHECK_FALSE(ready.writable);  // 160 + 100 > 250 (although a 90-byte message still fits)
  send_text(fixture.group, std::string(90, 'c'));

  REQUIRE(try_receive_text(fixture.group));
  REQUIRE(try_receive_text(fixture.group));
  ready = fixture.group.readiness();
  CHECK(ready.readable);
  CHECK(ready.writable);  // 90 + 100 <= 250
  REQUIRE(try_receive_text(fixture.group));
  CHECK_FALSE(fixture.group.readiness().readable);

  // Delayed bytes take space but are not readable.
  fixture.group.set_send_delay(10);
  send_text(fixture.group, std::string(100, 'd'));
  send_text(fixture.group, std::string(100, 'e'));
  ready = fixture.group.readiness();
  CHECK_FALSE(ready.readable);
  CHECK_FALSE(ready.writable);
  fixture.advance(10ms);
  CHECK(fixture.group.readiness().readable);

  fixture.group.close(std::errc::identifier_removed);
  ready = fixture.group.readiness();
  CHECK(ready.closed);
  CHECK_FALSE(ready.writable);
}

TEST_CASE("Group: watchers are told when a message arrives and when space is freed") {
  GroupFixture fixture;
  CountingWatcher first;
  CountingWatcher second;
  fixture.group.watch(first);
  fixture.group.watch(second);

  send_text(fixture.group, "a");
  CHECK(first.calls.load() >= 1);
  CHECK(second.calls.load() >= 1);

  int before = first.calls.load();
  REQUIRE(try_receive_text(fixture.group));
  CHECK(first.calls.load() > before);

  SUBCASE("a receive_or_park that finds a message at once also frees space") {
    send_text(fixture.group, "b");
    before = first.calls.load();
    RecordingWaiter reader;
    auto received = fixture.group.receive_or_park(reader, Group::kWaitForever);
    REQUIRE(received.ok());
    REQUIRE(received.value() != nullptr);
    CHECK(first.calls.load() > before);
  }
  SUBCASE("a delayed message tells them when it lands, not when it is sent") {
    fixture.group.set_send_delay(5);
    before = first.calls.load();
    send_text(fixture.group, "late");
    fixture.advance(5ms);
    CHECK(first.calls.load() > before);
  }
  SUBCASE("flush, revoke and close tell them") {
    fixture.group.set_send_delay(5);
    send_text(fixture.group, "flushed");
    before = first.calls.load();
    CHECK(fixture.group.flush() == 1);
    CHECK(first.calls.load() > before);

    send_text(fixture.group, "revoked");
    before = first.calls.load();
    CHECK(fixture.group.revoke_delayed() == 1);
    CHECK(first.calls.load() > before);

    before = first.calls.load();
    fixture.group.close(std::errc::identifier_removed);
    CHECK(first.calls.load() > before);
  }
  SUBCASE("an unwatched watcher is not told any more") {
    fixture.group.unwatch(second);
    before = second.calls.load();
    send_text(fixture.group, "c");
    REQUIRE(try_receive_text(fixture.group));
    CHECK(second.calls.load() == before);
    fixture.group.watch(second);
  }
  SUBCASE("notify_watchers tells every watcher") {
    const int first_before = first.calls.load();
    const int second_before = second.calls.load();
    fixture.group.notify_watchers();
    CHECK(first.calls.load() == first_before + 1);
    CHECK(second.calls.load() == second_before + 1);
  }
  fixture.group.unwatch(first);
  fixture.group.unwatch(second);
}

TEST_CASE("Group::stats: every counter in quiescent states") {
  GroupFixture fixture;
  check_stats(fixture.group, 0, 0, 0, 0);
  send_text(fixture.group, "12345");
  send_text(fixture.group, "123");
  fixture.group.set_send_delay(100);
  send_text(fixture.group, "1234567");
  check_stats(fixture.group, 2, 8, 1, 7);

  RecordingWaiter sleeper;
  fixture.group.barrier().park(sleeper);
  CHECK(fixture.group.stats().sleepers == 1);
  CHECK(fixture.group.stats().readers_waiting == 0);

  fixture.advance(100ms);
  check_stats(fixture.group, 3, 15, 0, 0);
  CHECK(receive_all(fixture.group).size() == 3);

  RecordingWaiter reader;
  REQUIRE(fixture.group.receive_or_park(reader, Group::kWaitForever).ok());
  CHECK(fixture.group.stats().readers_waiting == 1);
  CHECK(fixture.group.barrier().awake() == 1);
  CHECK(fixture.group.stats().sleepers == 0);
  CHECK(fixture.group.cancel_receive(reader));
  const auto stats = fixture.group.stats();
  CHECK(stats.readers_waiting == 0);
  CHECK(stats.queued_messages == 0);
  CHECK(stats.queued_bytes == 0);
}

// ---- server-style receive: receive_or_park ----

TEST_CASE("Group::receive_or_park: an available message is returned at once, nothing parks") {
  GroupFixture fixture;
  send_text(fixture.group, "ready");
  RecordingWaiter reader;
  auto received = fixture.group.receive_or_park(reader, 100ms);
  REQUIRE(received.ok());
  REQUIRE(received.value() != nullptr);
  CHECK(text_of(*received.value()) == "ready");
  CHECK(fixture.group.stats().readers_waiting == 0);
  CHECK(fixture.timers->armed() == 0);
  CHECK_FALSE(fixture.group.cancel_receive(reader));
  CHECK(reader.completions() == 0);
}

TEST_CASE("Group::receive_or_park: a parked reader completes with the next message sent") {
  GroupFixture fixture;
  RecordingWaiter reader;
  auto parked = fixture.group.receive_or_park(reader, 100ms);
  REQUIRE(parked.ok());
  CHECK(parked.value() == nullptr);
  CHECK(fixture.group.stats().readers_waiting == 1);
  CHECK(reader.completions() == 0);

  send_text(fixture.group, "for you");
  REQUIRE(reader.completions() == 1);
  CHECK(reader.last().error == std::errc{});
  CHECK_FALSE(reader.last().timed_out);
  REQUIRE(reader.last().message != nullptr);
  CHECK(text_of(*reader.last().message) == "for you");

  // Delivered, not queued; the timeout was cancelled; cancel is too late now.
  check_stats(fixture.group, 0, 0);
  CHECK(fixture.group.stats().readers_waiting == 0);
  CHECK(fixture.timers->armed() == 0);
  CHECK(fixture.advance(1s) == 0);
  CHECK(reader.completions() == 1);
  CHECK_FALSE(fixture.group.cancel_receive(reader));
}

TEST_CASE("Group::receive_or_park: a dying parked reader is skipped and takes no message") {
  GroupFixture fixture;
  RecordingWaiter dying;
  RecordingWaiter alive;
  REQUIRE(fixture.group.receive_or_park(dying, 100ms).ok());
  REQUIRE(fixture.group.receive_or_park(alive, Group::kWaitForever).ok());
  dying.dying = true;
  send_text(fixture.group, "for the living");
  REQUIRE(dying.completions() == 1);
  CHECK(dying.last().error == std::errc::interrupted);
  CHECK(dying.last().message == nullptr);
  REQUIRE(alive.completions() == 1);
  REQUIRE(alive.last().message != nullptr);
  CHECK(text_of(*alive.last().message) == "for the living");
  CHECK(fixture.group.stats().readers_waiting == 0);
  CHECK(fixture.timers->armed() == 0);  // the dying reader's timeout was cancelled

  SUBCASE("with no live reader left, the message stays queued") {
    RecordingWaiter last;
    REQUIRE(fixture.group.receive_or_park(last, Group::kWaitForever).ok());
    last.dying = true;
    send_text(fixture.group, "kept");
    REQUIRE(last.completions() == 1);
    CHECK(last.last().error == std::errc::interrupted);
    check_stats(fixture.group, 1, 4);
    CHECK(try_receive_text(fixture.group) == std::optional<std::string>("kept"));
  }
}

TEST_CASE("Group::receive_or_park: parked readers are served oldest first") {
  GroupFixture fixture;
  RecordingWaiter first;
  RecordingWaiter second;
  RecordingWaiter third;
  for (RecordingWaiter* reader : {&first, &second, &third}) {
    REQUIRE(fixture.group.receive_or_park(*reader, Group::kWaitForever).ok());
  }
  CHECK(fixture.group.stats().readers_waiting == 3);
  send_text(fixture.group, "one");
  send_text(fixture.group, "two");
  REQUIRE(first.completions() == 1);
  REQUIRE(second.completions() == 1);
  CHECK(third.completions() == 0);
  CHECK(text_of(*first.last().message) == "one");
  CHECK(text_of(*second.last().message) == "two");
  CHECK(fixture.group.stats().readers_waiting == 1);
  CHECK(fixture.group.cancel_receive(third));
}

TEST_CASE("Group::receive_or_park: the reader times out when the timer fires, not before") {
  GroupFixture fixture;
  RecordingWaiter reader;
  REQUIRE(fixture.group.receive_or_park(reader, 100ms).ok());
  CHECK(fixture.timers->armed() == 1);

  fixture.advance(99ms);
  CHECK(reader.completions() == 0);
  CHECK(fixture.group.stats().readers_waiting == 1);

  fixture.advance(1ms);
  REQUIRE(reader.completions() == 1);
  CHECK(reader.last().timed_out);
  CHECK(reader.last().error == std::errc{});
  CHECK(reader.last().message == nullptr);
  CHECK(fixture.group.stats().readers_waiting == 0);
  CHECK_FALSE(fixture.group.cancel_receive(reader));

  // A later message is queued for the next reader, not given to the timed-out one.
  send_text(fixture.group, "later");
  CHECK(reader.completions() == 1);
  CHECK(try_receive_text(fixture.group) == "later");
}

TEST_CASE("Group::receive_or_park: a timeout of 0 completes at the next timer run") {
  GroupFixture fixture;
  RecordingWaiter reader;
  REQUIRE(fixture.group.receive_or_park(reader, 0ms).ok());
  CHECK(reader.completions() == 0);
  fixture.advance(0ms);
  REQUIRE(reader.completions() == 1);
  CHECK(reader.last().timed_out);
}

TEST_CASE("Group::cancel_receive: a parked reader is removed and never completes") {
  GroupFixture fixture;
  RecordingWaiter reader;
  REQUIRE(fixture.group.receive_or_park(reader, 100ms).ok());
  CHECK(fixture.group.cancel_receive(reader));
  CHECK(fixture.group.stats().readers_waiting == 0);
  CHECK(fixture.timers->armed() == 0);
  CHECK_FALSE(fixture.group.cancel_receive(reader));

  fixture.advance(1s);
  send_text(fixture.group, "not for the cancelled reader");
  CHECK(reader.completions() == 0);
  CHECK(try_receive_text(fixture.group) == "not for the cancelled reader");

  // The waiter can park again after a cancel.
  REQUIRE(fixture.group.receive_or_park(reader, Group::kWaitForever).ok());
  send_text(fixture.group, "second park");
  REQUIRE(reader.completions() == 1);
  CHECK(text_of(*reader.last().message) == "second park");
}

TEST_CASE("Group::cancel_receive of a waiter that never parked returns false") {
  GroupFixture fixture;
  RecordingWaiter stranger;
  CHECK_FALSE(fixture.group.cancel_receive(stranger));
  RecordingWaiter parked;
  REQUIRE(fixture.group.receive_or_park(parked, Group::kWaitForever).ok());
  CHECK_FALSE(fixture.group.cancel_receive(stranger));
  CHECK(fixture.group.stats().readers_waiting == 1);
  CHECK(fixture.group.cancel_receive(parked));
}

TEST_CASE("Group::close completes parked readers with its reason, later calls fail with ENODEV") {
  GroupFixture fixture;
  RecordingWaiter timed;
  RecordingWaiter forever;
  REQUIRE(fixture.group.receive_or_park(timed, 100ms).ok());
  REQUIRE(fixture.group.receive_or_park(forever, Group::kWaitForever).ok());

  fixture.group.close(std::errc::identifier_removed);
  for (RecordingWaiter* reader : {&timed, &forever}) {
    REQUIRE(reader->completions() == 1);
    CHECK(reader->last().error == std::errc::identifier_removed);
    CHECK(reader->last().message == nullptr);
  }
  CHECK(fixture.group.closed());
  CHECK(fixture.advance(1s) == 0);
  CHECK(timed.completions() == 1);

  // close() is idempotent: the first reason wins.
  fixture.group.close(std::errc::operation_canceled);
  CHECK(error_of(fixture.group.barrier().sleep()) == std::errc::identifier_removed);
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_such_device);
  CHECK(error_of(fixture.group.try_receive()) == std::errc::no_such_device);
}

// ---- in-process receive with a timeout ----

TEST_CASE("Group::receive: returns nullptr when the timeout passes with no message") {
  GroupFixture fixture;
  auto received = fixture.group.receive(20ms);
  REQUIRE(received.ok());
  CHECK(received.value() == nullptr);
  CHECK(fixture.group.stats().readers_waiting == 0);

  // A message sent after the timeout is queued, not lost to the timed-out receive.
  send_text(fixture.group, "after");
  CHECK(try_receive_text(fixture.group) == "after");
}

TEST_CASE("Group::receive: returns at once when a message is available") {
  GroupFixture fixture;
  send_text(fixture.group, "waiting");
  auto received = fixture.group.receive(Group::kWaitForever);
  REQUIRE(received.ok());
  REQUIRE(received.value() != nullptr);
  CHECK(text_of(*received.value()) == "waiting");
}

TEST_CASE("Group::receive: a message sent during the wait is returned") {
  GroupFixture fixture;
  for (const auto timeout : {Group::kWaitForever, std::chrono::milliseconds(600000)}) {
    CAPTURE(timeout.count());
    std::string text;
    std::errc error{};
    std::thread receiver([&] {
      auto received = fixture.group.receive(timeout);
      error = error_of(received);
      if (received.ok() && received.value()) text = text_of(*received.value());
    });
    REQUIRE(eventually([&] { return fixture.group.stats().readers_waiting == 1; }));
    send_text(fixture.group, "meanwhile");
    receiver.join();
    CHECK(error == std::errc{});
    CHECK(text == "meanwhile");
    CHECK(fixture.group.stats().readers_waiting == 0);
    check_stats(fixture.group, 0, 0);
  }
}

TEST_CASE("Group::receive: a delayed message landing during the wait is returned") {
  GroupFixture fixture;
  fixture.group.set_send_delay(30);
  send_text(fixture.group, "delayed");
  std::string text;
  std::thread receiver([&] {
    auto received = fixture.group.receive(Group::kWaitForever);
    if (received.ok() && received.value()) text = text_of(*received.value());
  });
  REQUIRE(eventually([&] { return fixture.group.stats().readers_waiting == 1; }));
  fixture.advance(30ms);
  receiver.join();
  CHECK(text == "delayed");
}

TEST_CASE("Group::receive: a signal ends the wait with EINTR and the reader stops waiting") {
  GroupFixture fixture;
  InterruptingSignal signal;
  for (const auto timeout : {std::chrono::milliseconds(600000), Group::kWaitForever}) {
    CAPTURE(timeout.count());
    std::atomic<bool> done{false};
    std::errc error{};
    bool got_message = false;
    std::thread receiver([&] {
      auto received = fixture.group.receive(timeout);
      error = error_of(received);
      got_message = received.ok() && received.value() != nullptr;
      done.store(true);
    });
    if (!InterruptingSignal::interrupt_until(receiver, done)) {
      FAIL_CHECK("the signal did not end the receive");
      send_text(fixture.group, "release the receiver");
    }
    receiver.join();
    CHECK(error == std::errc::interrupted);
    CHECK_FALSE(got_message);
    CHECK(fixture.group.stats().readers_waiting == 0);
  }

  // No message is lost to the interrupted reader.
  send_text(fixture.group, "after the signal");
  CHECK(try_receive_text(fixture.group) == "after the signal");
}

TEST_CASE("Group::receive: closing the group ends the wait with its reason") {
  GroupFixture fixture;
  std::errc error{};
  std::thread receiver([&] { error = error_of(fixture.group.receive(Group::kWaitForever)); });
  REQUIRE(eventually([&] { return fixture.group.stats().readers_waiting == 1; }));
  fixture.group.close(std::errc::identifier_removed);
  receiver.join();
  CHECK(error == std::errc::identifier_removed);
}
