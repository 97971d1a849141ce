// Registry: group names, install, remove, max_groups, the control device's list text, and what
// removing a group does to its waiters (SPEC "Groups").
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/registry.hpp"
#include "test_support.hpp"

using synchmess::core::Registry;
using synchmess::core::validate_group_name;
using namespace synchmess::test;

namespace {

constexpr uid_t kRoot = 0;
constexpr uid_t kOtherUser = 2000;

struct RegistryFixture : ManualTime {
  Params params;
  Registry registry{params, *timers};

  std::shared_ptr<Group> install(std::string_view name, uid_t owner = kOwner) {
    auto installed = registry.install(name, owner);
    REQUIRE_MESSAGE(installed.ok(), "install failed: ", error_of(installed));
    return installed->group;
  }
};

}  // namespace

TEST_CASE("Group names: invalid names fail with EINVAL") {
  const std::string bad_names[] = {
      "",                              // empty
      std::string(64, 'a'),            // 64 bytes: one too many
      std::string(200, 'a'),           // far too long
      ".",                             // the directory itself
      "..",                            // the parent
      ".hidden",                       // starts with '.'
      "a/b",                           // a path
      "/abs",                          // a path
      "a b",                           // space
      "tab\t",                         // control character
      "semi;colon",                    // punctuation outside [_.-]
      "star*",                         // glob character
      "synchmess",                     // the control device
      "config",                        // the config device
      "gr\xc3\xbcppe",                 // non-ASCII (UTF-8 u-umlaut)
      "\xff",                          // non-ASCII byte
      std::string("nul\0inside", 10),  // an embedded NUL
  };
  for (const std::string& name : bad_names) {
    CAPTURE(name);
    CHECK(error_of(validate_group_name(name)) == std::errc::invalid_argument);
  }
}

TEST_CASE("Group names: 1..63 bytes of [A-Za-z0-9_.-] not starting with '.' are valid") {
  const std::string good_names[] = {
      "a",      std::string(63, 'z'), "a.b-c_9", "ABC",        "0",      "-dash",
      "_under", "trailing.",          "a..b",    "synchmess2", "Config",  // only the exact reserved
                                                                          // names are refused
  };
  for (const std::string& name : good_names) {
    CAPTURE(name);
    CHECK(validate_group_name(name));
  }
}

TEST_CASE("Registry::install: a bad name fails with EINVAL and installs nothing") {
  RegistryFixture fixture;
  for (const std::string_view name :
       {"", ".", "..", ".hidden", "a/b", "a b", "synchmess", "config"}) {
    CAPTURE(name);
    CHECK(error_of(fixture.registry.install(name, kOwner)) == std::errc::invalid_argument);
  }
  CHECK(error_of(fixture.registry.install(std::string(64, 'x'), kOwner)) ==
        std::errc::invalid_argument);
  CHECK(fixture.registry.size() == 0);
  CHECK(fixture.install(std::string(63, 'x'))->name() == std::string(63, 'x'));
}

TEST_CASE("Registry::install is idempotent: created, then the same group not created") {
  RegistryFixture fixture;
  auto first = fixture.registry.install("chat", kOwner);
  REQUIRE(first.ok());
  CHECK(first->created);
  REQUIRE(first->group != nullptr);
  CHECK(first->group->name() == "chat");
  CHECK(first->group->owner() == kOwner);

  // Another user installing the same name gets the existing group; the owner stays.
  auto second = fixture.registry.install("chat", kOtherUser);
  REQUIRE(second.ok());
  CHECK_FALSE(second->created);
  CHECK(second->group == first->group);
  CHECK(second->group->owner() == kOwner);

  CHECK(fixture.registry.find("chat") == first->group);
  CHECK(fixture.registry.find("nope") == nullptr);
  CHECK(fixture.registry.size() == 1);
}

