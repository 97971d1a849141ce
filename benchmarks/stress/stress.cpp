// synchmess_stress: the multi-threaded stress benchmark of the original kernel module, rebuilt
// against a running synchmess server (CUSE devices, or a FUSE mount through SYNCHMESS_DIR).
// benchmark.sh starts a fresh server and runs this; it can also run on its own.
//
// Phases (each on G groups installed for the run, "<prefix>-<index>", removed at the end):
//   1. immediate sends: P producer threads write for T seconds, round-robin over the groups;
//      C consumer threads read them (consumer c serves the groups g with g % C == c, or group
//      c % G when there are fewer groups than consumers), then everything is drained;
//   2. delayed sends: the same with a send delay D on every group, while a flusher thread
//      flushes one group after another every F ms; at the end every group is flushed (drain);
//   3. barrier: S sleeper threads per group sleep on its barrier; one awaker thread per group
//      waits until the group's stats show S sleepers, awakes them, and waits for all S to
//      return; R rounds.
// Every message carries (magic, producer, group, phase, size, seq, send time) and a payload
// pattern derived from them. Checks (any failure: exit 1):
//   - every (producer, seq) sent is received exactly once (none lost, none duplicated, none
//     invented), whole (size, header, payload), from the group it was sent to;
//   - per-producer FIFO within a group: each consumer sees a producer's seqs in a group
//     strictly increasing (one producer's writes are sequential, so FIFO order implies it);
//   - after the drain every group is empty: a read returns 0, stats show nothing queued,
//     delayed, sleeping or waiting;
//   - phase 2: messages received sooner than D after their send <= messages flushed (only a
//     flush can release a message early);
//   - phase 3: every awake returns S and wakes exactly S sleepers, every sleep returns 0.
// Figures: messages/s (messages received / time from the phase start to the last receive),
// send-to-receive latency p50/p99/max (send time stamped just before write(), receive just
// after read()), the server's CPU time (utime+stime of /proc/<pid>/stat) per phase, its thread
// count and its peak RSS (VmHWM) when --server-pid is given.
//
// Exit status: 0 all checks passed; 1 a check failed; 2 bad command line; 3 could not set up
// (no server, install failed, thread creation failed).
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <synchmess/client.h>

#include "common.hpp"

namespace synchmess::stress {
namespace {

constexpr uint32_t kMagic = 0x53544d53;  // "SMTS"
constexpr std::size_t kMaxErrors = 10;   // first errors kept for the report
// Producers wait for room in the server (SYNCH_IOC_SET_SEND_TIMEOUT) instead of retrying.
constexpr uint32_t kSendTimeoutMs = 100;
// Consumers of one group wait in read() this long before they look whether the run is over.
constexpr uint32_t kReceiveTimeoutMs = 20;

struct Options {
  long producers = 2;
  long consumers = 2;
  long groups = 4;
  long seconds = 5;
  long size = 64;
  long delay_ms = 100;
  long delay_seconds = 2;
  long flush_interval_ms = 50;
  long rate = 0;  // messages/s over all producers, 0 = as fast as possible
  long barrier_rounds = 1000;
  long sleepers = 2;
  long drain_timeout_s = 30;
  long server_pid = 0;
  long one_group_pairs = 0;  // > 0: compare 1 pair with N pairs on one group, nothing else
  bool poll_consumers = false;
  std::string prefix;
};

struct Header {
  uint32_t magic;
  uint16_t producer;
  uint16_t group;
  uint32_t phase;
  uint32_t size;
  uint64_t seq;
  int64_t sent_ns;
};
static_assert(sizeof(Header) == 32);

uint8_t pattern_byte(const Header& header, std::size_t offset) {
  return static_cast<uint8_t>(header.seq * 131 + header.producer * 7 + header.group + offset);
}

void fill_payload(char* buffer, const Header& header) {
  for (std::size_t i = sizeof(Header); i < header.size; ++i)
    buffer[i] = static_cast<char>(pattern_byte(header, i));
}

// Failures of one run, from any thread: counted, the first few kept with their text.
class Errors {
 public:
  void add(std::string text) {
    std::lock_guard lock(mu_);
    ++count_;
    if (texts_.size() < kMaxErrors) texts_.push_back(std::move(text));
  }
  long count() const {
    std::lock_guard lock(mu_);
    return count_;
  }
  void print(const char* indent) const {
    std::lock_guard lock(mu_);
    for (const auto& text : texts_)
      say("%s%s\n", indent, text.c_str());
    if (count_ > static_cast<long>(texts_.size())) {
      say("%s... and %ld more\n", indent, count_ - static_cast<long>(texts_.size()));
    }
  }

