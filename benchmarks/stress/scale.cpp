// synchmess_scale: the scale figures of a running synchmess server, each printed beside its
// target (MET / NOT MET). benchmark.sh --scale starts a fresh FUSE-mounted server and runs this;
// it can also run on its own against any server (SYNCHMESS_DIR, --server-pid).
//
// 1. groups:   the server's thread count (/proc/<pid>/task entries) and RSS (VmRSS) before and
//              after installing --groups groups (1000). Targets: threads unchanged, RSS < 64 MiB.
// 2. sleepers: --sleepers client threads (10,000; --stack-kib stacks, 64 KiB) each blocked in
//              SLEEP_ON_BARRIER on one group, sharing one descriptor; once the group's stats show
//              all of them, one AWAKE_BARRIER. Each sleeper stamps CLOCK_MONOTONIC as its ioctl
//              returns; the figure is the latest stamp minus the time just before the awake.
//              Targets: < 100 ms; server threads unchanged by the parked sleepers.
//              Baseline, measured just before in this process: as many threads (same stacks)
//              blocked in FUTEX_WAIT on one word, one FUTEX_WAKE of all; the same figure (last
//              stamp - time before the wake). It is what waking that many threads costs on this
//              machine with no server in between: the floor of the synchmess figure.
// 3. delays:   one thread sends --messages messages (100,000; 8 bytes: the index) with a send
//              delay of --delay-ms (1000) as fast as it can, stamping each send before write()
//              (s_i) and after (w_i). Nobody reads while they land: another thread polls the
//              group's stats (GET_STATS) every --poll-us (100 us), stamping each poll before (b_j)
//              and after (a_j). With one sender and one delay, messages become available in write
//              order, so a poll that shows queued_messages = Q says messages 0..Q-1 have landed
//              and Q.. have not. The server stamped message i between s_i and w_i, so its expiry
//              lateness (time it became available - (its send time + delay)) lies in
//                [ b_{j-1} - (w_i + delay),  a_j - (s_i + delay) ]
//              where j is the first poll with queued > i. The figure is the upper bound (it adds
//              the poll interval and one stats round trip, never hides lateness); the lower bound
//              is printed beside it. Target: p99 of the upper bound < 5 ms. Afterwards all
//              messages are read back: each exactly once, in order (else exit 1).
//
// Exit status: 0 whether targets are met or not; 1 a check failed (a message lost, duplicated
// or out of order, a sleeper not woken, the server gone); 2 bad command line; 3 set-up failed.
#include <fcntl.h>
#include <getopt.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <synchmess/client.h>

#include "common.hpp"