TEST_CASE("Registry::install: concurrent installs of one name create exactly one group") {
  constexpr int kThreads = 8;
  constexpr int kRounds = 20;
  RegistryFixture fixture;
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = "race" + std::to_string(round);
    std::latch start(kThreads);
    std::vector<std::shared_ptr<Group>> groups(kThreads);
    std::vector<int> created(kThreads, 0);
    std::vector<int> failed(kThreads, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        auto installed = fixture.registry.install(name, static_cast<uid_t>(kOwner + t));
        if (!installed) {
          failed[t] = 1;
          return;
        }
        created[t] = installed->created ? 1 : 0;
        groups[t] = installed->group;
      });
    }
    for (auto& thread : threads)
      thread.join();
    CAPTURE(round);
    CHECK(std::count(failed.begin(), failed.end(), 1) == 0);
    CHECK(std::count(created.begin(), created.end(), 1) == 1);
    for (const auto& group : groups)
      CHECK(group == fixture.registry.find(name));
  }
  CHECK(fixture.registry.size() == kRounds);
}

TEST_CASE("Registry::install: more than max_groups groups fail with ENOSPC") {
  ManualTime time;
  Params params;
  Registry registry(params, *time.timers, 3);
  CHECK(registry.max_groups() == 3);
  for (const char* name : {"g1", "g2", "g3"})
    REQUIRE(registry.install(name, kOwner).ok());
  CHECK(error_of(registry.install("g4", kOwner)) == std::errc::no_space_on_device);
  CHECK(registry.size() == 3);

  // Installing an existing name is not a new group: still fine when full.
  auto again = registry.install("g2", kOwner);
  REQUIRE(again.ok());
  CHECK_FALSE(again->created);

  // Removing one makes room again.
  REQUIRE(registry.remove("g1", kOwner));
  auto fourth = registry.install("g4", kOwner);
  REQUIRE(fourth.ok());
  CHECK(fourth->created);
}

TEST_CASE("Registry::install: the default max_groups is 1024") {
  RegistryFixture fixture;
  CHECK(fixture.registry.max_groups() == 1024);
}

TEST_CASE("Registry::remove: unknown name ENOENT, non-owner EPERM, owner and root succeed") {
  RegistryFixture fixture;
  auto group = fixture.install("owned", kOwner);

  CHECK(error_of(fixture.registry.remove("unknown", kRoot)) ==
        std::errc::no_such_file_or_directory);
  CHECK(error_of(fixture.registry.remove("", kRoot)) == std::errc::no_such_file_or_directory);

  CHECK(error_of(fixture.registry.remove("owned", kOtherUser)) ==
        std::errc::operation_not_permitted);
  CHECK(fixture.registry.find("owned") == group);  // still installed, still usable
  CHECK_FALSE(group->closed());
  send_text(*group, "still here");

  SUBCASE("the installer removes it") {
    CHECK(fixture.registry.remove("owned", kOwner));
  }
  SUBCASE("root removes it") {
    CHECK(fixture.registry.remove("owned", kRoot));
  }

  CHECK(fixture.registry.find("owned") == nullptr);
  CHECK(fixture.registry.size() == 0);
  CHECK(group->closed());
  CHECK(error_of(fixture.registry.remove("owned", kRoot)) == std::errc::no_such_file_or_directory);

  // The name is free again: a new, different group.
  auto reinstalled = fixture.registry.install("owned", kOtherUser);
  REQUIRE(reinstalled.ok());
  CHECK(reinstalled->created);
  CHECK(reinstalled->group != group);
  CHECK_FALSE(reinstalled->group->closed());
}

