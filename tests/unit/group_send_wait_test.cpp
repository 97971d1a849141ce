// The send timeout in the core (SPEC "Messages": SET_SEND_TIMEOUT): parked writers, served in
// arrival order as receives, revokes, a raised budget or a removal free space; timeouts,
// cancellation, refusals that no wait can end, readiness, the in-process blocking send, and a
// stress of blocking producers and consumers on a tiny budget.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "test_support.hpp"

using synchmess::core::kQuotaExceeded;
using synchmess::core::Quotas;
using namespace synchmess::test;

namespace {

constexpr uid_t kSender = 1000;

// A group whose budget holds `budget` bytes.
struct SendFixture : GroupFixture {
  explicit SendFixture(uint64_t budget = 8) { set_params(budget, budget); }

  // send_or_park of `text`; REQUIREs that it did not fail. True when it was sent at once.
  bool send_or_park(std::string_view text, RecordingWaiter& writer,
                    std::chrono::milliseconds timeout = Group::kWaitForever) {
    auto sent = group.send_or_park(bytes_of(text), kSender, writer, timeout);
    REQUIRE_MESSAGE(sent.ok(), "send_or_park failed: ", error_of(sent));
    if (sent.value()) REQUIRE(*sent.value() == text.size());
    return sent.value().has_value();
  }
};

}  // namespace

TEST_CASE("send_or_park: a message that fits is sent at once, nothing parks") {
  SendFixture fixture;
  RecordingWaiter writer;
  CHECK(fixture.send_or_park("abcd", writer));
  CHECK(writer.completions() == 0);
  CHECK_FALSE(fixture.group.cancel_send(writer));
  CHECK(receive_all(fixture.group) == std::vector<std::string>{"abcd"});
}

TEST_CASE("send_or_park: a full group parks the writer until a receive frees space") {
  SendFixture fixture;
  RecordingWaiter writer;
  REQUIRE(fixture.send_or_park("1111", writer));
  REQUIRE(fixture.send_or_park("2222", writer));
  CHECK_FALSE(fixture.send_or_park("3333", writer));  // 8 bytes stored: parked
  CHECK(writer.completions() == 0);
  CHECK_FALSE(fixture.group.readiness().writable);  // nobody may overtake the waiting writer
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);

  CHECK(try_receive_text(fixture.group) == std::optional<std::string>("1111"));
  REQUIRE(writer.completions() == 1);
  CHECK(writer.last().error == std::errc{});
  CHECK_FALSE(writer.last().timed_out);
  CHECK(receive_all(fixture.group) == std::vector<std::string>{"2222", "3333"});
  CHECK(fixture.group.readiness().writable);
  CHECK(fixture.timers->armed() == 0);
}

TEST_CASE("send_or_park: writers are served in arrival order; a small one never overtakes") {
  SendFixture fixture;
  RecordingWaiter first;
  RecordingWaiter second;
  RecordingWaiter third;
  REQUIRE(fixture.send_or_park("aaaa", first));
  REQUIRE(fixture.send_or_park("bbb", first));  // 7 of 8 bytes
  CHECK_FALSE(fixture.send_or_park("cccc", first));
  CHECK_FALSE(fixture.send_or_park("d", second));  // would fit (1 byte left), but waits behind
  CHECK_FALSE(fixture.send_or_park("ee", third));
  CHECK(second.completions() == 0);

  CHECK(try_receive_text(fixture.group) == std::optional<std::string>("aaaa"));  // 3 stored
  // 5 bytes free: "cccc" (4) goes, then "d" (1); "ee" must wait for more.
  CHECK(first.completions() == 1);
  CHECK(second.completions() == 1);
  CHECK(third.completions() == 0);
  CHECK(try_receive_text(fixture.group) == std::optional<std::string>("bbb"));
  CHECK(third.completions() == 1);
  CHECK(receive_all(fixture.group) == std::vector<std::string>{"cccc", "d", "ee"});
}