namespace synchmess::stress {
namespace {

struct Options {
  long groups = 1000;
  long sleepers = 10000;
  long stack_kib = 64;
  long messages = 100000;
  long delay_ms = 1000;
  long poll_us = 100;
  long server_pid = 0;
  std::string parts = "groups,sleepers,delays";
  std::string prefix;
};

const char* verdict(bool met) {
  return met ? "MET" : "NOT MET";
}

// Outcome of the whole run.
struct Outcome {
  bool failed = false;  // a check failed: exit 1
  bool setup = false;   // could not set up: exit 3
};

// One figure beside its target: "  <figure>   target: <target>   MET|NOT MET".
void target_line(const std::string& figure, const std::string& target, bool met) {
  say("  %-66s target: %-20s %s\n", figure.c_str(), target.c_str(), verdict(met));
}

std::string text_of(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string text_of(const char* format, ...) {
  char text[512];
  va_list arguments;
  va_start(arguments, format);
  std::vsnprintf(text, sizeof text, format, arguments);
  va_end(arguments);
  return text;
}

void line() {
  say("--------------------------------------------------------------------------------\n");
}

// ---- 1. groups ----

void scale_groups(const Options& options, Outcome& outcome) {
  const pid_t pid = static_cast<pid_t>(options.server_pid);
  const std::size_t count = static_cast<std::size_t>(options.groups);
  line();
  say("groups: installing %zu groups\n", count);
  Groups groups(options.prefix + "-g");
  const ProcSample before = sample_process(pid);
  const int64_t start = now_ns();
  if (!groups.install(count)) {
    say("  install of group %zu (%s) failed: %s\n", groups.size(),
        groups.name(groups.size()).c_str(), errno_name(errno).c_str());
    outcome.setup = true;
    return;
  }
  const int64_t installed = now_ns();
  const ProcSample after = sample_process(pid);
  if (!after.threads) {
    say("  the server (pid %d) is gone\n", pid);
    outcome.failed = true;
    return;
  }
  const int removals_failed = groups.remove_all();
  const int64_t removed = now_ns();
  const ProcSample end = sample_process(pid);
  say("  installed %zu in %s (%s installs/s), removed them in %s\n", count,
      format_ns(static_cast<double>(installed - start)).c_str(),
      format_rate(static_cast<double>(count) * 1e9 / static_cast<double>(installed - start))
          .c_str(),
      format_ns(static_cast<double>(removed - installed)).c_str());
  const std::string note = count == 1000 ? "" : " (for 1000)";
  target_line(
      text_of("server threads: %s before, %s with %zu groups", format_count(before.threads).c_str(),
              format_count(after.threads).c_str(), count),
      "unchanged", before.threads == after.threads);
  target_line(text_of("server RSS: %s before, %s with %zu groups",
                      format_kib(before.rss_kib).c_str(), format_kib(after.rss_kib).c_str(), count),
              "< 64 MiB" + note, after.rss_kib && *after.rss_kib < 64 * 1024);
  say("  after removing them: threads %s, RSS %s, descriptors %s -> %s\n",
      format_count(end.threads).c_str(), format_kib(end.rss_kib).c_str(),
      before.fds ? std::to_string(*before.fds).c_str() : "n/a",
      end.fds ? std::to_string(*end.fds).c_str() : "n/a");
  if (removals_failed != 0) {
    say("  check FAILED: %d removals failed\n", removals_failed);
    outcome.failed = true;
  }
}

// ---- 2. sleepers ----

struct SleeperShared {
  int fd = -1;
  std::atomic<long> returned{0};
  std::atomic<long> failures{0};
  std::atomic<int> first_error{0};
  std::vector<int64_t> stamps;  // one per sleeper, written by it once
};

struct SleeperArg {
  SleeperShared* shared;
  std::size_t index;
};

void* sleeper_main(void* raw) {
  const auto* arg = static_cast<SleeperArg*>(raw);
  SleeperShared& shared = *arg->shared;
  const int rc = synch_sleep_on_barrier(shared.fd);
  const int error = errno;
  shared.stamps[arg->index] = now_ns();
  if (rc != 0) {
    shared.failures.fetch_add(1);
    int none = 0;
    shared.first_error.compare_exchange_strong(none, error);
  }
  shared.returned.fetch_add(1);
  return nullptr;
}

// The baseline: `count` threads of this process parked in FUTEX_WAIT, one FUTEX_WAKE of all.
// Returns the time from just before the wake to the last thread's stamp, or -1 when the threads
// could not be created.
struct FutexShared {
  std::atomic<uint32_t> word{0};
  std::atomic<long> parked{0};
  std::atomic<int64_t> last{0};
};

void* futex_sleeper_main(void* raw) {
  auto& shared = *static_cast<FutexShared*>(raw);
  shared.parked.fetch_add(1);
  while (shared.word.load() == 0) {
    // EAGAIN when the word changed before the wait: the loop sees it.
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&shared.word), FUTEX_WAIT_PRIVATE, 0, nullptr,
            nullptr, 0);
  }
  const int64_t stamp = now_ns();
  int64_t last = shared.last.load();
  while (stamp > last && !shared.last.compare_exchange_weak(last, stamp)) {
  }
  return nullptr;
}

double futex_wake_baseline(std::size_t count, long stack_kib) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "a futex word is 32 bits");
  FutexShared shared;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, static_cast<std::size_t>(stack_kib) * 1024);
  std::vector<pthread_t> threads;
  threads.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    pthread_t thread;
    if (pthread_create(&thread, &attr, &futex_sleeper_main, &shared) != 0) break;
    threads.push_back(thread);
  }
  pthread_attr_destroy(&attr);
  while (shared.parked.load() < static_cast<long>(threads.size()))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // "parked" counts a thread just before its wait: give the last ones time to block.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const int64_t start = now_ns();
  shared.word.store(1);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&shared.word), FUTEX_WAKE_PRIVATE, INT32_MAX,
          nullptr, nullptr, 0);
  for (pthread_t thread : threads)
    pthread_join(thread, nullptr);
  if (threads.size() != count) return -1;
  return static_cast<double>(shared.last.load() - start);
}