TEST_CASE("Registry::remove: every parked or blocked waiter of the group ends with EIDRM") {
  RegistryFixture fixture;
  auto group = fixture.install("doomed");

  // Server-style waits: a read with a receive timeout, and a barrier sleep.
  RecordingWaiter reader;
  auto parked = group->receive_or_park(reader, 1000ms);
  REQUIRE(parked.ok());
  REQUIRE(parked.value() == nullptr);
  RecordingWaiter barrier_waiter;
  group->barrier().park(barrier_waiter);

  // In-process waits: a blocking receive and a futex barrier sleep.
  std::errc receive_error{};
  std::thread receiver([&] { receive_error = error_of(group->receive(Group::kWaitForever)); });
  std::errc sleep_error{};
  std::thread sleeper([&] { sleep_error = error_of(group->barrier().sleep()); });
  REQUIRE(eventually([&] {
    const auto stats = group->stats();
    return stats.readers_waiting == 2 && stats.sleepers == 2;
  }));

  REQUIRE(fixture.registry.remove("doomed", kOwner));
  receiver.join();
  sleeper.join();
  CHECK(receive_error == std::errc::identifier_removed);
  CHECK(sleep_error == std::errc::identifier_removed);
  REQUIRE(reader.completions() == 1);
  CHECK(reader.last().error == std::errc::identifier_removed);
  CHECK_FALSE(reader.last().timed_out);
  CHECK(reader.last().message == nullptr);
  REQUIRE(barrier_waiter.completions() == 1);
  CHECK(barrier_waiter.last().error == std::errc::identifier_removed);

  // The receive timeout was cancelled: it never completes the reader a second time.
  CHECK(fixture.timers->armed() == 0);
  CHECK(fixture.advance(10s) == 0);
  CHECK(reader.completions() == 1);
  const auto stats = group->stats();
  CHECK(stats.sleepers == 0);
  CHECK(stats.readers_waiting == 0);
}

TEST_CASE("Registry::remove: the messages are discarded and later operations fail") {
  RegistryFixture fixture;
  auto group = fixture.install("doomed");
  send_text(*group, "available");
  group->set_send_delay(500);
  send_text(*group, "delayed");
  REQUIRE(group->stats().queued_messages == 1);
  REQUIRE(group->stats().delayed_messages == 1);

  REQUIRE(fixture.registry.remove("doomed", kOwner));

  const auto stats = group->stats();
  CHECK(stats.queued_messages == 0);
  CHECK(stats.queued_bytes == 0);
  CHECK(stats.delayed_messages == 0);
  CHECK(stats.delayed_bytes == 0);
  CHECK(fixture.timers->armed() == 0);  // the delay timer is gone
  CHECK(fixture.advance(10s) == 0);
  CHECK(group->stats().queued_messages == 0);

  CHECK(group->readiness().closed);
  CHECK_FALSE(group->readiness().readable);
  CHECK_FALSE(group->readiness().writable);

  CHECK(error_of(group->send(bytes_of("late"))) == std::errc::no_such_device);
  group->set_send_delay(0);
  CHECK(error_of(group->send(bytes_of("late"))) == std::errc::no_such_device);
  CHECK(error_of(group->try_receive()) == std::errc::no_such_device);
  CHECK(error_of(group->receive(10ms)) == std::errc::no_such_device);
  RecordingWaiter late_reader;
  CHECK(error_of(group->receive_or_park(late_reader, 10ms)) == std::errc::no_such_device);
  CHECK(late_reader.completions() == 0);
  CHECK(group->stats().readers_waiting == 0);

  // The barrier of a removed group refuses sleeps at once with the removal's error.
  CHECK(error_of(group->barrier().sleep()) == std::errc::identifier_removed);
  RecordingWaiter late_sleeper;
  group->barrier().park(late_sleeper);
  REQUIRE(late_sleeper.completions() == 1);
  CHECK(late_sleeper.last().error == std::errc::identifier_removed);
  CHECK(group->barrier().awake() == 0);
}