TEST_CASE("send_or_park: timeout, cancel and close end a wait; the message is not sent") {
  Quotas quotas;
  SendFixture fixture;
  Group group("quotas", kOwner, fixture.params, *fixture.timers, quotas);
  RecordingWaiter filler;
  REQUIRE(group.send_or_park(bytes_of("12345678"), kSender, filler, 1s).value().has_value());
  const uint64_t one_message = quotas.memory_used();

  SUBCASE("the timeout passes: timed_out, the charge comes back") {
    RecordingWaiter writer;
    REQUIRE_FALSE(group.send_or_park(bytes_of("late"), kSender, writer, 100ms).value());
    CHECK(quotas.memory_used() > one_message);  // the parked message is real memory
    fixture.advance(99ms);
    CHECK(writer.completions() == 0);
    fixture.advance(1ms);
    REQUIRE(writer.completions() == 1);
    CHECK(writer.last().timed_out);
    CHECK(quotas.memory_used() == one_message);
  }
  SUBCASE("a timed-out head lets the writers behind it in") {
    RecordingWaiter big;
    RecordingWaiter small;
    REQUIRE(group.try_receive().value() != nullptr);  // empty now
    REQUIRE(group.send_or_park(bytes_of("123456"), kSender, filler, 1s).value().has_value());
    REQUIRE_FALSE(group.send_or_park(bytes_of("abcd"), kSender, big, 50ms).value());
    REQUIRE_FALSE(group.send_or_park(bytes_of("z"), kSender, small, Group::kWaitForever).value());
    fixture.advance(50ms);
    CHECK(big.last().timed_out);
    REQUIRE(small.completions() == 1);
    CHECK(small.last().error == std::errc{});
  }
  SUBCASE("cancel (an interrupt): not sent, and the next writer may go") {
    RecordingWaiter writer;
    REQUIRE_FALSE(
        group.send_or_park(bytes_of("gone"), kSender, writer, Group::kWaitForever).value());
    CHECK(group.cancel_send(writer));
    CHECK_FALSE(group.cancel_send(writer));
    CHECK(writer.completions() == 0);
    CHECK(quotas.memory_used() == one_message);
  }
  SUBCASE("close: EIDRM, nothing held") {
    RecordingWaiter writer;
    REQUIRE_FALSE(group.send_or_park(bytes_of("gone"), kSender, writer, 1s).value());
    group.close(std::errc::identifier_removed);
    REQUIRE(writer.completions() == 1);
    CHECK(writer.last().error == std::errc::identifier_removed);
    CHECK(quotas.memory_used() == 0);
    CHECK(fixture.timers->armed() == 0);
  }
  group.close(std::errc::identifier_removed);
}

TEST_CASE(
    "send_or_park: revoke and a raised budget free space; a lowered one ends hopeless waits") {
  SendFixture fixture;
  RecordingWaiter writer;
  fixture.group.set_send_delay(1000);
  REQUIRE(fixture.send_or_park("dddddddd", writer));  // delayed, 8 bytes: full
  fixture.group.set_send_delay(0);
  CHECK_FALSE(fixture.send_or_park("now", writer));
  CHECK(fixture.group.revoke_delayed() == 1);
  REQUIRE(writer.completions() == 1);
  CHECK(receive_all(fixture.group) == std::vector<std::string>{"now"});

  RecordingWaiter first;
  RecordingWaiter second;
  REQUIRE(fixture.send_or_park("1234", first));
  REQUIRE(fixture.send_or_park("5678", first));
  CHECK_FALSE(fixture.send_or_park("abcd", first));
  fixture.set_params(8, 12);
  fixture.group.on_params_changed();
  CHECK(first.completions() == 1);
  CHECK_FALSE(fixture.send_or_park("efgh", second));
  fixture.set_params(3, 3);  // below its size: it can never fit
  fixture.group.on_params_changed();
  REQUIRE(second.completions() == 1);
  CHECK(second.last().error == std::errc::no_space_on_device);
  CHECK(receive_all(fixture.group) == std::vector<std::string>{"1234", "5678", "abcd"});
}