void scale_sleepers(const Options& options, Outcome& outcome) {
  const pid_t pid = static_cast<pid_t>(options.server_pid);
  const std::size_t count = static_cast<std::size_t>(options.sleepers);
  line();
  say("sleepers: %zu threads (%ld KiB stacks) in SLEEP_ON_BARRIER on one group, one AWAKE\n", count,
      options.stack_kib);
  Groups groups(options.prefix + "-s");
  if (!groups.install(1)) {
    say("  install failed: %s\n", errno_name(errno).c_str());
    outcome.setup = true;
    return;
  }
  const double baseline = futex_wake_baseline(count, options.stack_kib);
  SleeperShared shared;
  shared.fd = synch_open_group(groups.name(0).c_str(), O_RDWR);
  const int control = synch_open_group(groups.name(0).c_str(), O_RDWR);
  if (shared.fd < 0 || control < 0) {
    say("  open failed: %s\n", errno_name(errno).c_str());
    outcome.setup = true;
    if (shared.fd >= 0) ::close(shared.fd);
    if (control >= 0) ::close(control);
    return;
  }
  shared.stamps.assign(count, 0);
  std::vector<SleeperArg> args(count);
  std::vector<pthread_t> threads;
  threads.reserve(count);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, static_cast<std::size_t>(options.stack_kib) * 1024);
  const ProcSample before = sample_process(pid);
  const int64_t start = now_ns();
  int create_error = 0;
  for (std::size_t i = 0; i < count; ++i) {
    args[i] = SleeperArg{&shared, i};
    pthread_t thread;
    create_error = pthread_create(&thread, &attr, &sleeper_main, &args[i]);
    if (create_error != 0) break;
    threads.push_back(thread);
  }
  pthread_attr_destroy(&attr);
  const std::size_t started = threads.size();
  if (create_error != 0) {
    say("  pthread_create failed after %zu threads: %s (limits: ulimit -u, "
        "/proc/sys/kernel/threads-max, pid_max, vm.max_map_count)\n",
        started, errno_name(create_error).c_str());
    outcome.setup = true;
  }
  // Wait until the server counts every started sleeper (bounded: 2 minutes).
  synch_group_stats stats{};
  const int64_t deadline = now_ns() + 120'000'000'000LL;
  bool parked = false;
  while (now_ns() < deadline) {
    if (synch_get_stats(control, &stats) != 0) {
      say("  GET_STATS failed: %s\n", errno_name(errno).c_str());
      break;
    }
    if (stats.sleepers >= started || shared.returned.load() > 0) {
      parked = stats.sleepers == started && shared.returned.load() == 0;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int64_t parked_at = now_ns();
  const ProcSample with_sleepers = sample_process(pid);
  int woken = 0;
  int64_t awake_start = 0, awake_end = 0;
  // Awake until every thread has returned (one awake when all went well).
  long awakes = 0;
  const int64_t wake_deadline = now_ns() + 60'000'000'000LL;
  while (shared.returned.load() < static_cast<long>(started) && now_ns() < wake_deadline) {
    const int64_t t0 = now_ns();
    const int rc = synch_awake_barrier(control);
    if (awakes++ == 0) {
      awake_start = t0;
      awake_end = now_ns();
      woken = rc;
    }
    // The figure comes from the sleepers' stamps: how soon we notice does not matter.
    const int64_t settle = now_ns() + 2'000'000'000LL;
    while (shared.returned.load() < static_cast<long>(started) && now_ns() < settle)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool all_returned = shared.returned.load() == static_cast<long>(started);
  for (std::size_t i = 0; all_returned && i < started; ++i)
    pthread_join(threads[i], nullptr);
  if (!all_returned) {
    say("  check FAILED: %ld of %zu sleepers returned within 60 s of the awake (left running)\n",
        shared.returned.load(), started);
    outcome.failed = true;
    for (std::size_t i = 0; i < started; ++i)
      pthread_detach(threads[i]);
  }
  const ProcSample after = sample_process(pid);
  ::close(control);
  if (all_returned) {
    ::close(shared.fd);
    groups.remove_all();
  }
  if (!with_sleepers.threads) {
    say("  the server (pid %d) is gone\n", pid);
    outcome.failed = true;
    return;
  }
  const int64_t last = all_returned && started > 0
                           ? *std::max_element(shared.stamps.begin(), shared.stamps.end())
                           : 0;
  say("  %zu threads started and parked in %s (server stats: %llu sleepers)\n", started,
      format_ns(static_cast<double>(parked_at - start)).c_str(),
      static_cast<unsigned long long>(stats.sleepers));
  if (!parked) {
    say("  check FAILED: the server counted %llu sleepers for %zu threads (or one returned "
        "before the awake)\n",
        static_cast<unsigned long long>(stats.sleepers), started);
    outcome.failed = true;
  }
  if (woken != static_cast<int>(started) || awakes != 1) {
    say("  check FAILED: the awake returned %d for %zu sleepers; %ld awakes were needed\n", woken,
        started, awakes);
    outcome.failed = true;
  }
  if (shared.failures.load() != 0) {
    say("  check FAILED: %ld sleeps returned an error (first: %s)\n", shared.failures.load(),
        errno_name(shared.first_error.load()).c_str());
    outcome.failed = true;
  }
  const std::string note = started == 10000 ? "" : " (for 10000)";
  target_line(text_of("server threads: %s before, %s with %zu sleepers parked",
                      format_count(before.threads).c_str(),
                      format_count(with_sleepers.threads).c_str(), started),
              "unchanged", before.threads == with_sleepers.threads);
  say("  server RSS: %s before, %s with the sleepers parked, %s after (peak %s)\n",
      format_kib(before.rss_kib).c_str(), format_kib(with_sleepers.rss_kib).c_str(),
      format_kib(after.rss_kib).c_str(), format_kib(after.hwm_kib).c_str());
  if (all_returned && awakes >= 1) {
    const double wake = static_cast<double>(last - awake_start);
    std::vector<int64_t> returns(shared.stamps.begin(), shared.stamps.begin() + started);
    const int64_t first = percentile(returns, 0), median = percentile(returns, 50);
    say("  AWAKE_BARRIER returned %d after %s; sleepers returned from %s (first) through %s "
        "(median) after the awake\n",
        woken, format_ns(static_cast<double>(awake_end - awake_start)).c_str(),
        format_ns(static_cast<double>(first - awake_start)).c_str(),
        format_ns(static_cast<double>(median - awake_start)).c_str());
    target_line(
        text_of("from AWAKE_BARRIER to the last sleeper's return: %s", format_ns(wake).c_str()),
        "< 100 ms" + note, wake < 100e6);
    if (baseline > 0) {
      say("  baseline: one FUTEX_WAKE of %zu threads of one process, the last ran after %s: "
          "synchmess takes %.2fx that (the machine's cost of waking that many threads)\n",
          count, format_ns(baseline).c_str(), wake / baseline);
    } else {
      say("  baseline: could not start %zu threads for the in-process FUTEX_WAKE\n", count);
    }
  }
}

// ---- 3. delays ----

struct Poll {
  int64_t before;
  int64_t after;
  uint64_t queued;
  uint64_t delayed;
};

void scale_delays(const Options& options, Outcome& outcome) {
  const pid_t pid = static_cast<pid_t>(options.server_pid);
  const std::size_t count = static_cast<std::size_t>(options.messages);
  const int64_t delay_ns = options.delay_ms * 1'000'000LL;
  line();
  say("delays: %zu messages sent with a %ld ms send delay as fast as possible, nobody reading; "
      "the group's stats polled every %ld us\n",
      count, options.delay_ms, options.poll_us);
  // The group must hold them all at once: raise max_storage_size if needed (root), restore after.
  synch_params params{};
  if (synch_get_params(&params) != 0) {
    say("  GET_PARAMS failed: %s\n", errno_name(errno).c_str());
    outcome.setup = true;
    return;
  }
  const uint64_t needed = count * sizeof(uint64_t);
  const uint64_t old_storage = params.max_storage_size;
  bool raised = false;
  if (params.max_storage_size < needed) {
    const synch_params raise{0, needed};
    if (synch_set_params(&raise) != 0) {
      say("  max_storage_size is %llu, %llu needed, and raising it failed: %s (run as root)\n",
          static_cast<unsigned long long>(old_storage), static_cast<unsigned long long>(needed),
          errno_name(errno).c_str());
      outcome.setup = true;
      return;
    }
    raised = true;
  }
  const auto restore = [&] {
    if (!raised) return;
    const synch_params back{0, old_storage};
    synch_set_params(&back);
  };
  Groups groups(options.prefix + "-d");
  if (!groups.install(1)) {
    say("  install failed: %s\n", errno_name(errno).c_str());
    outcome.setup = true;
    restore();
    return;
  }
  const int fd = synch_open_group(groups.name(0).c_str(), O_RDWR);
  const int poll_fd = synch_open_group(groups.name(0).c_str(), O_RDONLY);
  if (fd < 0 || poll_fd < 0 || synch_set_send_delay(fd, static_cast<uint32_t>(options.delay_ms))) {
    say("  open / SET_SEND_DELAY failed: %s\n", errno_name(errno).c_str());
    outcome.setup = true;
    if (fd >= 0) ::close(fd);
    if (poll_fd >= 0) ::close(poll_fd);
    restore();
    return;
  }
  std::vector<int64_t> sent_before(count), sent_after(count);
  std::vector<Poll> polls;
  polls.reserve(1 << 20);
  std::atomic<bool> stop{false}, poller_done{false};
  std::atomic<int> poll_error{0};
  const ProcSample before = sample_process(pid);
  const auto poll_loop = [&] {
    while (!stop.load()) {
      synch_group_stats stats{};
      const int64_t b = now_ns();
      if (synch_get_stats(poll_fd, &stats) != 0) {
        poll_error.store(errno);
        return;
      }
      const int64_t a = now_ns();
      polls.push_back(Poll{b, a, stats.queued_messages, stats.delayed_messages});
      if (stats.queued_messages >= count) return;
      if (options.poll_us > 0)
        std::this_thread::sleep_for(std::chrono::microseconds(options.poll_us));
    }
  };
  std::thread poller([&] {
    poll_loop();
    poller_done.store(true);
  });
  const int64_t start = now_ns();
  std::size_t sent = 0;
  int send_error = 0;
  for (; sent < count; ++sent) {
    const uint64_t index = sent;
    sent_before[sent] = now_ns();
    if (synch_send(fd, &index, sizeof index) != static_cast<ssize_t>(sizeof index)) {
      send_error = errno;
      break;
    }
    sent_after[sent] = now_ns();
  }
  const int64_t send_end = now_ns();
  ProcSample with_delayed = sample_process(pid);
  // Every message lands a delay after its send, plus lateness: the poller returns once it saw
  // them all available (bounded: 60 s more), or at once when the sends failed.
  const int64_t deadline = send_end + delay_ns + 60'000'000'000LL;
  while (!poller_done.load() && send_error == 0 && now_ns() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop.store(true);
  poller.join();
  const ProcSample after = sample_process(pid);
  if (send_error != 0) {
    say("  check FAILED: send %zu failed: %s\n", sent, errno_name(send_error).c_str());
    outcome.failed = true;
  }
  if (poll_error.load() != 0) {
    say("  check FAILED: GET_STATS failed: %s\n", errno_name(poll_error.load()).c_str());
    outcome.failed = true;
  }
  // ---- lateness from the polls ----
  std::vector<int64_t> upper, lower, intervals, round_trips;
  bool monotonic = true;
  for (std::size_t j = 1; j < polls.size(); ++j) {
    if (polls[j].queued < polls[j - 1].queued) monotonic = false;
    intervals.push_back(polls[j].after - polls[j - 1].after);
  }
  for (const Poll& poll : polls)
    round_trips.push_back(poll.after - poll.before);
  std::size_t j = 0;
  for (std::size_t i = 0; i < sent; ++i) {
    while (j < polls.size() && polls[j].queued <= i)
      ++j;
    if (j == polls.size()) break;  // never seen available: counted below
    upper.push_back(polls[j].after - (sent_before[i] + delay_ns));
    if (j > 0) lower.push_back(polls[j - 1].before - (sent_after[i] + delay_ns));
  }
  const std::size_t seen = upper.size();
  // ---- read everything back: exactly once, in write order ----
  const int64_t drain_start = now_ns();
  std::size_t read_count = 0, out_of_order = 0;
  for (;;) {
    uint64_t index = 0;
    const ssize_t n = synch_receive(fd, &index, sizeof index);
    if (n == 0) break;
    if (n != static_cast<ssize_t>(sizeof index)) {
      say("  check FAILED: read returned %zd (%s)\n", n, n < 0 ? errno_name(errno).c_str() : "");
      outcome.failed = true;
      break;
    }
    if (index != read_count && ++out_of_order <= 3) {
      say("  check FAILED: message %zu read as number %zu\n", static_cast<std::size_t>(index),
          read_count);
    }
    ++read_count;
  }
  const int64_t drain_end = now_ns();
  synch_set_send_delay(fd, 0);
  ::close(poll_fd);
  ::close(fd);
  groups.remove_all();
  restore();

  say("  sent %zu in %s (%s msg/s); server RSS %s before, %s with them stored, threads %s -> %s\n",
      sent, format_ns(static_cast<double>(send_end - start)).c_str(),
      format_rate(static_cast<double>(sent) * 1e9 / static_cast<double>(send_end - start)).c_str(),
      format_kib(before.rss_kib).c_str(), format_kib(with_delayed.rss_kib).c_str(),
      format_count(before.threads).c_str(), format_count(after.threads).c_str());
  if (before.cpu_s && after.cpu_s) {
    say("  server CPU over sends + expiry: %.2f s\n", *after.cpu_s - *before.cpu_s);
  }
  const int64_t interval50 = percentile(intervals, 50), trip50 = percentile(round_trips, 50),
                trip99 = percentile(round_trips, 99);
  say("  %zu stats polls: interval p50 %s, round trip p50 %s / p99 %s (the resolution)\n",
      polls.size(), format_ns(static_cast<double>(interval50)).c_str(),
      format_ns(static_cast<double>(trip50)).c_str(),
      format_ns(static_cast<double>(trip99)).c_str());
  if (!monotonic) {
    say("  check FAILED: queued_messages went down while nobody read\n");
    outcome.failed = true;
  }
  if (seen != sent) {
    say("  check FAILED: %zu of %zu messages never showed as available within %ld ms + 60 s\n",
        sent - seen, sent, options.delay_ms);
    outcome.failed = true;
  }
  if (read_count != sent || out_of_order != 0) {
    say("  check FAILED: read back %zu of %zu messages, %zu out of order\n", read_count, sent,
        out_of_order);
    outcome.failed = true;
  } else {
    say("  check: all %zu read back exactly once, in write order, in %s: ok\n", read_count,
        format_ns(static_cast<double>(drain_end - drain_start)).c_str());
  }
  if (seen > 0) {
    const int64_t up50 = percentile(upper, 50), up99 = percentile(upper, 99);
    const int64_t up_max = upper.back();
    const int64_t low50 = percentile(lower, 50), low99 = percentile(lower, 99);
    const bool full_size = count == 100000 && options.delay_ms == 1000;
    const std::string note = full_size ? "" : " (for 100k, 1 s)";
    say("  expiry lateness (available - (send + delay)), upper bound: p50 %s, p99 %s, max %s; "
        "lower bound: p50 %s, p99 %s\n",
        format_ns(static_cast<double>(up50)).c_str(), format_ns(static_cast<double>(up99)).c_str(),
        format_ns(static_cast<double>(up_max)).c_str(),
        format_ns(static_cast<double>(low50)).c_str(),
        format_ns(static_cast<double>(low99)).c_str());
    target_line(text_of("expiry lateness p99 (upper bound): %s",
                        format_ns(static_cast<double>(up99)).c_str()),
                "< 5 ms" + note, static_cast<double>(up99) < 5e6);
  }
}

// ---- command line ----

void usage(FILE* out) {
  std::fprintf(
      out,
      "Usage: synchmess_scale [OPTIONS]\n"
      "\n"
      "Scale figures of a running synchmess server (devices in $SYNCHMESS_DIR, default\n"
      "/dev/synch), each beside its target. Needs --server-pid for the thread and RSS figures.\n"
      "\n"
      "Options (defaults in brackets):\n"
      "  --server-pid PID     the server (its /proc/PID is read)\n"
      "  --parts LIST         comma-separated: groups, sleepers, delays [all three]\n"
      "  --groups N           groups to install [1000]\n"
      "  --sleepers N         sleeper threads on one barrier [10000]\n"
      "  --stack-kib K        sleeper thread stack size in KiB, 16..8192 [64]\n"
      "  --messages N         delayed messages [100000]\n"
      "  --delay-ms D         their send delay [1000]\n"
      "  --poll-us U          pause between stats polls, 0 = none [100]\n"
      "  --prefix NAME        group name prefix [scale<pid>]\n"
      "  -h, --help           this help\n"
      "\n"
      "Exit status: 0 (targets met or not), 1 a check failed, 2 bad command line, 3 set-up\n"
      "failed.\n");
}

int parse(int argc, char** argv, Options& options) {
  enum { kGroups = 1000, kSleepers, kStack, kMessages, kDelay, kPoll, kPid, kParts, kPrefix };
  static const option table[] = {{"groups", required_argument, nullptr, kGroups},
                                 {"sleepers", required_argument, nullptr, kSleepers},
                                 {"stack-kib", required_argument, nullptr, kStack},
                                 {"messages", required_argument, nullptr, kMessages},
                                 {"delay-ms", required_argument, nullptr, kDelay},
                                 {"poll-us", required_argument, nullptr, kPoll},
                                 {"server-pid", required_argument, nullptr, kPid},
                                 {"parts", required_argument, nullptr, kParts},
                                 {"prefix", required_argument, nullptr, kPrefix},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  const NumericOption numerics[] = {
      {kGroups, "--groups", 1, 100000, &options.groups},
      {kSleepers, "--sleepers", 1, 100000, &options.sleepers},
      {kStack, "--stack-kib", 16, 8192, &options.stack_kib},
      {kMessages, "--messages", 1, 10'000'000, &options.messages},
      {kDelay, "--delay-ms", 1, 3'600'000, &options.delay_ms},
      {kPoll, "--poll-us", 0, 1'000'000, &options.poll_us},
      {kPid, "--server-pid", 1, 1L << 22, &options.server_pid},
  };
  opterr = 0;
  int id;
  while ((id = getopt_long(argc, argv, "h", table, nullptr)) != -1) {
    if (id == 'h') {
      usage(stdout);
      return 0;
    }
    if (id == kPrefix) {
      options.prefix = optarg;
      continue;
    }
    if (id == kParts) {
      options.parts = optarg;
      std::string rest = options.parts + ",";
      for (std::size_t comma; (comma = rest.find(',')) != std::string::npos;
           rest.erase(0, comma + 1)) {
        const std::string part = rest.substr(0, comma);
        if (part != "groups" && part != "sleepers" && part != "delays") {
          std::fprintf(stderr,
                       "synchmess_scale: --parts takes groups, sleepers, delays (comma-separated), "
                       "not '%s'\n",
                       part.c_str());
          return 2;
        }
      }
      continue;
    }
    if (!take_numeric_option("synchmess_scale", numerics, id, optarg, argv[optind - 1])) return 2;
  }
  if (optind < argc) {
    std::fprintf(stderr,
                 "synchmess_scale: unexpected argument '%s'\nTry 'synchmess_scale --help'.\n",
                 argv[optind]);
    return 2;
  }
  if (options.prefix.empty()) options.prefix = "scale" + std::to_string(::getpid());
  return -1;
}

bool wants(const Options& options, const char* part) {
  const std::string list = "," + options.parts + ",";
  return list.find("," + std::string(part) + ",") != std::string::npos;
}

int run(const Options& options) {
  const ProcSample start = sample_process(static_cast<pid_t>(options.server_pid));
  say("synchmess_scale: devices in %s; server pid %s: threads %s, RSS %s\n", synch_dir(),
      options.server_pid > 0 ? std::to_string(options.server_pid).c_str() : "not given",
      format_count(start.threads).c_str(), format_kib(start.rss_kib).c_str());
  if (options.server_pid > 0 && !start.threads) {
    say("synchmess_scale: cannot read /proc/%ld (is the server running?)\n", options.server_pid);
    return 3;
  }
  Outcome outcome;
  if (wants(options, "groups")) scale_groups(options, outcome);
  if (!outcome.setup && wants(options, "sleepers")) scale_sleepers(options, outcome);
  if (!outcome.setup && wants(options, "delays")) scale_delays(options, outcome);
  line();
  const ProcSample end = sample_process(static_cast<pid_t>(options.server_pid));
  if (options.server_pid > 0) {
    if (!end.threads) {
      say("synchmess_scale: the server (pid %ld) is gone\n", options.server_pid);
      outcome.failed = true;
    } else {
      say("server at the end: threads %s, RSS %s, peak RSS (VmHWM) %s, CPU time %s\n",
          format_count(end.threads).c_str(), format_kib(end.rss_kib).c_str(),
          format_kib(end.hwm_kib).c_str(), format_seconds(end.cpu_s).c_str());
    }
  }
  if (outcome.setup) {
    say("synchmess_scale: SET-UP FAILED (see above)\n");
    return 3;
  }
  say("synchmess_scale: %s\n", outcome.failed ? "FAIL (a check failed, see above)"
                                              : "done (every check passed; targets as marked)");
  return outcome.failed ? 1 : 0;
}

}  // namespace
}  // namespace synchmess::stress

int main(int argc, char** argv) {
  synchmess::stress::Options options;
  const int parsed = synchmess::stress::parse(argc, argv, options);
  if (parsed >= 0) return parsed;
  return synchmess::stress::run(options);
}