TEST_CASE("Registry::list_text: one line per group sorted by name, with its counters") {
  RegistryFixture fixture;
  CHECK(fixture.registry.list_text().empty());

  auto beta = fixture.install("beta", 42);
  auto alpha = fixture.install("alpha", kOwner);
  send_text(*beta, "12345");
  send_text(*beta, "678");
  beta->set_send_delay(100);
  send_text(*beta, "delayed");
  RecordingWaiter sleeper;
  beta->barrier().park(sleeper);
  RecordingWaiter reader;
  REQUIRE(alpha->receive_or_park(reader, Group::kWaitForever).ok());

  CHECK(fixture.registry.list_text() ==
        "alpha owner=1000 queued_messages=0 queued_bytes=0 delayed_messages=0 delayed_bytes=0 "
        "sleepers=0 readers_waiting=1 writers_waiting=0\n"
        "beta owner=42 queued_messages=2 queued_bytes=8 delayed_messages=1 delayed_bytes=7 "
        "sleepers=1 readers_waiting=0 writers_waiting=0\n");

  const auto groups = fixture.registry.groups();
  REQUIRE(groups.size() == 2);
  CHECK(groups[0] == alpha);
  CHECK(groups[1] == beta);
  REQUIRE(alpha->cancel_receive(reader));
  REQUIRE(beta->barrier().cancel(sleeper));
}

TEST_CASE("Registry::close_all: every group closes with the reason and is forgotten") {
  RegistryFixture fixture;
  auto one = fixture.install("one");
  auto two = fixture.install("two");
  RecordingWaiter sleeper;
  two->barrier().park(sleeper);

  fixture.registry.close_all(std::errc::identifier_removed);
  CHECK(fixture.registry.size() == 0);
  CHECK(fixture.registry.find("one") == nullptr);
  CHECK(one->closed());
  CHECK(two->closed());
  REQUIRE(sleeper.completions() == 1);
  CHECK(sleeper.last().error == std::errc::identifier_removed);
}

TEST_CASE("Registry: its destructor closes the groups that callers still hold") {
  ManualTime time;
  Params params;
  std::shared_ptr<Group> kept;
  RecordingWaiter sleeper;
  {
    Registry registry(params, *time.timers);
    auto installed = registry.install("kept", kOwner);
    REQUIRE(installed.ok());
    kept = installed->group;
    kept->barrier().park(sleeper);
  }
  CHECK(kept->closed());
  REQUIRE(sleeper.completions() == 1);
  CHECK(sleeper.last().error == std::errc::identifier_removed);
  CHECK(error_of(kept->send(bytes_of("x"))) == std::errc::no_such_device);
}

TEST_CASE("Registry::params_changed tells the watchers of every group") {
  struct CountingWatcher final : synchmess::core::ReadyWatcher {
    int calls = 0;
    void on_ready_changed() noexcept override { ++calls; }
  };
  RegistryFixture fixture;
  auto one = fixture.install("one");
  auto two = fixture.install("two");
  CountingWatcher first;
  CountingWatcher second;
  one->watch(first);
  two->watch(second);
  fixture.registry.params_changed();
  CHECK(first.calls == 1);
  CHECK(second.calls == 1);
  one->unwatch(first);
  two->unwatch(second);
}

TEST_CASE("Registry: concurrent installs and removes of a few names stay consistent") {
  constexpr int kThreads = 4;
  constexpr int kIterations = 400;
  const std::string names[] = {"n0", "n1", "n2"};
  RegistryFixture fixture;
  std::atomic<int> created{0};
  std::atomic<int> removed{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        const std::string& name = names[(i * 7 + t) % 3];
        if ((i + t) % 2 == 0) {
          auto installed = fixture.registry.install(name, kOwner);
          if (!installed) {
            unexpected.fetch_add(1);
            continue;
          }
          if (installed->created) created.fetch_add(1);
          // Use it: a removed group refuses with ENODEV, a live one accepts.
          const auto sent = installed->group->send(bytes_of("m"));
          if (!sent.ok() && sent.error() != std::errc::no_such_device) unexpected.fetch_add(1);
        } else {
          const auto status = fixture.registry.remove(name, kOwner);
          if (status) {
            removed.fetch_add(1);
          } else if (status.error() != std::errc::no_such_file_or_directory) {
            unexpected.fetch_add(1);
          }
        }
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  CHECK(unexpected.load() == 0);
  CHECK(created.load() - removed.load() == static_cast<int>(fixture.registry.size()));
}