TEST_CASE("send_or_park: refusals that no wait can end come at once") {
  Quotas quotas({.max_memory = 1 << 20, .max_user_memory = 200, .max_user_groups = 1});
  SendFixture fixture;
  Group group("refusals", kOwner, fixture.params, *fixture.timers, quotas);
  fixture.set_params(4, 8);
  RecordingWaiter writer;
  CHECK(error_of(group.send_or_park(bytes_of("12345"), kSender, writer, 1s)) ==
        std::errc::message_size);  // over max_message_size (4)
  fixture.set_params(16, 8);
  CHECK(error_of(group.send_or_park(bytes_of("123456789"), kSender, writer, 1s)) ==
        std::errc::no_space_on_device);  // over max_storage_size: it can never fit
  group.set_send_delay(1000);            // held on the server's heap, so charged to the sender
  REQUIRE(group.send_or_park(bytes_of("1"), kSender, writer, 1s).value().has_value());
  CHECK(error_of(group.send_or_park(bytes_of("2"), kSender, writer, 1s)) == kQuotaExceeded);
  CHECK(writer.completions() == 0);
  CHECK(fixture.timers->armed() == 1);  // the delayed message's timer; no writer's
  group.close(std::errc::identifier_removed);
}

TEST_CASE("Group::send with a timeout blocks the thread until space frees, or fails") {
  Params params;
  REQUIRE(params.set({.max_message_size = 8, .max_storage_size = 8}));
  auto timers = make_timer_queue();
  Group group("blocking", kOwner, params, *timers);
  send_text(group, "12345678");

  SUBCASE("the timeout passes: ENOSPC") {
    auto sent = group.send(bytes_of("x"), kSender, 30ms);
    CHECK(error_of(sent) == std::errc::no_space_on_device);
  }
  SUBCASE("a receive on another thread lets it in") {
    std::atomic<bool> done{false};
    std::thread writer([&] {
      auto sent = group.send(bytes_of("late"), kSender, Group::kWaitForever);
      CHECK(sent.ok());
      done.store(true);
    });
    REQUIRE(eventually([&] { return !group.readiness().writable; }));
    CHECK_FALSE(done.load());
    CHECK(try_receive_text(group) == std::optional<std::string>("12345678"));
    writer.join();
    CHECK(receive_all(group) == std::vector<std::string>{"late"});
  }
  SUBCASE("a signal: EINTR, nothing sent") {
    InterruptingSignal signal;
    std::atomic<bool> done{false};
    std::errc error{};
    std::thread writer([&] {
      error = error_of(group.send(bytes_of("never"), kSender, Group::kWaitForever));
      done.store(true);
    });
    REQUIRE(InterruptingSignal::interrupt_until(writer, done));
    writer.join();
    CHECK(error == std::errc::interrupted);
    CHECK(receive_all(group) == std::vector<std::string>{"12345678"});
  }
}

TEST_CASE("send with a timeout, stress: blocking producers on a tiny budget lose nothing") {
  Params params;
  REQUIRE(params.set({.max_message_size = 16, .max_storage_size = 24}));
  auto timers = make_timer_queue();
  Group group("stress", kOwner, params, *timers);
  constexpr int kProducers = 3;
  constexpr int kConsumers = 2;
  constexpr int kPerProducer = 3000;
  std::atomic<int> received{0};
  std::atomic<int> errors{0};
  std::vector<std::vector<int>> last_seen(kConsumers, std::vector<int>(kProducers, -1));
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        const std::string text = std::to_string(p) + ":" + std::to_string(i);
        if (!group.send(bytes_of(text), kSender, Group::kWaitForever).ok()) errors.fetch_add(1);
      }
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      while (received.load() < kProducers * kPerProducer) {
        auto message = group.receive(5ms);
        if (!message.ok()) {
          errors.fetch_add(1);
          return;
        }
        if (!message.value()) continue;
        const std::string text = text_of(*message.value());
        const int producer = std::stoi(text.substr(0, text.find(':')));
        const int seq = std::stoi(text.substr(text.find(':') + 1));
        if (seq <= last_seen[c][producer]) errors.fetch_add(1);  // FIFO per producer
        last_seen[c][producer] = seq;
        received.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  CHECK(errors.load() == 0);
  CHECK(received.load() == kProducers * kPerProducer);
  CHECK(group.stats().queued_messages == 0);
}