 private:
  mutable std::mutex mu_;
  long count_ = 0;
  std::vector<std::string> texts_;
};

std::string format_text(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string format_text(const char* format, ...) {
  char text[512];
  va_list arguments;
  va_start(arguments, format);
  std::vsnprintf(text, sizeof text, format, arguments);
  va_end(arguments);
  return text;
}

// ---- phases 1 and 2: messages ----

struct ConsumerRecord {
  std::vector<uint64_t> keys;  // producer << 48 | seq
  std::vector<int64_t> latencies_ns;
  int64_t last_receive_ns = 0;
  long reads = 0;
  long empty_reads = 0;
  long polls = 0;
};

uint64_t key_of(uint64_t producer, uint64_t seq) {
  return producer << 48 | seq;
}

struct MessagePhase {
  const Options& options;
  const Groups& groups;
  int phase;          // 1 or 2
  uint32_t delay_ms;  // 0 in phase 1
  Errors& errors;

  std::atomic<bool> producers_done{false};
  std::atomic<uint64_t> sent_total{0};
  std::atomic<uint64_t> received_total{0};
  std::atomic<uint64_t> flushed_total{0};
  std::atomic<long> send_timeouts{0};
  std::atomic<bool> abort{false};
  std::vector<uint64_t> sent_per_producer{};
  std::vector<ConsumerRecord> records{};
  int64_t start_ns = 0;
  int64_t end_ns = 0;  // when the producers stopped

  // Descriptors of the producers, closed only after the final flush: in a FUSE mount every
  // close() flushes the group, which would make delayed messages land early uncounted.
  std::vector<std::vector<int>> producer_fds{};

  void produce(std::size_t producer) {
    const std::size_t group_count = groups.size();
    std::vector<int>& fds = producer_fds[producer];
    for (std::size_t g = 0; g < group_count; ++g) {
      fds.push_back(synch_open_group(groups.name(g).c_str(), O_WRONLY));
      if (fds.back() < 0 || synch_set_send_timeout(fds.back(), kSendTimeoutMs) != 0) {
        errors.add(format_text("producer %zu: open %s: %s", producer, groups.name(g).c_str(),
                               errno_name(errno).c_str()));
        abort.store(true);
      }
    }
    std::vector<char> buffer(static_cast<std::size_t>(options.size));
    uint64_t seq = 0;
    std::size_t g = producer % group_count;
    // --rate: producer p sends message k at start + (k + p / P) * P / rate.
    const int64_t interval_ns =
        options.rate > 0 ? options.producers * 1'000'000'000LL / options.rate : 0;
    const int64_t offset_ns =
        options.rate > 0 ? static_cast<int64_t>(producer) * 1'000'000'000LL / options.rate : 0;
    while (!abort.load(std::memory_order_relaxed)) {
      if (interval_ns > 0) {
        const int64_t due = start_ns + offset_ns + static_cast<int64_t>(seq) * interval_ns;
        if (due >= end_ns) break;
        const timespec at{static_cast<time_t>(due / 1'000'000'000),
                          static_cast<long>(due % 1'000'000'000)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nullptr) == EINTR) {
        }
      }
      const int64_t now = now_ns();
      if (now >= end_ns) break;
      Header header{kMagic,
                    static_cast<uint16_t>(producer),
                    static_cast<uint16_t>(g),
                    static_cast<uint32_t>(phase),
                    static_cast<uint32_t>(options.size),
                    seq,
                    now};
      std::memcpy(buffer.data(), &header, sizeof header);
      fill_payload(buffer.data(), header);
      const ssize_t rc = synch_send(fds[g], buffer.data(), buffer.size());
      if (rc == static_cast<ssize_t>(buffer.size())) {
        ++seq;
        g = (g + 1) % group_count;
        continue;
      }
      if (rc < 0 && errno == ENOSPC) {  // full for a whole send timeout: try again
        send_timeouts.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      errors.add(format_text("producer %zu: write to %s returned %zd (%s)", producer,
                             groups.name(g).c_str(), rc,
                             rc < 0 ? errno_name(errno).c_str() : "short write"));
      abort.store(true);
    }
    sent_per_producer[producer] = seq;
  }

  void consume(std::size_t consumer) {
    const std::size_t group_count = groups.size();
    const std::size_t consumer_count = records.size();
    std::vector<std::size_t> mine;
    if (group_count >= consumer_count) {
      for (std::size_t g = consumer; g < group_count; g += consumer_count)
        mine.push_back(g);
    } else {
      mine.push_back(consumer % group_count);
    }
    std::vector<pollfd> fds;
    for (const std::size_t g : mine) {
      const int fd = synch_open_group(groups.name(g).c_str(), O_RDONLY);
      if (fd < 0) {
        errors.add(format_text("consumer %zu: open %s: %s", consumer, groups.name(g).c_str(),
                               errno_name(errno).c_str()));
        abort.store(true);
      }
      fds.push_back(pollfd{fd, POLLIN, 0});
    }
    // A consumer of one group waits in read() itself (a waiting read is handed exactly one
    // message), not in poll() (every poller of a group wakes for every message); --poll, or
    // several groups, make it poll.
    const bool blocking_reads = mine.size() == 1 && !options.poll_consumers;
    if (blocking_reads && synch_set_recv_timeout(fds[0].fd, kReceiveTimeoutMs) != 0) {
      errors.add(
          format_text("consumer %zu: SET_RECV_TIMEOUT: %s", consumer, errno_name(errno).c_str()));
      abort.store(true);
    }
    ConsumerRecord& record = records[consumer];
    // last[index in mine][producer]: the last seq seen, +1 (0: none yet).
    std::vector<std::vector<uint64_t>> last(mine.size(),
                                            std::vector<uint64_t>(sent_per_producer.size(), 0));
    std::vector<char> buffer(static_cast<std::size_t>(options.size) + 64);
    int64_t drain_deadline = 0;
    while (!abort.load(std::memory_order_relaxed)) {
      bool got = false;
      for (std::size_t i = 0; i < mine.size(); ++i) {
        const ssize_t n = synch_receive(fds[i].fd, buffer.data(), buffer.size());
        ++record.reads;
        if (n == 0) {
          ++record.empty_reads;
          continue;
        }
        const int64_t received = now_ns();
        if (n < 0) {
          errors.add(format_text("consumer %zu: read from %s: %s", consumer,
                                 groups.name(mine[i]).c_str(), errno_name(errno).c_str()));
          abort.store(true);
          break;
        }
        got = true;
        record.last_receive_ns = received;
        received_total.fetch_add(1, std::memory_order_relaxed);
        check_message(consumer, mine[i], buffer.data(), static_cast<std::size_t>(n), received,
                      last[i], record);
      }
      if (got) continue;
      if (producers_done.load(std::memory_order_acquire)) {
        if (received_total.load() >= sent_total.load()) break;
        const int64_t now = now_ns();
        if (drain_deadline == 0) {
          drain_deadline = now + (options.drain_timeout_s * 1000 + delay_ms) * 1'000'000LL;
        } else if (now >= drain_deadline) {
          break;  // what is missing is reported by the verification
        }
      }
      // Nothing to read: wait until one of our groups has a message (bounded, so that the end
      // of the drain is noticed).
      if (blocking_reads) continue;
      ++record.polls;
      ::poll(fds.data(), fds.size(), 2);
    }
    for (const pollfd& entry : fds)
      if (entry.fd >= 0) ::close(entry.fd);
  }

  void check_message(std::size_t consumer, std::size_t group, const char* data, std::size_t n,
                     int64_t received, std::vector<uint64_t>& last, ConsumerRecord& record) {
    Header header{};
    if (n < sizeof header) {
      errors.add(format_text("consumer %zu: %zu-byte message from %s", consumer, n,
                             groups.name(group).c_str()));
      return;
    }
    std::memcpy(&header, data, sizeof header);
    if (header.magic != kMagic || header.size != n ||
        header.phase != static_cast<uint32_t>(phase) ||
        header.producer >= sent_per_producer.size() || header.group != group) {
      errors.add(
          format_text("consumer %zu: bad message from %s: magic %08x size %u (read %zu) phase %u "
                      "producer %u group %u",
                      consumer, groups.name(group).c_str(), header.magic, header.size, n,
                      header.phase, header.producer, header.group));
      return;
    }
    for (std::size_t i = sizeof header; i < n; ++i) {
      if (static_cast<uint8_t>(data[i]) != pattern_byte(header, i)) {
        errors.add(format_text("consumer %zu: payload of producer %u seq %llu corrupt at byte %zu",
                               consumer, header.producer,
                               static_cast<unsigned long long>(header.seq), i));
        return;
      }
    }
    uint64_t& previous = last[header.producer];
    if (header.seq + 1 <= previous) {
      errors.add(format_text("consumer %zu: FIFO broken in %s: producer %u seq %llu after seq %llu",
                             consumer, groups.name(group).c_str(), header.producer,
                             static_cast<unsigned long long>(header.seq),
                             static_cast<unsigned long long>(previous - 1)));
    }
    previous = header.seq + 1;
    record.keys.push_back(key_of(header.producer, header.seq));
    record.latencies_ns.push_back(received - header.sent_ns);
  }

  void flusher(const std::vector<int>& fds) {
    std::size_t g = 0;
    while (!producers_done.load() && !abort.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(options.flush_interval_ms));
      const int flushed = synch_flush(fds[g]);
      if (flushed < 0) {
        errors.add(format_text("flush %s: %s", groups.name(g).c_str(), errno_name(errno).c_str()));
        abort.store(true);
        return;
      }
      flushed_total.fetch_add(static_cast<uint64_t>(flushed));
      g = (g + 1) % fds.size();
    }
  }
};

// Joins every thread of `threads` (those that started).
void join_all(std::vector<std::thread>& threads) {
  for (auto& thread : threads)
    if (thread.joinable()) thread.join();
}

bool start_thread(std::vector<std::thread>& threads, Errors& errors, auto function) {
  try {
    threads.emplace_back(std::move(function));
    return true;
  } catch (const std::system_error& error) {
    errors.add(format_text("cannot start a thread: %s", error.what()));
    return false;
  }
}

// Runs phase 1 or 2; prints its figures and checks; false when a check failed.
bool run_message_phase(const Options& options, const Groups& groups,
                       const std::vector<int>& control_fds, int phase, uint32_t delay_ms,
                       long seconds, double* rate = nullptr) {
  Errors errors;
  MessagePhase run{options, groups, phase, delay_ms, errors};
  run.sent_per_producer.assign(static_cast<std::size_t>(options.producers), 0);
  run.records.resize(static_cast<std::size_t>(options.consumers));
  run.producer_fds.resize(static_cast<std::size_t>(options.producers));
  for (const int fd : control_fds) {
    if (synch_set_send_delay(fd, delay_ms) != 0) {
      errors.add(format_text("SET_SEND_DELAY %u: %s", delay_ms, errno_name(errno).c_str()));
    }
  }
  if (phase == 1) {
    say("phase 1: immediate sends, %ld s, %ld producers -> %ld consumers over %zu groups, %s\n",
        seconds, options.producers, options.consumers, groups.size(),
        options.rate > 0 ? ("paced at " + std::to_string(options.rate) + " msg/s").c_str()
                         : "as fast as possible");
  } else {
    say("phase 2: delayed sends (delay %u ms), %ld s, a flush every %ld ms (groups in turn), then "
        "every group flushed\n",
        delay_ms, seconds, options.flush_interval_ms);
  }
  const ProcSample before = sample_process(static_cast<pid_t>(options.server_pid));
  run.start_ns = now_ns();
  run.end_ns = run.start_ns + seconds * 1'000'000'000LL;
  std::vector<std::thread> consumers, producers, flusher;
  bool started = errors.count() == 0;
  for (long c = 0; started && c < options.consumers; ++c) {
    started = start_thread(consumers, errors, [&run, c] { run.consume(static_cast<size_t>(c)); });
  }
  for (long p = 0; started && p < options.producers; ++p) {
    started = start_thread(producers, errors, [&run, p] { run.produce(static_cast<size_t>(p)); });
  }
  if (started && phase == 2) {
    started = start_thread(flusher, errors, [&run, &control_fds] { run.flusher(control_fds); });
  }
  if (!started) run.abort.store(true);
  join_all(producers);
  const int64_t producers_end = now_ns();
  uint64_t sent = 0;
  for (const uint64_t count : run.sent_per_producer)
    sent += count;
  run.sent_total.store(sent);
  run.producers_done.store(true, std::memory_order_release);
  join_all(flusher);
  uint64_t final_flush = 0;
  if (phase == 2) {  // the drain: what is still delayed lands now
    for (std::size_t g = 0; g < control_fds.size(); ++g) {
      const int flushed = synch_flush(control_fds[g]);
      if (flushed < 0) {
        errors.add(format_text("final flush of %s: %s", groups.name(g).c_str(),
                               errno_name(errno).c_str()));
      } else {
        final_flush += static_cast<uint64_t>(flushed);
      }
    }
    run.flushed_total.fetch_add(final_flush);
  }
  for (const auto& fds : run.producer_fds)
    for (const int fd : fds)
      if (fd >= 0) ::close(fd);
  join_all(consumers);
  const ProcSample after = sample_process(static_cast<pid_t>(options.server_pid));

  // ---- verification ----
  std::vector<uint64_t> keys;
  std::vector<int64_t> latencies;
  int64_t last_receive = run.start_ns;
  long reads = 0, empty_reads = 0, polls = 0;
  for (auto& record : run.records) {
    keys.insert(keys.end(), record.keys.begin(), record.keys.end());
    latencies.insert(latencies.end(), record.latencies_ns.begin(), record.latencies_ns.end());
    last_receive = std::max(last_receive, record.last_receive_ns);
    reads += record.reads;
    empty_reads += record.empty_reads;
    polls += record.polls;
    record = ConsumerRecord{};
  }
  std::sort(keys.begin(), keys.end());
  uint64_t duplicates = 0, invented = 0, unique_in_range = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (i > 0 && keys[i] == keys[i - 1]) {
      if (++duplicates <= 3) {
        errors.add(format_text("duplicate: producer %llu seq %llu received twice",
                               static_cast<unsigned long long>(keys[i] >> 48),
                               static_cast<unsigned long long>(keys[i] & ((1ULL << 48) - 1))));
      }
      continue;
    }
    const uint64_t producer = keys[i] >> 48, seq = keys[i] & ((1ULL << 48) - 1);
    if (producer >= run.sent_per_producer.size() || seq >= run.sent_per_producer[producer]) {
      ++invented;
      continue;
    }
    ++unique_in_range;
  }
  const uint64_t lost = sent - unique_in_range;
  if (lost > 0) {
    // Name the first few missing ones.
    std::size_t shown = 0;
    for (std::size_t p = 0; p < run.sent_per_producer.size() && shown < 3; ++p) {
      for (uint64_t seq = 0; seq < run.sent_per_producer[p] && shown < 3; ++seq) {
        if (!std::binary_search(keys.begin(), keys.end(), key_of(p, seq))) {
          errors.add(format_text("lost: producer %zu seq %llu (group %llu) never received", p,
                                 static_cast<unsigned long long>(seq),
                                 static_cast<unsigned long long>((p + seq) % groups.size())));
          ++shown;
        }
      }
    }
    errors.add(format_text("%llu of %llu messages lost", static_cast<unsigned long long>(lost),
                           static_cast<unsigned long long>(sent)));
  }
  if (duplicates > 0) {
    errors.add(
        format_text("%llu duplicate deliveries", static_cast<unsigned long long>(duplicates)));
  }
  if (invented > 0) {
    errors.add(format_text("%llu messages received that were never sent",
                           static_cast<unsigned long long>(invented)));
  }
  // The groups are empty now: nothing queued, delayed, sleeping, waiting; a read gives 0.
  for (std::size_t g = 0; g < control_fds.size(); ++g) {
    char byte[64];
    const ssize_t n = synch_receive(control_fds[g], byte, sizeof byte);
    synch_group_stats stats{};
    if (n != 0) {
      errors.add(format_text("after the drain a read of %s returned %zd%s%s (expected 0)",
                             groups.name(g).c_str(), n, n < 0 ? " " : "",
                             n < 0 ? errno_name(errno).c_str() : ""));
    }
    if (synch_get_stats(control_fds[g], &stats) != 0) {
      errors.add(
          format_text("GET_STATS %s: %s", groups.name(g).c_str(), errno_name(errno).c_str()));
    } else if (stats.queued_messages != 0 || stats.queued_bytes != 0 ||
               stats.delayed_messages != 0 || stats.delayed_bytes != 0 || stats.sleepers != 0 ||
               stats.readers_waiting != 0) {
      errors.add(format_text(
          "after the drain %s is not empty: queued %llu (%llu B) delayed %llu (%llu B) "
          "sleepers %llu readers_waiting %llu",
          groups.name(g).c_str(), static_cast<unsigned long long>(stats.queued_messages),
          static_cast<unsigned long long>(stats.queued_bytes),
          static_cast<unsigned long long>(stats.delayed_messages),
          static_cast<unsigned long long>(stats.delayed_bytes),
          static_cast<unsigned long long>(stats.sleepers),
          static_cast<unsigned long long>(stats.readers_waiting)));
    }
  }
  uint64_t early = 0;
  std::vector<int64_t> lateness;  // phase 2: latency - delay, for messages not received early
  if (phase == 2) {
    const int64_t delay_ns = static_cast<int64_t>(delay_ms) * 1'000'000;
    for (const int64_t latency : latencies) {
      if (latency < delay_ns) {
        ++early;
      } else {
        lateness.push_back(latency - delay_ns);
      }
    }
    if (early > run.flushed_total.load()) {
      errors.add(format_text(
          "%llu messages arrived sooner than the %u ms delay but only %llu were flushed",
          static_cast<unsigned long long>(early), delay_ms,
          static_cast<unsigned long long>(run.flushed_total.load())));
    }
  }

  // ---- report ----
  const double elapsed_s = static_cast<double>(last_receive - run.start_ns) / 1e9;
  const double produce_s = static_cast<double>(producers_end - run.start_ns) / 1e9;
  const std::size_t received = latencies.size();
  const int64_t p50 = percentile(latencies, 50), p99 = percentile(latencies, 99);
  const int64_t max_latency = latencies.empty() ? 0 : latencies.back();
  say("  throughput: %llu messages sent in %.2f s, all received by %.2f s: %s msg/s "
      "(sent %s msg/s); %ld sends timed out (group full for %d ms)\n",
      static_cast<unsigned long long>(sent), produce_s, elapsed_s,
      format_rate(elapsed_s > 0 ? static_cast<double>(received) / elapsed_s : 0).c_str(),
      format_rate(produce_s > 0 ? static_cast<double>(sent) / produce_s : 0).c_str(),
      run.send_timeouts.load(), kSendTimeoutMs);
  say("  latency send->receive: p50 %s, p99 %s, max %s (%zu messages)\n",
      format_ns(static_cast<double>(p50)).c_str(), format_ns(static_cast<double>(p99)).c_str(),
      format_ns(static_cast<double>(max_latency)).c_str(), received);
  if (phase == 2) {
    const int64_t late50 = percentile(lateness, 50), late99 = percentile(lateness, 99);
    say("  delayed: %llu made available by flushes (%llu of them by the final flush), %llu "
        "received sooner than the delay; the %zu received after it came p50 %s / p99 %s after "
        "send+delay (expiry + queueing + read)\n",
        static_cast<unsigned long long>(run.flushed_total.load()),
        static_cast<unsigned long long>(final_flush), static_cast<unsigned long long>(early),
        lateness.size(), format_ns(static_cast<double>(late50)).c_str(),
        format_ns(static_cast<double>(late99)).c_str());
  }
  say("  consumers: %ld reads (%ld found the group empty), %ld poll() waits\n", reads, empty_reads,
      polls);
  if (before.cpu_s && after.cpu_s) {
    const double cpu = *after.cpu_s - *before.cpu_s;
    say("  server CPU: %.2f s (utime %.2f s + stime %.2f s) = %.2f CPUs over the phase, %s "
        "per message\n",
        cpu, *after.utime_s - *before.utime_s, *after.stime_s - *before.stime_s,
        elapsed_s > 0 ? cpu / elapsed_s : 0.0,
        received > 0 ? format_ns(cpu * 1e9 / static_cast<double>(received)).c_str() : "n/a");
  }
  if (rate != nullptr) *rate = elapsed_s > 0 ? static_cast<double>(received) / elapsed_s : 0;
  const bool passed = errors.count() == 0;
  say("  check: every (producer, seq) received exactly once, whole, FIFO per producer within a "
      "group, groups empty after the drain%s: %s (%llu sent, %llu received, %llu lost, %llu "
      "duplicated)\n",
      phase == 2 ? ", early arrivals <= flushed" : "", passed ? "ok" : "FAILED",
      static_cast<unsigned long long>(sent), static_cast<unsigned long long>(received),
      static_cast<unsigned long long>(lost), static_cast<unsigned long long>(duplicates));
  errors.print("    ");
  for (const int fd : control_fds)
    synch_set_send_delay(fd, 0);
  return passed;
}

// ---- phase 3: barrier ----

bool run_barrier_phase(const Options& options, const Groups& groups,
                       const std::vector<int>& control_fds) {
  const std::size_t group_count = groups.size();
  const std::size_t sleepers = static_cast<std::size_t>(options.sleepers);
  const long rounds = options.barrier_rounds;
  say("phase 3: barrier, %zu sleepers on each of %zu groups, %ld awake rounds per group\n",
      sleepers, group_count, rounds);
  Errors errors;
  std::atomic<bool> abort{false};
  struct GroupState {
    std::atomic<uint64_t> returned{0};
    std::atomic<int64_t> last_return_ns{0};
  };
  std::vector<GroupState> state(group_count);
  std::vector<std::vector<int64_t>> wake_ns(group_count);
  const ProcSample before = sample_process(static_cast<pid_t>(options.server_pid));
  const int64_t start = now_ns();

  const auto sleeper = [&](std::size_t g) {
    const int fd = synch_open_group(groups.name(g).c_str(), O_RDWR);
    if (fd < 0) {
      errors.add(
          format_text("sleeper: open %s: %s", groups.name(g).c_str(), errno_name(errno).c_str()));
      abort.store(true);
      return;
    }
    for (long r = 0; r < rounds && !abort.load(); ++r) {
      const int rc = synch_sleep_on_barrier(fd);
      const int64_t now = now_ns();
      if (rc != 0) {
        errors.add(format_text("SLEEP_ON_BARRIER on %s: %s", groups.name(g).c_str(),
                               errno_name(errno).c_str()));
        abort.store(true);
        break;
      }
      int64_t seen = state[g].last_return_ns.load();
      while (seen < now && !state[g].last_return_ns.compare_exchange_weak(seen, now)) {
      }
      state[g].returned.fetch_add(1);
    }
    ::close(fd);
  };

  // Waits (bounded) until `done` is true; false on timeout or abort.
  const auto wait_until = [&abort](auto done, int64_t timeout_ns) {
    const int64_t deadline = now_ns() + timeout_ns;
    while (!done()) {
      if (abort.load() || now_ns() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
  };

  const auto awaker = [&](std::size_t g) {
    const int fd = control_fds[g];
    for (long r = 0; r < rounds && !abort.load(); ++r) {
      synch_group_stats stats{};
      const bool parked =
          wait_until([&] { return synch_get_stats(fd, &stats) == 0 && stats.sleepers >= sleepers; },
                     10'000'000'000LL);
      if (!parked) {
        if (abort.load()) return;
        errors.add(format_text("round %ld on %s: only %llu of %zu sleepers parked after 10 s", r,
                               groups.name(g).c_str(),
                               static_cast<unsigned long long>(stats.sleepers), sleepers));
        abort.store(true);
        return;
      }
      if (stats.sleepers != sleepers) {
        errors.add(format_text("round %ld on %s: stats show %llu sleepers, expected %zu", r,
                               groups.name(g).c_str(),
                               static_cast<unsigned long long>(stats.sleepers), sleepers));
      }
      const int64_t awake_ns = now_ns();
      const int woken = synch_awake_barrier(fd);
      if (woken != static_cast<int>(sleepers)) {
        errors.add(format_text("round %ld on %s: AWAKE_BARRIER returned %d%s%s, expected %zu", r,
                               groups.name(g).c_str(), woken, woken < 0 ? " " : "",
                               woken < 0 ? errno_name(errno).c_str() : "", sleepers));
        if (woken < 0) {
          abort.store(true);
          return;
        }
      }
      const uint64_t expected = sleepers * static_cast<uint64_t>(r + 1);
      if (!wait_until([&] { return state[g].returned.load() >= expected; }, 10'000'000'000LL)) {
        if (abort.load()) return;
        errors.add(format_text("round %ld on %s: %llu of %llu sleeps returned 10 s after the awake",
                               r, groups.name(g).c_str(),
                               static_cast<unsigned long long>(state[g].returned.load()),
                               static_cast<unsigned long long>(expected)));
        abort.store(true);
        return;
      }
      if (state[g].returned.load() != expected) {
        errors.add(format_text("round %ld on %s: %llu sleeps returned, expected %llu", r,
                               groups.name(g).c_str(),
                               static_cast<unsigned long long>(state[g].returned.load()),
                               static_cast<unsigned long long>(expected)));
      }
      wake_ns[g].push_back(state[g].last_return_ns.load() - awake_ns);
    }
  };

  // After a failure (abort), sleepers still parked are released by awakes until every thread
  // has left.
  std::atomic<bool> joined{false};
  std::thread releaser([&] {
    while (!joined.load()) {
      if (abort.load()) {
        for (const int fd : control_fds)
          synch_awake_barrier(fd);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  std::vector<std::thread> threads;
  bool started = true;
  for (std::size_t g = 0; started && g < group_count; ++g) {
    for (std::size_t s = 0; started && s < sleepers; ++s)
      started = start_thread(threads, errors, [&sleeper, g] { sleeper(g); });
    if (started) started = start_thread(threads, errors, [&awaker, g] { awaker(g); });
  }
  if (!started) abort.store(true);
  join_all(threads);
  joined.store(true);
  releaser.join();
  const int64_t elapsed = now_ns() - start;
  const ProcSample after = sample_process(static_cast<pid_t>(options.server_pid));
  // If something aborted, sleepers may still be parked in the server: release them.
  for (const int fd : control_fds) {
    synch_group_stats stats{};
    if (synch_get_stats(fd, &stats) == 0 && stats.sleepers != 0) {
      errors.add(format_text("%llu sleepers still parked after the phase",
                             static_cast<unsigned long long>(stats.sleepers)));
      synch_awake_barrier(fd);
    }
  }
  std::vector<int64_t> all;
  for (const auto& values : wake_ns)
    all.insert(all.end(), values.begin(), values.end());
  const std::size_t measured = all.size();
  const int64_t p50 = percentile(all, 50), p99 = percentile(all, 99);
  say("  %zu awakes of %zu sleepers in %.2f s (%s awakes/s); from AWAKE_BARRIER to the last "
      "sleeper's return: p50 %s, p99 %s, max %s\n",
      measured, sleepers, static_cast<double>(elapsed) / 1e9,
      format_rate(static_cast<double>(measured) * 1e9 / static_cast<double>(elapsed)).c_str(),
      format_ns(static_cast<double>(p50)).c_str(), format_ns(static_cast<double>(p99)).c_str(),
      format_ns(all.empty() ? 0.0 : static_cast<double>(all.back())).c_str());
  if (before.cpu_s && after.cpu_s) {
    say("  server CPU: %.2f s (utime %.2f s + stime %.2f s)\n", *after.cpu_s - *before.cpu_s,
        *after.utime_s - *before.utime_s, *after.stime_s - *before.stime_s);
  }
  const bool passed = errors.count() == 0;
  say("  check: every awake woke exactly the %zu parked sleepers, every sleep returned 0: %s\n",
      sleepers, passed ? "ok" : "FAILED");
  errors.print("    ");
  return passed;
}

// ---- command line ----

void usage(FILE* out) {
  std::fprintf(
      out,
      "Usage: synchmess_stress [OPTIONS]\n"
      "\n"
      "Stress benchmark against a running synchmess server (devices in $SYNCHMESS_DIR, default\n"
      "/dev/synch): immediate sends, delayed sends with flushes, barrier rounds; checks that\n"
      "every message is received exactly once and in per-producer FIFO order.\n"
      "\n"
      "Options (defaults in brackets):\n"
      "  --producers N          producer threads [2]\n"
      "  --consumers N          consumer threads [2]\n"
      "  --groups G             groups installed for the run [4]\n"
      "  --seconds T            phase 1 (immediate sends) duration [5]\n"
      "  --size BYTES           message size, 32..4096 [64]\n"
      "  --delay-ms D           phase 2 send delay [100]\n"
      "  --delay-seconds T      phase 2 duration, 0 skips it [2]\n"
      "  --flush-interval-ms F  phase 2: one group flushed every F ms [50]\n"
      "  --rate R               phases 1, 2: R messages/s over all producers, paced; 0 = as\n"
      "                         fast as possible (latency then includes the backlog) [0]\n"
      "  --barrier-rounds R     phase 3 awakes per group, 0 skips it [1000]\n"
      "  --sleepers S           phase 3 sleepers per group [2]\n"
      "  --drain-timeout S      seconds the drain may take before the missing count [30]\n"
      "  --server-pid PID       the server, for CPU time, threads and peak RSS from /proc\n"
      "  --poll                 consumers wait in poll() and read without waiting (the\n"
      "                         original's way), instead of a read() with a receive timeout\n"
      "  --one-group-pairs N    only this: phase 1 on ONE group with 1 producer/consumer pair,\n"
      "                         then with N pairs, --seconds each; prints both and N/1\n"
      "  --prefix NAME          group name prefix [stress<pid>]\n"
      "  -h, --help             this help\n"
      "\n"
      "Exit status: 0 all checks passed, 1 a check failed, 2 bad command line, 3 set-up failed.\n");
}

int parse(int argc, char** argv, Options& options) {
  enum {
    kProducers = 1000,
    kConsumers,
    kGroups,
    kSeconds,
    kSize,
    kDelayMs,
    kDelaySeconds,
    kFlushInterval,
    kRounds,
    kSleepers,
    kDrain,
    kServerPid,
    kPrefix,
    kRate,
    kOneGroupPairs,
    kPoll
  };
  static const option table[] = {{"producers", required_argument, nullptr, kProducers},
                                 {"consumers", required_argument, nullptr, kConsumers},
                                 {"groups", required_argument, nullptr, kGroups},
                                 {"seconds", required_argument, nullptr, kSeconds},
                                 {"size", required_argument, nullptr, kSize},
                                 {"delay-ms", required_argument, nullptr, kDelayMs},
                                 {"delay-seconds", required_argument, nullptr, kDelaySeconds},
                                 {"flush-interval-ms", required_argument, nullptr, kFlushInterval},
                                 {"barrier-rounds", required_argument, nullptr, kRounds},
                                 {"sleepers", required_argument, nullptr, kSleepers},
                                 {"drain-timeout", required_argument, nullptr, kDrain},
                                 {"server-pid", required_argument, nullptr, kServerPid},
                                 {"prefix", required_argument, nullptr, kPrefix},
                                 {"rate", required_argument, nullptr, kRate},
                                 {"one-group-pairs", required_argument, nullptr, kOneGroupPairs},
                                 {"poll", no_argument, nullptr, kPoll},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  const NumericOption numerics[] = {
      {kProducers, "--producers", 1, 1000, &options.producers},
      {kConsumers, "--consumers", 1, 1000, &options.consumers},
      {kGroups, "--groups", 1, 1000, &options.groups},
      {kSeconds, "--seconds", 1, 3600, &options.seconds},
      {kSize, "--size", static_cast<long>(sizeof(Header)), 4096, &options.size},
      {kDelayMs, "--delay-ms", 1, 3'600'000, &options.delay_ms},
      {kDelaySeconds, "--delay-seconds", 0, 3600, &options.delay_seconds},
      {kFlushInterval, "--flush-interval-ms", 1, 60'000, &options.flush_interval_ms},
      {kRounds, "--barrier-rounds", 0, 1'000'000, &options.barrier_rounds},
      {kSleepers, "--sleepers", 1, 1000, &options.sleepers},
      {kDrain, "--drain-timeout", 1, 3600, &options.drain_timeout_s},
      {kServerPid, "--server-pid", 1, 1L << 22, &options.server_pid},
      {kRate, "--rate", 0, 100'000'000, &options.rate},
      {kOneGroupPairs, "--one-group-pairs", 1, 1000, &options.one_group_pairs},
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
    if (id == kPoll) {
      options.poll_consumers = true;
      continue;
    }
    if (!take_numeric_option("synchmess_stress", numerics, id, optarg, argv[optind - 1])) return 2;
  }
  if (optind < argc) {
    std::fprintf(stderr,
                 "synchmess_stress: unexpected argument '%s'\nTry 'synchmess_stress --help'.\n",
                 argv[optind]);
    return 2;
  }
  if (options.prefix.empty()) options.prefix = "stress" + std::to_string(::getpid());
  if (options.one_group_pairs > 0) options.groups = 1;
  return -1;
}

// --one-group-pairs N: 1 pair, then N pairs, on the same group; the target is N pairs moving
// at least as many messages per second as one.
bool compare_pairs(const Options& options, const Groups& groups,
                   const std::vector<int>& control_fds) {
  Options single = options;
  single.producers = single.consumers = 1;
  Options many = options;
  many.producers = many.consumers = options.one_group_pairs;
  double single_rate = 0;
  double many_rate = 0;
  say("one group, 1 producer/consumer pair:\n");
  bool passed = run_message_phase(single, groups, control_fds, 1, 0, options.seconds, &single_rate);
  say("one group, %ld producer/consumer pairs:\n", options.one_group_pairs);
  passed =
      run_message_phase(many, groups, control_fds, 1, 0, options.seconds, &many_rate) && passed;
  const double ratio = single_rate > 0 ? many_rate / single_rate : 0;
  say("one group: 1 pair %s msg/s, %ld pairs %s msg/s: %.2fx (target >= 1.00x: %s); consumers "
      "%s\n",
      format_rate(single_rate).c_str(), options.one_group_pairs, format_rate(many_rate).c_str(),
      ratio, ratio >= 1.0 ? "MET" : "NOT MET",
      options.poll_consumers ? "poll() then read" : "wait in read() (receive timeout)");
  return passed;
}

int run(const Options& options) {
  say("synchmess_stress: devices in %s; %ld producers, %ld consumers, %ld groups, %ld-byte "
      "messages; server pid %s\n",
      synch_dir(), options.producers, options.consumers, options.groups, options.size,
      options.server_pid > 0 ? std::to_string(options.server_pid).c_str() : "not given");
  const ProcSample start = sample_process(static_cast<pid_t>(options.server_pid));
  if (options.server_pid > 0 && !start.cpu_s) {
    say("synchmess_stress: cannot read /proc/%ld (is the server running?)\n", options.server_pid);
    return 3;
  }
  Groups groups(options.prefix);
  if (!groups.install(static_cast<std::size_t>(options.groups))) {
    say("synchmess_stress: installing group %s failed: %s\n", groups.name(groups.size()).c_str(),
        errno_name(errno).c_str());
    return 3;
  }
  std::vector<int> control_fds = groups.open_all();
  for (std::size_t g = 0; g < control_fds.size(); ++g) {
    if (control_fds[g] < 0) {
      say("synchmess_stress: opening %s failed: %s\n", groups.name(g).c_str(),
          errno_name(errno).c_str());
      return 3;
    }
  }
  // After a phase, a server that is gone ends the run (the next phases could only fail).
  const auto server_gone = [&options] {
    if (options.server_pid <= 0 || sample_process(static_cast<pid_t>(options.server_pid)).cpu_s) {
      return false;
    }
    say("synchmess_stress: the server (pid %ld) is gone: stopping\n", options.server_pid);
    return true;
  };
  if (options.one_group_pairs > 0) {
    bool compared = compare_pairs(options, groups, control_fds);
    if (server_gone()) {
      say("synchmess_stress: FAIL (the server died)\n");
      return 1;
    }
    for (const int fd : control_fds)
      ::close(fd);
    compared = groups.remove_all() == 0 && compared;
    say("synchmess_stress: %s\n", compared ? "PASS (no message lost, duplicated or out of order)"
                                           : "FAIL (see the checks above)");
    return compared ? 0 : 1;
  }
  bool passed = run_message_phase(options, groups, control_fds, 1, 0, options.seconds);
  bool gone = server_gone();
  if (!gone && options.delay_seconds > 0) {
    passed = run_message_phase(options, groups, control_fds, 2,
                               static_cast<uint32_t>(options.delay_ms), options.delay_seconds) &&
             passed;
    gone = server_gone();
  }
  if (!gone && options.barrier_rounds > 0) {
    passed = run_barrier_phase(options, groups, control_fds) && passed;
    gone = server_gone();
  }
  if (gone) {
    say("synchmess_stress: FAIL (the server died)\n");
    return 1;
  }
  for (const int fd : control_fds)
    ::close(fd);
  const ProcSample end = sample_process(static_cast<pid_t>(options.server_pid));
  const int remove_failures = groups.remove_all();
  if (remove_failures != 0) {
    say("groups: %d removals failed (last error %s)\n", remove_failures, errno_name(errno).c_str());
    passed = false;
  }
  if (start.cpu_s && end.cpu_s) {
    say("server: CPU time %.2f s over the run (utime %.2f s + stime %.2f s; %s -> %s), threads "
        "%s -> %s, RSS %s -> %s, peak RSS (VmHWM) %s\n",
        *end.cpu_s - *start.cpu_s, *end.utime_s - *start.utime_s, *end.stime_s - *start.stime_s,
        format_seconds(start.cpu_s).c_str(), format_seconds(end.cpu_s).c_str(),
        format_count(start.threads).c_str(), format_count(end.threads).c_str(),
        format_kib(start.rss_kib).c_str(), format_kib(end.rss_kib).c_str(),
        format_kib(end.hwm_kib).c_str());
  }
  say("synchmess_stress: %s\n", passed ? "PASS (no message lost, duplicated or out of order)"
                                       : "FAIL (see the checks above)");
  return passed ? 0 : 1;
}

}  // namespace
}  // namespace synchmess::stress

int main(int argc, char** argv) {
  synchmess::stress::Options options;
  const int parsed = synchmess::stress::parse(argc, argv, options);
  if (parsed >= 0) return parsed;
  return synchmess::stress::run(options);
}
