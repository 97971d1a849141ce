// Send delays, revoke and flush on a manual clock: nothing here depends on real time
// (SPEC "Delays, revoke, flush" and the FIFO rule of "Messages").
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "test_support.hpp"

using namespace synchmess::test;
using Texts = std::vector<std::string>;

namespace {

// Sends `text` with a send delay of `delay_ms` (the group's setting stays at that value).
void send_delayed(Group& group, uint32_t delay_ms, std::string_view text) {
  group.set_send_delay(delay_ms);
  send_text(group, text);
}

void check_counts(const Group& group, uint64_t queued, uint64_t delayed) {
  const auto stats = group.stats();
  CHECK(stats.queued_messages == queued);
  CHECK(stats.delayed_messages == delayed);
}

}  // namespace

TEST_CASE("Send delay: GET reads back what SET stored, the default is 0") {
  GroupFixture fixture;
  CHECK(fixture.group.send_delay() == 0);
  fixture.group.set_send_delay(250);
  CHECK(fixture.group.send_delay() == 250);
  fixture.group.set_send_delay(UINT32_MAX);
  CHECK(fixture.group.send_delay() == UINT32_MAX);
  fixture.group.set_send_delay(0);
  CHECK(fixture.group.send_delay() == 0);
}

TEST_CASE("Send delay 0: the message is available at once") {
  GroupFixture fixture;
  fixture.group.set_send_delay(100);
  fixture.group.set_send_delay(0);
  send_text(fixture.group, "now");
  check_counts(fixture.group, 1, 0);
  CHECK(fixture.timers->armed() == 0);
  CHECK(try_receive_text(fixture.group) == "now");
}

TEST_CASE("Send delay: the message is not available before its due time and is after it") {
  GroupFixture fixture;
  send_delayed(fixture.group, 100, "later");  // the writer does not wait: send returned
  const auto stats = fixture.group.stats();
  CHECK(stats.delayed_messages == 1);
  CHECK(stats.delayed_bytes == 5);
  CHECK(stats.queued_messages == 0);
  CHECK(stats.queued_bytes == 0);
  CHECK(try_receive_text(fixture.group) == std::nullopt);
  CHECK_FALSE(fixture.group.readiness().readable);

  fixture.advance(99ms);
  CHECK(try_receive_text(fixture.group) == std::nullopt);
  check_counts(fixture.group, 0, 1);

  fixture.advance(1ms);
  const auto landed = fixture.group.stats();
  CHECK(landed.queued_messages == 1);
  CHECK(landed.queued_bytes == 5);
  CHECK(landed.delayed_messages == 0);
  CHECK(landed.delayed_bytes == 0);
  CHECK(fixture.group.readiness().readable);
  CHECK(try_receive_text(fixture.group) == "later");
  CHECK(fixture.timers->armed() == 0);
}

TEST_CASE("Send delay: messages land in due order and equal due times keep write order") {
  GroupFixture fixture;
  send_delayed(fixture.group, 30, "due 30 (1st)");
  send_delayed(fixture.group, 10, "due 10 (1st)");
  send_delayed(fixture.group, 30, "due 30 (2nd)");
  send_delayed(fixture.group, 10, "due 10 (2nd)");
  send_delayed(fixture.group, 20, "due 20");
  send_delayed(fixture.group, 10, "due 10 (3rd)");

  fixture.advance(10ms);
  CHECK(receive_all(fixture.group) == Texts{"due 10 (1st)", "due 10 (2nd)", "due 10 (3rd)"});
  check_counts(fixture.group, 0, 3);
  fixture.advance(20ms);  // passes 20 and 30 in one timer run
  CHECK(receive_all(fixture.group) == Texts{"due 20", "due 30 (1st)", "due 30 (2nd)"});
  check_counts(fixture.group, 0, 0);
}

TEST_CASE("Send delay: a later write with a shorter delay becomes available first") {
  GroupFixture fixture;
  send_delayed(fixture.group, 50, "long");
  send_delayed(fixture.group, 20, "short");
  fixture.advance(20ms);
  CHECK(receive_all(fixture.group) == Texts{"short"});
  fixture.advance(30ms);
  CHECK(receive_all(fixture.group) == Texts{"long"});
}

TEST_CASE("Send delay: a write made later with an earlier-or-equal due time is ordered by due") {
  GroupFixture fixture;
  send_delayed(fixture.group, 50, "A due 50");
  send_delayed(fixture.group, 30, "B due 30");
  fixture.advance(10ms);
  send_delayed(fixture.group, 20, "C due 30, written after B");
  send_delayed(fixture.group, 5, "D due 15");
  send_delayed(fixture.group, 0, "E immediate at 10");

  CHECK(receive_all(fixture.group) == Texts{"E immediate at 10"});
  fixture.advance(5ms);
  CHECK(receive_all(fixture.group) == Texts{"D due 15"});
  fixture.advance(100ms);
  CHECK(receive_all(fixture.group) == Texts{"B due 30", "C due 30, written after B", "A due 50"});
}

TEST_CASE("Send delay: immediate messages sent before a delayed one lands come first") {
  GroupFixture fixture;
  send_delayed(fixture.group, 10, "delayed");
  send_delayed(fixture.group, 0, "immediate 1");
  fixture.advance(10ms);
  send_text(fixture.group, "immediate 2");
  CHECK(receive_all(fixture.group) == Texts{"immediate 1", "delayed", "immediate 2"});
}

TEST_CASE("Send delay: a landing message goes to a parked reader") {
  GroupFixture fixture;
  RecordingWaiter reader;
  REQUIRE(fixture.group.receive_or_park(reader, 1000ms).ok());
  send_delayed(fixture.group, 40, "to the reader");
  CHECK(reader.completions() == 0);
  fixture.advance(40ms);
  REQUIRE(reader.completions() == 1);
  REQUIRE(reader.last().message != nullptr);
  CHECK(text_of(*reader.last().message) == "to the reader");
  CHECK(fixture.group.stats().readers_waiting == 0);
  CHECK(fixture.timers->armed() == 0);  // the reader's timeout was cancelled
}

// ---- revoke ----

TEST_CASE("Revoke: discards every pending delayed message, returns the count, frees the bytes") {
  GroupFixture fixture;
  fixture.set_params(100, 100);
  send_delayed(fixture.group, 10, std::string(20, 'a'));
  send_delayed(fixture.group, 30, std::string(50, 'b'));
  send_delayed(fixture.group, 20, std::string(30, 'c'));
  CHECK(error_of(fixture.group.send(bytes_of("x"))) == std::errc::no_space_on_device);
  CHECK(fixture.group.stats().delayed_bytes == 100);

  CHECK(fixture.group.revoke_delayed() == 3);
  const auto stats = fixture.group.stats();
  CHECK(stats.delayed_messages == 0);
  CHECK(stats.delayed_bytes == 0);
  CHECK(stats.queued_messages == 0);
  CHECK(stats.queued_bytes == 0);
  CHECK(fixture.timers->armed() == 0);
  CHECK(fixture.group.send_delay() == 20);  // revoke does not change the setting

  // The bytes are free at once: the whole budget can be used again.
  send_delayed(fixture.group, 0, std::string(100, 'd'));
  // Nothing revoked ever lands.
  fixture.advance(1s);
  CHECK(receive_all(fixture.group) == Texts{std::string(100, 'd')});
  CHECK(fixture.group.revoke_delayed() == 0);
}

TEST_CASE("Revoke: a message whose delay expired (timer run) stays available") {
  GroupFixture fixture;
  send_delayed(fixture.group, 10, "expired");
  send_delayed(fixture.group, 100, "pending");
  fixture.advance(10ms);
  check_counts(fixture.group, 1, 1);
  CHECK(fixture.group.revoke_delayed() == 1);
  check_counts(fixture.group, 1, 0);
  fixture.advance(1s);
  CHECK(receive_all(fixture.group) == Texts{"expired"});
}

TEST_CASE("Revoke: a message whose delay expired stays even before its timer has run") {
  GroupFixture fixture;
  send_delayed(fixture.group, 10, "expired");
  send_delayed(fixture.group, 100, "pending");
  fixture.clock.advance(10ms);  // the time passed; run_due() was not called
  CHECK(fixture.group.revoke_delayed() == 1);
  check_counts(fixture.group, 1, 0);
  CHECK(fixture.group.stats().delayed_bytes == 0);
  CHECK(fixture.group.stats().queued_bytes == 7);
  fixture.advance(1s);
  CHECK(receive_all(fixture.group) == Texts{"expired"});
}

TEST_CASE("Revoke: at exactly its due time a message has expired and stays") {
  GroupFixture fixture;
  send_delayed(fixture.group, 10, "due 10");
  send_delayed(fixture.group, 100, "due 100");
  fixture.clock.advance(100ms);  // run_due() was not called
  CHECK(fixture.group.revoke_delayed() == 0);
  CHECK(receive_all(fixture.group) == Texts{"due 10", "due 100"});
  fixture.advance(1s);
  CHECK(receive_all(fixture.group).empty());
}

TEST_CASE("Revoke: with no delayed message returns 0 and leaves available messages") {
  GroupFixture fixture;
  send_text(fixture.group, "stays");
  CHECK(fixture.group.revoke_delayed() == 0);
  CHECK(receive_all(fixture.group) == Texts{"stays"});
}

// ---- flush ----

TEST_CASE("Flush: every delayed message lands at once in write order, the delay stays") {
  GroupFixture fixture;
  send_delayed(fixture.group, 100, "A");
  send_delayed(fixture.group, 300, "B");
  send_delayed(fixture.group, 100, "C");
  send_delayed(fixture.group, 50, "D");  // due first, written last
  CHECK(fixture.group.flush() == 4);
  check_counts(fixture.group, 4, 0);
  CHECK(fixture.group.stats().delayed_bytes == 0);
  CHECK(fixture.group.send_delay() == 50);
  CHECK(fixture.timers->armed() == 0);
  CHECK(receive_all(fixture.group) == Texts{"A", "B", "C", "D"});

  // Nothing lands a second time when the due times pass.
  fixture.advance(1s);
  CHECK(receive_all(fixture.group).empty());
  CHECK(fixture.group.flush() == 0);

  // The kept delay applies to the next write.
  send_text(fixture.group, "E");
  check_counts(fixture.group, 0, 1);
  fixture.advance(50ms);
  CHECK(receive_all(fixture.group) == Texts{"E"});
}

TEST_CASE("Flush: interleaved with immediate messages, FIFO is the order of availability") {
  GroupFixture fixture;
  send_delayed(fixture.group, 0, "X immediate");
  send_delayed(fixture.group, 100, "A delayed");
  send_delayed(fixture.group, 100, "B delayed");
  send_delayed(fixture.group, 0, "Y immediate");
  CHECK(fixture.group.flush() == 2);
  send_delayed(fixture.group, 0, "Z immediate");
  send_delayed(fixture.group, 100, "C delayed");
  send_delayed(fixture.group, 100, "D delayed");
  send_delayed(fixture.group, 0, "W immediate");
  CHECK(fixture.group.flush() == 2);
  send_text(fixture.group, "V immediate");
  CHECK(receive_all(fixture.group) == Texts{"X immediate", "Y immediate", "A delayed", "B delayed",
                                            "Z immediate", "W immediate", "C delayed", "D delayed",
                                            "V immediate"});
}

TEST_CASE("Flush: a message whose delay already expired keeps its earlier place") {
  GroupFixture fixture;
  send_delayed(fixture.group, 100, "written first, due 100");
  send_delayed(fixture.group, 10, "written second, due 10");
  fixture.clock.advance(10ms);  // the second expired; its timer has not run yet
  fixture.group.flush();
  CHECK(receive_all(fixture.group) == Texts{"written second, due 10", "written first, due 100"});
  check_counts(fixture.group, 0, 0);
  fixture.advance(1s);
  CHECK(receive_all(fixture.group).empty());
}

TEST_CASE("Flush: parked readers get the flushed messages in write order") {
  GroupFixture fixture;
  RecordingWaiter first;
  RecordingWaiter second;
  REQUIRE(fixture.group.receive_or_park(first, Group::kWaitForever).ok());
  REQUIRE(fixture.group.receive_or_park(second, Group::kWaitForever).ok());
  send_delayed(fixture.group, 100, "one");
  send_delayed(fixture.group, 10, "two");
  send_delayed(fixture.group, 100, "three");
  CHECK(fixture.group.flush() == 3);
  REQUIRE(first.completions() == 1);
  REQUIRE(second.completions() == 1);
  CHECK(text_of(*first.last().message) == "one");
  CHECK(text_of(*second.last().message) == "two");
  CHECK(receive_all(fixture.group) == Texts{"three"});
}

TEST_CASE("Flush and revoke: flushed messages are no longer delayed, so revoke leaves them") {
  GroupFixture fixture;
  send_delayed(fixture.group, 100, "flushed");
  CHECK(fixture.group.flush() == 1);
  send_text(fixture.group, "revoked");
  CHECK(fixture.group.revoke_delayed() == 1);
  CHECK(receive_all(fixture.group) == Texts{"flushed"});
}
