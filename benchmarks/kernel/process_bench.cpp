// synchmess_process_bench: the fast path (issue 9) between processes, against POSIX mq and a
// bare process-shared futex measured in the same run.
//
// Benchmarks (one Google Benchmark iteration each, manual time; the figure is recorded per pass
// and compared in the summary with the baseline run just before it):
//   process/pairs<P>/64B/mq              P producer processes and P consumer processes on ONE
//                                        POSIX message queue (blocking mq_send / mq_receive)
//   process/pairs<P>/64B/synchmess_fast  the same on ONE synchmess group through the client
//                                        library (each process its own synch_open_group(O_RDWR),
//                                        all on the shared region); P = 1 and 8
//   process/pairs1/64B/synchmess_device  1 + 1 on the device path (raw write()/read() on the
//                                        FUSE files): what the fast path replaces
//   process/pairs1/<S>/synchmess_inherited  1 + 1 on ONE descriptor the benchmark opened with
//                                        synch_open_group() before fork(): each child takes the
//                                        fast path at its first call (issue 16); S = 64B, 4KiB
//   process/pairs1/4KiB/{mq,synchmess_fast}  1 + 1 with 4096-byte messages
//   process/pingpong/64B/<X>             two processes bounce one 64-byte message --rounds x
//                                        100 times, each waiting blocked for the other's
//                                        (futex: two shared words, FUTEX_WAIT / FUTEX_WAKE, the
//                                        floor; mq: two queues; synchmess_fast: two groups,
//                                        receives with a timeout, i.e. futex waits): the half
//                                        round trip, median and p99
//   process/barrier64/futex              64 processes asleep in FUTEX_WAIT on one shared word,
//                                        woken by one FUTEX_WAKE: from the waker's clock read
//                                        before the wake to the last sleeper's clock read after
//                                        it woke (median over the rounds)
//   process/barrier64/synchmess_fast     the same with synch_sleep_on_barrier /
//                                        synch_awake_barrier on one group
// Throughput: the processes start together and run for --seconds (default 1); the figure is the
// messages the consumers took in that time, per second. Producers that find the group's budget
// full yield and retry (the library's non-blocking ENOSPC); mq producers block in mq_timedsend.
// Both queues hold the same number of messages: the mq's mq_maxmsg, and the group's
// max_storage_size / size; for 64 B that is 2048, or less when /proc/sys/fs/mqueue/msg_max is
// lower (10 by default: without CAP_SYS_RESOURCE even root is held to it; `sysctl
// fs.mqueue.msg_max=2048` raises it); for 4 KiB 48 (what the default 256 KiB ring holds of
// them: more would wait in the server's overflow, SPEC "Fast path"), or msg_max when lower.
// Consumers wait in the queue when it is empty (a receive timeout on the group: a futex wait;
// mq_timedreceive). Targets (issue 9): pairs1 synchmess_fast at least 2x mq's messages/s; pairs8 at
// least mq's; barrier64 synchmess_fast within 1.2x of the bare futex. Issue 16: synchmess_inherited
// and synchmess_fast at least 2x mq at 64 B and 4 KiB, and inherited within 10 % of fast; the
// ping-pong's half round trip within 1.1x of the bare futex floor.
//
// It starts synchmess-cuse --fuse-mount itself (a fresh mount under /var/tmp), must run as root
// (allow_other; mq_maxmsg above the unprivileged limit; max_storage_size), and stops the server
// with SIGTERM at the end (exit 1 unless it exits 0). Flags besides Google Benchmark's:
// --passes=N (default 3), --seconds=S, --rounds=R (barrier rounds, default 30), --server=PATH,
// --large-depth=N (4 KiB messages both queues hold, default 48; RLIMIT_MSGQUEUE, 800 KiB by
// default, allows about 96 beside the other queues) and --region-size=BYTES (the
// server's option: each group's ring), to measure a deeper 4 KiB queue with and without a ring
// that holds it (RESULTS.md, "The ring's size").
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <synchmess/client.h>

#if SYNCHMESS_HAVE_ICEORYX
extern "C" {  // the C binding's headers declare C functions without saying so to C++
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>
}
#endif

#include "core/support.hpp"
#include "server_process.hpp"

namespace synchmess::bench {
namespace {

constexpr const char* kGroupName = "process_bench";
constexpr const char* kPongGroupName = "process_bench_pong";
constexpr std::size_t kSmall = 64;
constexpr std::size_t kLarge = 4096;
constexpr std::size_t kMaxMessageSize = kLarge;
constexpr long kMaxCapacity = 2048;     // 64-byte messages either queue holds, at most
constexpr long kMaxLargeCapacity = 48;  // 4 KiB messages: what a 256 KiB ring holds of them
long g_capacity = kMaxCapacity;         // min(kMaxCapacity, fs.mqueue.msg_max)
long g_large_capacity = kMaxLargeCapacity;
long g_large_depth = kMaxLargeCapacity;  // --large-depth
std::string g_region_size;               // --region-size, passed to the server
int g_inherited_fd = -1;  // synchmess_inherited: opened by the benchmark before its fork()s

long capacity_for(std::size_t size) {
  return size == kLarge ? g_large_capacity : g_capacity;
}
constexpr int kMaxPairs = 8;
constexpr int kSleepers = 64;
constexpr auto kServerStartTimeout = std::chrono::seconds(10);
constexpr auto kServerStopTimeout = std::chrono::seconds(10);

double g_seconds = 1.0;
int g_rounds = 30;
std::string g_mount;
ServerProcess g_server;
int g_failed = 0;

int64_t now_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

long futex(std::atomic<uint32_t>* word, int op, uint32_t value) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, nullptr, nullptr, 0);
}

// Shared by the benchmark and its children (MAP_SHARED | MAP_ANONYMOUS before fork()).
struct alignas(64) Slot {
  std::atomic<uint64_t> count{0};
  std::atomic<int64_t> woke_at{0};
};
struct Control {
  std::atomic<uint32_t> phase{0};  // 0 set-up, 1 run, 2 stop (a futex word)
  std::atomic<uint32_t> ready{0};
  std::atomic<uint32_t> failed{0};
  std::atomic<uint32_t> woken{0};
  alignas(64) std::atomic<uint32_t> futex_word{0};
  std::atomic<uint32_t> futex_sleepers{0};
  alignas(64) std::atomic<uint32_t> ping_word{0};  // ping-pong over bare futexes
  alignas(64) std::atomic<uint32_t> pong_word{0};
  std::atomic<uint32_t> producers_done{0};  // iceoryx: the consumer drains until then
  std::atomic<int64_t> iox_median_ns{0};    // iceoryx ping-pong, measured by its pinger
  std::atomic<int64_t> iox_p99_ns{0};
  Slot slots[2 * kMaxPairs + kSleepers];
};
Control* g_control = nullptr;

void fail_benchmark(benchmark::State& state, const std::string& message) {
  ++g_failed;
  state.SkipWithError(message.c_str());
}

// ---- children ----

enum class Subject { kMq, kFast, kDevice, kFutex, kInherited };

const char* subject_name(Subject subject) {
  switch (subject) {
    case Subject::kMq:
      return "mq";
    case Subject::kFast:
      return "synchmess_fast";
    case Subject::kDevice:
      return "synchmess_device";
    case Subject::kFutex:
      return "futex";
    case Subject::kInherited:
      return "synchmess_inherited";
  }
  return "?";
}

// One queue per message size (a receive buffer must hold mq_msgsize); `owner`: the
// benchmark's pid.
std::string mq_name(std::size_t size, pid_t owner) {
  return "/synchmess_process_bench." + std::to_string(owner) + (size == kLarge ? ".4k" : "");
}

// A child's handle on the queue under test: its own open, or (synchmess_inherited) the
// benchmark's descriptor, inherited across fork().
struct Handle {
  Subject subject;
  std::size_t size = kSmall;
  int fd = -1;
  mqd_t queue = static_cast<mqd_t>(-1);
  bool open(bool consumer) {
    if (subject == Subject::kMq) {
      queue = mq_open(mq_name(size, getppid()).c_str(), O_RDWR | O_CLOEXEC);
      return queue != static_cast<mqd_t>(-1);
    }
    if (subject == Subject::kInherited) {
      fd = g_inherited_fd;  // its first call takes this process's own slot
      if (fd < 0 || synch_fast_path_active(fd) != 1) return false;
    } else if (subject == Subject::kDevice) {
      fd = ::open((g_mount + "/" + kGroupName).c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) return false;
    } else {
      fd = synch_open_group(kGroupName, O_RDWR);
      if (fd < 0 || synch_fast_path_active(fd) != 1) return false;
    }
    return !consumer || synch_set_recv_timeout(fd, 20) == 0;
  }
};

void wait_for_phase(uint32_t phase) {
  for (uint32_t seen = g_control->phase.load(); seen < phase; seen = g_control->phase.load())
    futex(&g_control->phase, FUTEX_WAIT, seen);
}

[[noreturn]] void run_pair_child(Subject subject, std::size_t size, bool consumer, int slot) {
  Handle handle{subject, size};
  if (!handle.open(consumer)) {
    g_control->failed.fetch_add(1);
    _exit(1);
  }
  char message[kMaxMessageSize];  // a consumer's buffer holds the largest (mq_msgsize)
  std::memset(message, 'm', sizeof message);
  const std::size_t receive_size = subject == Subject::kMq ? size : sizeof message;
  g_control->ready.fetch_add(1);
  wait_for_phase(1);
  uint64_t count = 0;
  const timespec patience{0, 20'000'000};
  while (g_control->phase.load(std::memory_order_relaxed) == 1) {
    if (subject == Subject::kMq) {
      timespec deadline{};
      clock_gettime(CLOCK_REALTIME, &deadline);
      deadline.tv_nsec += patience.tv_nsec;
      if (deadline.tv_nsec >= 1'000'000'000) {
        deadline.tv_nsec -= 1'000'000'000;
        ++deadline.tv_sec;
      }
      const ssize_t done =
          consumer ? mq_timedreceive(handle.queue, message, receive_size, nullptr, &deadline)
                   : mq_timedsend(handle.queue, message, size, 0, &deadline);
      if (done >= 0) ++count;
    } else if (consumer) {
      const ssize_t got = subject == Subject::kDevice
                              ? read(handle.fd, message, receive_size)
                              : synch_receive(handle.fd, message, receive_size);
      if (got > 0) ++count;
    } else {
      const ssize_t sent = subject == Subject::kDevice ? write(handle.fd, message, size)
                                                       : synch_send(handle.fd, message, size);
      if (sent > 0) {
        ++count;
      } else {
        sched_yield();  // the group is full: the consumers' turn
      }
    }
    g_control->slots[slot].count.store(count, std::memory_order_relaxed);
  }
  _exit(0);
}

[[noreturn]] void run_sleeper_child(Subject subject, int slot) {
  Handle handle{Subject::kFast};
  if (subject == Subject::kFast && !handle.open(false)) {
    g_control->failed.fetch_add(1);
    _exit(1);
  }
  g_control->ready.fetch_add(1);
  for (int round = 0; round < g_rounds; ++round) {
    if (subject == Subject::kFast) {
      if (synch_sleep_on_barrier(handle.fd) != 0) {
        g_control->failed.fetch_add(1);
        _exit(1);
      }
    } else {
      const uint32_t generation = g_control->futex_word.load();
      g_control->futex_sleepers.fetch_add(1);
      while (g_control->futex_word.load() == generation)
        futex(&g_control->futex_word, FUTEX_WAIT, generation);
    }
    g_control->slots[slot].woke_at.store(now_ns());
    g_control->woken.fetch_add(1);
  }
  _exit(0);
}

// The ping-pong's two ends: each waits for its turn on `in` and answers on `out`.
struct Bouncer {
  Subject subject;
  int in = -1;  // group descriptors (synchmess_fast)
  int out = -1;
  mqd_t in_queue = static_cast<mqd_t>(-1);
  mqd_t out_queue = static_cast<mqd_t>(-1);
  std::atomic<uint32_t>* in_word = nullptr;  // futex
  std::atomic<uint32_t>* out_word = nullptr;
  uint32_t seen = 0;

  bool open(bool pinger, pid_t owner) {
    if (subject == Subject::kFutex) {
      in_word = pinger ? &g_control->pong_word : &g_control->ping_word;
      out_word = pinger ? &g_control->ping_word : &g_control->pong_word;
      seen = in_word->load();
      return true;
    }
    if (subject == Subject::kMq) {
      const std::string ping = mq_name(kSmall, owner);
      const std::string pong = ping + ".pong";
      in_queue = mq_open((pinger ? pong : ping).c_str(), O_RDWR | O_CLOEXEC);
      out_queue = mq_open((pinger ? ping : pong).c_str(), O_RDWR | O_CLOEXEC);
      return in_queue != static_cast<mqd_t>(-1) && out_queue != static_cast<mqd_t>(-1);
    }
    in = synch_open_group(pinger ? kPongGroupName : kGroupName, O_RDWR);
    out = synch_open_group(pinger ? kGroupName : kPongGroupName, O_RDWR);
    return in >= 0 && out >= 0 && synch_fast_path_active(in) == 1 &&
           synch_fast_path_active(out) == 1 && synch_set_recv_timeout(in, 1000) == 0;
  }
  bool send(const char* message) {
    if (subject == Subject::kFutex) {
      out_word->fetch_add(1);
      futex(out_word, FUTEX_WAKE, 1);
      return true;
    }
    if (subject == Subject::kMq) return mq_send(out_queue, message, kSmall, 0) == 0;
    return synch_send(out, message, kSmall) == static_cast<ssize_t>(kSmall);
  }
  bool receive(char* message) {
    if (subject == Subject::kFutex) {
      while (in_word->load() == seen)
        futex(in_word, FUTEX_WAIT, seen);
      ++seen;
      return true;
    }
    if (subject == Subject::kMq)
      return mq_receive(in_queue, message, kSmall, nullptr) == static_cast<ssize_t>(kSmall);
    return synch_receive(in, message, kSmall) == static_cast<ssize_t>(kSmall);
  }
  void close_all() {
    if (in >= 0) synch_close_group(in);
    if (out >= 0) synch_close_group(out);
    if (in_queue != static_cast<mqd_t>(-1)) mq_close(in_queue);
    if (out_queue != static_cast<mqd_t>(-1)) mq_close(out_queue);
  }
};

int pingpong_rounds() {
  return g_rounds * 100;
}

[[noreturn]] void run_ponger_child(Subject subject) {
  Bouncer bouncer{subject};
  if (!bouncer.open(false, getppid())) {
    g_control->failed.fetch_add(1);
    _exit(1);
  }
  g_control->ready.fetch_add(1);
  char message[kSmall];
  std::memset(message, 'p', sizeof message);
  for (int round = 0; round < pingpong_rounds() + 1; ++round) {  // one warm-up
    if (!bouncer.receive(message) || !bouncer.send(message)) {
      g_control->failed.fetch_add(1);
      _exit(1);
    }
  }
  _exit(0);
}

// ---- the benchmark's side ----

class Children {
 public:
  ~Children() { reap(); }
  bool spawn(const std::function<void()>& body) {
    const pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) body();  // never returns
    pids_.push_back(pid);
    return true;
  }
  // Waits for every child (SIGKILL after 10 s); true when all exited 0.
  bool reap() {
    bool clean = true;
    const int64_t give_up = now_ns() + 10'000'000'000;
    for (const pid_t pid : pids_) {
      int status = 0;
      while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_ns() > give_up) {
          kill(pid, SIGKILL);
          waitpid(pid, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      clean = clean && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    pids_.clear();
    return clean;
  }

 private:
  std::vector<pid_t> pids_;
};

bool wait_until(const std::function<bool()>& done, int64_t timeout_ns) {
  const int64_t give_up = now_ns() + timeout_ns;
  while (!done()) {
    if (now_ns() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

void reset_control() {
  g_control->phase.store(0);
  g_control->ready.store(0);
  g_control->failed.store(0);
  g_control->woken.store(0);
  g_control->futex_sleepers.store(0);
  g_control->producers_done.store(0);
  for (Slot& slot : g_control->slots) {
    slot.count.store(0);
    slot.woke_at.store(0);
  }
}

// Empties the group (or the queue) between benchmarks.
void drain(Subject subject, std::size_t size) {
  char buffer[kMaxMessageSize];
  if (subject == Subject::kMq) {
    const mqd_t queue = mq_open(mq_name(size, getpid()).c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (queue == static_cast<mqd_t>(-1)) return;
    while (mq_receive(queue, buffer, sizeof buffer, nullptr) >= 0) {
    }
    mq_close(queue);
    return;
  }
  const int fd = synch_open_group(kGroupName, O_RDWR);
  if (fd < 0) return;
  while (synch_receive(fd, buffer, sizeof buffer) > 0) {
  }
  synch_close_group(fd);
}

std::string key_of_pairs(int pairs, Subject subject, std::size_t size = kSmall) {
  return "process/pairs" + std::to_string(pairs) + (size == kLarge ? "/4KiB/" : "/64B/") +
         subject_name(subject);
}

// Runs `pairs` producer and `pairs` consumer children (`child(consumer, slot)`, which never
// returns) for the window: the messages the consumers took per second, or nothing (the
// benchmark failed) when a child could not start or failed.
std::optional<double> measure_pairs(benchmark::State& state, int pairs,
                                    const std::function<void(bool, int)>& child) {
  Children children;
  for (int i = 0; i < 2 * pairs; ++i) {
    const bool consumer = i >= pairs;
    if (!children.spawn([&, consumer, i] { child(consumer, i); })) {
      fail_benchmark(state, std::string("fork: ") + std::strerror(errno));
      return std::nullopt;
    }
  }
  const auto everyone_ready = [&] {
    return g_control->ready.load() + g_control->failed.load() == static_cast<uint32_t>(2 * pairs);
  };
  if (!wait_until(everyone_ready, 10'000'000'000) || g_control->failed.load() != 0) {
    g_control->phase.store(2);
    futex(&g_control->phase, FUTEX_WAKE, INT_MAX);
    fail_benchmark(state, "a child could not open the queue (no fast path offered?)");
    return std::nullopt;
  }
  const auto taken = [&] {
    uint64_t total = 0;
    for (int i = pairs; i < 2 * pairs; ++i)
      total += g_control->slots[i].count.load();
    return total;
  };
  g_control->phase.store(1);
  futex(&g_control->phase, FUTEX_WAKE, INT_MAX);
  // The first tenth warms up (every process running, the queue filling); then the window.
  std::this_thread::sleep_for(std::chrono::duration<double>(g_seconds / 10));
  const uint64_t first = taken();
  const int64_t start = now_ns();
  std::this_thread::sleep_for(std::chrono::duration<double>(g_seconds));
  const uint64_t last = taken();
  const int64_t end = now_ns();
  g_control->phase.store(2);
  futex(&g_control->phase, FUTEX_WAKE, INT_MAX);
  if (!children.reap()) {
    fail_benchmark(state, "a child failed");
    return std::nullopt;
  }
  const double elapsed = static_cast<double>(end - start) * 1e-9;
  state.SetIterationTime(elapsed);
  return static_cast<double>(last - first) / elapsed;
}

void run_pairs(benchmark::State& state, int pairs, Subject subject, std::size_t size) {
  for (auto _ : state) {
    reset_control();
    // The group holds as many messages of this size as the mq does.
    const synch_params params{size, static_cast<uint64_t>(capacity_for(size)) * size};
    if (subject != Subject::kMq && synch_set_params(&params) != 0) {
      fail_benchmark(state, std::string("synch_set_params: ") + std::strerror(errno));
      return;
    }
    if (subject == Subject::kInherited) {
      g_inherited_fd = synch_open_group(kGroupName, O_RDWR);
      if (g_inherited_fd < 0 || synch_fast_path_active(g_inherited_fd) != 1) {
        fail_benchmark(state, "no fast path for the descriptor to inherit");
        return;
      }
    }
    const auto rate = measure_pairs(state, pairs, [&](bool consumer, int slot) {
      run_pair_child(subject, size, consumer, slot);
    });
    if (g_inherited_fd >= 0) {
      synch_close_group(g_inherited_fd);
      g_inherited_fd = -1;
    }
    drain(subject, size);
    if (!rate) return;
    state.counters["msg/s"] = benchmark::Counter(*rate);
    record_and_compare(state, key_of_pairs(pairs, subject, size), *rate,
                       key_of_pairs(pairs, Subject::kMq, size), Figure::kRate, "base_msg/s");
  }
}

std::string key_of_pingpong(Subject subject) {
  return std::string("process/pingpong/64B/") + subject_name(subject);
}

// A ping-pong's half round trips, median and p99 (seconds).
struct Spread {
  double median = 0;
  double p99 = 0;
};

Spread spread_of(std::vector<double> halves) {
  std::sort(halves.begin(), halves.end());
  return {halves[halves.size() / 2], halves[halves.size() * 99 / 100]};
}

// The iteration's time is the median; both figures go to the summary, against the futex floor.
void record_pingpong(benchmark::State& state, const std::string& key, Spread spread) {
  state.SetIterationTime(spread.median);
  state.counters["p99_us"] = benchmark::Counter(spread.p99 * 1e6);
  record_figure(key + "/p99", spread.p99);
  record_and_compare(state, key, spread.median, key_of_pingpong(Subject::kFutex), Figure::kTime,
                     "base_us");
}

// The benchmark process pings (it forks the ponger); round trips timed one by one.
void run_pingpong(benchmark::State& state, Subject subject) {
  for (auto _ : state) {
    reset_control();
    g_control->ping_word.store(0);
    g_control->pong_word.store(0);
    Bouncer pinger{subject};
    Children children;
    if (!children.spawn([=] { run_ponger_child(subject); })) {
      fail_benchmark(state, std::string("fork: ") + std::strerror(errno));
      return;
    }
    const auto ponger_ready = [] {
      return g_control->ready.load() + g_control->failed.load() == 1;
    };
    if (!pinger.open(true, getpid()) || !wait_until(ponger_ready, 10'000'000'000) ||
        g_control->failed.load() != 0) {
      pinger.close_all();
      fail_benchmark(state, "an end could not open its queues (no fast path offered?)");
      return;
    }
    char message[kSmall];
    std::memset(message, 'p', sizeof message);
    std::vector<double> halves;
    halves.reserve(static_cast<std::size_t>(pingpong_rounds()));
    bool ok = true;
    for (int round = 0; round < pingpong_rounds() + 1 && ok; ++round) {
      const int64_t start = now_ns();
      ok = pinger.send(message) && pinger.receive(message);
      if (round > 0) halves.push_back(static_cast<double>(now_ns() - start) * 0.5e-9);
    }
    const bool clean = children.reap();
    pinger.close_all();
    if (!ok || !clean || halves.empty()) {
      fail_benchmark(state, "a round trip failed");
      return;
    }
    record_pingpong(state, key_of_pingpong(subject), spread_of(std::move(halves)));
  }
}

std::string key_of_barrier(Subject subject) {
  return std::string("process/barrier64/") + subject_name(subject);
}

void run_barrier(benchmark::State& state, Subject subject) {
  for (auto _ : state) {
    reset_control();
    const int fd = subject == Subject::kFast ? synch_open_group(kGroupName, O_RDWR) : -1;
    if (subject == Subject::kFast && (fd < 0 || synch_fast_path_active(fd) != 1)) {
      fail_benchmark(state, "no fast path for the waker");
      return;
    }
    Children children;
    for (int i = 0; i < kSleepers; ++i) {
      if (!children.spawn([=] { run_sleeper_child(subject, i); })) {
        fail_benchmark(state, std::string("fork: ") + std::strerror(errno));
        return;
      }
    }
    std::vector<double> latencies;
    bool ok = true;
    for (int round = 0; round < g_rounds && ok; ++round) {
      // All 64 asleep (counted), then a moment so that each is in the kernel's wait.
      const auto asleep = [&] {
        if (g_control->failed.load() != 0) return true;
        if (subject == Subject::kFutex) {
          return g_control->futex_sleepers.load() == static_cast<uint32_t>(kSleepers);
        }
        synch_group_stats stats{};
        return synch_get_stats(fd, &stats) == 0 && stats.sleepers == kSleepers;
      };
      ok = wait_until(asleep, 10'000'000'000) && g_control->failed.load() == 0;
      if (!ok) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      g_control->woken.store(0);
      g_control->futex_sleepers.store(0);
      const int64_t start = now_ns();
      if (subject == Subject::kFutex) {
        g_control->futex_word.fetch_add(1);
        futex(&g_control->futex_word, FUTEX_WAKE, INT_MAX);
      } else if (synch_awake_barrier(fd) != kSleepers) {
        ok = false;
        break;
      }
      ok = wait_until([&] { return g_control->woken.load() == kSleepers; }, 10'000'000'000);
      int64_t last = 0;
      for (int i = 0; i < kSleepers; ++i)
        last = std::max(last, g_control->slots[i].woke_at.load());
      latencies.push_back(static_cast<double>(last - start) * 1e-9);
    }
    const bool clean = children.reap();
    if (fd >= 0) synch_close_group(fd);
    if (!ok || !clean || latencies.empty()) {
      fail_benchmark(state, "a round did not complete (a sleeper failed or was not woken)");
      return;
    }
    std::sort(latencies.begin(), latencies.end());
    const double median = latencies[latencies.size() / 2];
    state.SetIterationTime(median);
    state.counters["p90_us"] = benchmark::Counter(latencies[latencies.size() * 9 / 10] * 1e6);
    record_and_compare(state, key_of_barrier(subject), median, key_of_barrier(Subject::kFutex),
                       Figure::kTime, "base_us");
  }
}

#if SYNCHMESS_HAVE_ICEORYX
// ---- Eclipse iceoryx 2.0 (Debian's iceoryx, its C binding), side by side ----
//
// Its daemon, iox-roudi, is started by set_up() and stopped at the end. Each child registers a
// runtime of its own (a name per pid), then publishes or subscribes on one service. Publishers
// block when the subscriber's queue is full (WAIT_FOR_CONSUMER with BLOCK_PRODUCER), the queue
// as deep as iceoryx allows (256) or the mq when shallower. Variants: copy (the producer copies
// its message into a loaned chunk, the consumer copies it out, as synch_send / synch_receive
// do), loan (zero-copy: the producer writes one byte of the chunk, the consumer reads one), and
// poll (copy, the consumer polls take_chunk instead of waiting in a WaitSet).

enum class Iox { kCopy, kLoan, kPoll };

const char* iox_name(Iox variant) {
  switch (variant) {
    case Iox::kCopy:
      return "iceoryx_copy";
    case Iox::kLoan:
      return "iceoryx_loan";
    case Iox::kPoll:
      return "iceoryx_poll";
  }
  return "?";
}

pid_t g_roudi = -1;
constexpr uint64_t kIoxMaxQueue = 256;  // iceoryx 2.0's MAX_SUBSCRIBER_QUEUE_CAPACITY

void iox_register(const char* role) {
  const std::string name = std::string("synchmess_bench_") + role + "_" + std::to_string(getpid());
  iox_runtime_init(name.c_str());
}

std::string key_of_iox_pairs(Iox variant, std::size_t size) {
  return std::string("process/pairs1/") + (size == kLarge ? "4KiB/" : "64B/") + iox_name(variant);
}

[[noreturn]] void run_iox_pair_child(Iox variant, std::size_t size, bool consumer, int slot) {
  iox_register(consumer ? "sub" : "pub");
  const char* const event = size == kLarge ? "4KiB" : "64B";
  char message[kMaxMessageSize];
  std::memset(message, 'i', sizeof message);
  uint64_t count = 0;
  if (consumer) {
    iox_sub_options_t options;
    iox_sub_options_init(&options);
    options.queueCapacity = std::min<uint64_t>(kIoxMaxQueue, capacity_for(size));
    options.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
    iox_sub_storage_t storage;
    iox_sub_t subscriber = iox_sub_init(&storage, "synchmess_bench", "pairs", event, &options);
    iox_ws_storage_t wait_storage;
    iox_ws_t wait_set = iox_ws_init(&wait_storage);
    iox_ws_attach_subscriber_state(wait_set, subscriber, SubscriberState_HAS_DATA, 0, nullptr);
    while (iox_sub_get_subscription_state(subscriber) != SubscribeState_SUBSCRIBED)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    g_control->ready.fetch_add(1);
    wait_for_phase(1);
    iox_notification_info_t notifications[4];
    uint64_t missed = 0;
    // After the window: drained until the producer has gone (it may be blocked on a full queue).
    while (g_control->phase.load(std::memory_order_relaxed) == 1 ||
           g_control->producers_done.load() == 0) {
      if (variant != Iox::kPoll) {
        const timespec slice{0, 20'000'000};
        iox_ws_timed_wait(wait_set, slice, notifications, 4, &missed);
      }
      const void* chunk = nullptr;
      bool took = false;
      while (iox_sub_take_chunk(subscriber, &chunk) == ChunkReceiveResult_SUCCESS) {
        if (variant == Iox::kLoan) {
          message[0] = *static_cast<const char*>(chunk);
        } else {
          std::memcpy(message, chunk, size);
        }
        iox_sub_release_chunk(subscriber, chunk);
        ++count;
        took = true;
      }
      if (!took && variant == Iox::kPoll) sched_yield();
      g_control->slots[slot].count.store(count, std::memory_order_relaxed);
    }
    iox_ws_deinit(wait_set);
    iox_sub_deinit(subscriber);
  } else {
    iox_pub_options_t options;
    iox_pub_options_init(&options);
    options.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
    iox_pub_storage_t storage;
    iox_pub_t publisher = iox_pub_init(&storage, "synchmess_bench", "pairs", event, &options);
    while (!iox_pub_has_subscribers(publisher))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    g_control->ready.fetch_add(1);
    wait_for_phase(1);
    while (g_control->phase.load(std::memory_order_relaxed) == 1) {
      void* chunk = nullptr;
      if (iox_pub_loan_chunk(publisher, &chunk, static_cast<uint32_t>(size)) !=
          AllocationResult_SUCCESS) {
        sched_yield();  // every chunk in flight: the consumer's turn
        continue;
      }
      if (variant == Iox::kLoan) {
        *static_cast<char*>(chunk) = static_cast<char>(count);
      } else {
        std::memcpy(chunk, message, size);
      }
      iox_pub_publish_chunk(publisher, chunk);
      g_control->slots[slot].count.store(++count, std::memory_order_relaxed);
    }
    g_control->producers_done.fetch_add(1);
    iox_pub_deinit(publisher);
  }
  iox_runtime_shutdown();
  _exit(0);
}

void run_iox_pairs(benchmark::State& state, Iox variant, std::size_t size) {
  for (auto _ : state) {
    reset_control();
    const auto rate = measure_pairs(state, 1, [&](bool consumer, int slot) {
      run_iox_pair_child(variant, size, consumer, slot);
    });
    if (!rate) return;
    state.counters["msg/s"] = benchmark::Counter(*rate);
    record_and_compare(state, key_of_iox_pairs(variant, size), *rate,
                       key_of_pairs(1, Subject::kMq, size), Figure::kRate, "base_msg/s");
  }
}

// Ping-pong: two services, each end waits in a WaitSet for the other's chunk (copy variant).
[[noreturn]] void run_iox_bouncer(bool pinger) {
  iox_register(pinger ? "ping" : "pong");
  iox_pub_options_t publisher_options;
  iox_pub_options_init(&publisher_options);
  publisher_options.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
  iox_sub_options_t subscriber_options;
  iox_sub_options_init(&subscriber_options);
  subscriber_options.queueCapacity = 8;
  subscriber_options.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
  iox_pub_storage_t publisher_storage;
  iox_sub_storage_t subscriber_storage;
  iox_pub_t publisher = iox_pub_init(&publisher_storage, "synchmess_bench", "pingpong",
                                     pinger ? "ping" : "pong", &publisher_options);
  iox_sub_t subscriber = iox_sub_init(&subscriber_storage, "synchmess_bench", "pingpong",
                                      pinger ? "pong" : "ping", &subscriber_options);
  iox_ws_storage_t wait_storage;
  iox_ws_t wait_set = iox_ws_init(&wait_storage);
  iox_ws_attach_subscriber_state(wait_set, subscriber, SubscriberState_HAS_DATA, 0, nullptr);
  while (!iox_pub_has_subscribers(publisher) ||
         iox_sub_get_subscription_state(subscriber) != SubscribeState_SUBSCRIBED) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  g_control->ready.fetch_add(1);
  wait_for_phase(1);
  char message[kSmall];
  std::memset(message, 'p', sizeof message);
  iox_notification_info_t notifications[4];
  uint64_t missed = 0;
  const auto send = [&] {
    void* chunk = nullptr;
    while (iox_pub_loan_chunk(publisher, &chunk, kSmall) != AllocationResult_SUCCESS)
      sched_yield();
    std::memcpy(chunk, message, kSmall);
    iox_pub_publish_chunk(publisher, chunk);
  };
  const auto receive = [&] {
    const void* chunk = nullptr;
    while (iox_sub_take_chunk(subscriber, &chunk) != ChunkReceiveResult_SUCCESS)
      iox_ws_wait(wait_set, notifications, 4, &missed);
    std::memcpy(message, chunk, kSmall);
    iox_sub_release_chunk(subscriber, chunk);
  };
  std::vector<double> halves;
  for (int round = 0; round < pingpong_rounds() + 1; ++round) {  // one warm-up
    if (pinger) {
      const int64_t start = now_ns();
      send();
      receive();
      if (round > 0) halves.push_back(static_cast<double>(now_ns() - start) * 0.5e-9);
    } else {
      receive();
      send();
    }
  }
  if (pinger) {
    const Spread spread = spread_of(std::move(halves));
    g_control->iox_median_ns.store(static_cast<int64_t>(spread.median * 1e9));
    g_control->iox_p99_ns.store(static_cast<int64_t>(spread.p99 * 1e9));
  }
  iox_ws_deinit(wait_set);
  iox_sub_deinit(subscriber);
  iox_pub_deinit(publisher);
  iox_runtime_shutdown();
  _exit(0);
}

std::string key_of_iox_pingpong() {
  return "process/pingpong/64B/iceoryx_copy";
}

void run_iox_pingpong(benchmark::State& state) {
  for (auto _ : state) {
    reset_control();
    g_control->iox_median_ns.store(0);
    Children children;
    for (const bool pinger : {false, true}) {
      if (!children.spawn([=] { run_iox_bouncer(pinger); })) {
        fail_benchmark(state, std::string("fork: ") + std::strerror(errno));
        return;
      }
    }
    if (!wait_until([] { return g_control->ready.load() == 2; }, 10'000'000'000)) {
      fail_benchmark(state, "the iceoryx ends did not find each other");
      return;
    }
    g_control->phase.store(1);
    futex(&g_control->phase, FUTEX_WAKE, INT_MAX);
    if (!children.reap() || g_control->iox_median_ns.load() == 0) {
      fail_benchmark(state, "an iceoryx end failed");
      return;
    }
    record_pingpong(state, key_of_iox_pingpong(),
                    {static_cast<double>(g_control->iox_median_ns.load()) * 1e-9,
                     static_cast<double>(g_control->iox_p99_ns.load()) * 1e-9});
  }
}

void register_iceoryx_benchmarks() {
  for (const std::size_t size : {kSmall, kLarge}) {
    for (const Iox variant : {Iox::kCopy, Iox::kLoan, Iox::kPoll}) {
      benchmark::RegisterBenchmark(key_of_iox_pairs(variant, size).c_str(), run_iox_pairs, variant,
                                   size)
          ->Iterations(1)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RegisterBenchmark(key_of_iox_pingpong().c_str(), run_iox_pingpong)
      ->Iterations(1)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  const char* const kSection =
      "against Eclipse iceoryx 2.0, 1 pair (blocking publisher; copy, zero-copy loan, polling)";
  for (const std::size_t size : {kSmall, kLarge}) {
    const std::string bytes = size == kLarge ? "4 KiB" : "64 B";
    for (const Iox variant : {Iox::kCopy, Iox::kLoan, Iox::kPoll}) {
      add_comparison(kSection, std::string("synchmess_fast vs ") + iox_name(variant) + ", " + bytes,
                     key_of_pairs(1, Subject::kFast, size), key_of_iox_pairs(variant, size),
                     Figure::kRate, "msg/s", 2.0, ">= 2x");
    }
  }
  add_comparison(kSection, "synchmess_fast vs iceoryx_copy, ping-pong half round trip, median",
                 key_of_pingpong(Subject::kFast), key_of_iox_pingpong(), Figure::kTime, "", 1.0,
                 ">= 1x (at most iceoryx's)");
  add_comparison(kSection, "synchmess_fast vs iceoryx_copy, ping-pong half round trip, p99",
                 key_of_pingpong(Subject::kFast) + "/p99", key_of_iox_pingpong() + "/p99",
                 Figure::kTime, "");
}

// iox-roudi, with its output in a file beside the server's log.
bool start_roudi(const std::string& log_path) {
  g_roudi = fork();
  if (g_roudi < 0) return false;
  if (g_roudi == 0) {
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log >= 0) {
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
    }
    execlp("iox-roudi", "iox-roudi", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // no readiness signal: its start
  int status = 0;
  return waitpid(g_roudi, &status, WNOHANG) == 0;
}

// Its exit status is reported, not judged: iceoryx 2.0's RouDi aborts at SIGTERM when
// runtimes that shut down cleanly are still in its books (POSH__ROUDI_PROCESS_SHUTDOWN_FAILED).
void stop_roudi(std::FILE* report_to) {
  if (g_roudi <= 0) return;
  kill(g_roudi, SIGTERM);
  int status = 0;
  const int64_t give_up = now_ns() + 10'000'000'000;
  while (waitpid(g_roudi, &status, WNOHANG) == 0) {
    if (now_ns() > give_up) {
      kill(g_roudi, SIGKILL);
      waitpid(g_roudi, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::fprintf(report_to, "iox-roudi: %s %d\n", WIFEXITED(status) ? "exited" : "killed by signal",
               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  g_roudi = -1;
}
#endif  // SYNCHMESS_HAVE_ICEORYX

void register_pairs(int pairs, Subject subject, std::size_t size) {
  benchmark::RegisterBenchmark(key_of_pairs(pairs, subject, size).c_str(), run_pairs, pairs,
                               subject, size)
      ->Iterations(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

void register_benchmarks() {
  for (const int pairs : {1, kMaxPairs}) {
    for (const Subject subject : {Subject::kMq, Subject::kFast})
      register_pairs(pairs, subject, kSmall);
  }
  register_pairs(1, Subject::kInherited, kSmall);
  register_pairs(1, Subject::kDevice, kSmall);
  for (const Subject subject : {Subject::kMq, Subject::kFast, Subject::kInherited})
    register_pairs(1, subject, kLarge);
  for (const Subject subject : {Subject::kFutex, Subject::kMq, Subject::kFast}) {
    benchmark::RegisterBenchmark(key_of_pingpong(subject).c_str(), run_pingpong, subject)
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  for (const Subject subject : {Subject::kFutex, Subject::kFast}) {
    benchmark::RegisterBenchmark(key_of_barrier(subject).c_str(), run_barrier, subject)
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  const char* const kPairs = "producer processes -> consumer processes, 64 B, one queue";
  add_comparison(kPairs, "synchmess_fast vs mq, 1 pair", key_of_pairs(1, Subject::kFast),
                 key_of_pairs(1, Subject::kMq), Figure::kRate, "msg/s", 2.0, ">= 2x");
  add_comparison(kPairs, "synchmess_fast vs mq, 8 pairs on one group",
                 key_of_pairs(kMaxPairs, Subject::kFast), key_of_pairs(kMaxPairs, Subject::kMq),
                 Figure::kRate, "msg/s", 1.0, ">= 1x");
  add_comparison(kPairs, "synchmess_device vs mq, 1 pair (the device path)",
                 key_of_pairs(1, Subject::kDevice), key_of_pairs(1, Subject::kMq), Figure::kRate,
                 "msg/s");
  const char* const kInherited =
      "one descriptor opened before fork() vs one opened in each process, 1 pair";
  for (const std::size_t size : {kSmall, kLarge}) {
    const std::string bytes = size == kLarge ? "4 KiB" : "64 B";
    if (size == kLarge) {
      add_comparison(kInherited, "synchmess_fast vs mq, " + bytes,
                     key_of_pairs(1, Subject::kFast, size), key_of_pairs(1, Subject::kMq, size),
                     Figure::kRate, "msg/s", 2.0, ">= 2x");
    }
    add_comparison(kInherited, "synchmess_inherited vs mq, " + bytes,
                   key_of_pairs(1, Subject::kInherited, size), key_of_pairs(1, Subject::kMq, size),
                   Figure::kRate, "msg/s", 2.0, ">= 2x");
    add_comparison(kInherited, "synchmess_inherited vs synchmess_fast, " + bytes,
                   key_of_pairs(1, Subject::kInherited, size),
                   key_of_pairs(1, Subject::kFast, size), Figure::kRate, "msg/s", 0.9,
                   ">= 0.9x (within 10 %)");
  }
  const char* const kPingPong =
      "ping-pong between two processes, 64 B, blocking receives: the half round trip";
  for (const Subject subject : {Subject::kFast, Subject::kMq}) {
    const std::string name = subject_name(subject);
    const bool fast = subject == Subject::kFast;
    add_comparison(kPingPong, name + " vs bare futex ping-pong, median", key_of_pingpong(subject),
                   key_of_pingpong(Subject::kFutex), Figure::kTime, "",
                   fast ? std::optional<double>(1 / 1.1) : std::nullopt,
                   fast ? "within 1.1x (speedup >= 0.91x)" : "");
    add_comparison(kPingPong, name + " vs bare futex ping-pong, p99",
                   key_of_pingpong(subject) + "/p99", key_of_pingpong(Subject::kFutex) + "/p99",
                   Figure::kTime, "");
  }
  add_comparison(kPingPong, "synchmess_fast vs mq, median", key_of_pingpong(Subject::kFast),
                 key_of_pingpong(Subject::kMq), Figure::kTime, "");
#if SYNCHMESS_HAVE_ICEORYX
  register_iceoryx_benchmarks();
#endif
  const char* const kBarrier = "barrier: awake -> the last of 64 sleeping processes running";
  add_comparison(kBarrier, "synchmess_fast vs bare shared futex, median round",
                 key_of_barrier(Subject::kFast), key_of_barrier(Subject::kFutex), Figure::kTime, "",
                 1 / 1.2, "within 1.2x (speedup >= 0.83x)");
}

// ---- set-up ----

bool fail(const std::string& message) {
  std::fprintf(stderr, "synchmess_process_bench: %s\n", message.c_str());
  return false;
}

std::string g_base;

bool set_up(const std::string& server_path) {
  char base_template[] = "/var/tmp/synchmess_process_bench.XXXXXX";
  if (mkdtemp(base_template) == nullptr) return fail(std::string("mkdtemp: ") + strerror(errno));
  g_base = base_template;
  g_mount = g_base + "/synchmess";
  if (mkdir(g_mount.c_str(), 0755) != 0) return fail("mkdir " + g_mount);
  std::string error;
  std::vector<std::string> server_command{server_path, "--fuse-mount=" + g_mount};
  if (!g_region_size.empty()) server_command.push_back("--region-size=" + g_region_size);
  if (!g_server.start(server_command, g_base + "/synchmess-cuse.log", error)) {
    return fail("cannot start " + server_path + ": " + error);
  }
  if (!g_server.wait_for_file(g_mount + "/synchmess", kServerStartTimeout, error))
    return fail(error + "\n" + g_server.log_text());
  setenv(SYNCH_DIR_ENV, g_mount.c_str(), 1);
  for (const char* const group : {kGroupName, kPongGroupName}) {
    if (synch_install_group(group, nullptr, 0, nullptr) != 0)
      return fail(std::string("synch_install_group: ") + strerror(errno));
  }
  if (std::FILE* limit = std::fopen("/proc/sys/fs/mqueue/msg_max", "r")) {
    long msg_max = 0;
    if (std::fscanf(limit, "%ld", &msg_max) == 1 && msg_max > 0)
      g_capacity = std::min(kMaxCapacity, msg_max);
    std::fclose(limit);
  }
  g_large_capacity = std::min(g_large_depth, g_capacity);
  const synch_params params{kSmall, static_cast<uint64_t>(g_capacity) * kSmall};
  if (synch_set_params(&params) != 0)
    return fail(std::string("synch_set_params: ") + strerror(errno));
  const std::string large_queue = mq_name(kLarge, getpid());
  for (const std::string& name :
       {mq_name(kSmall, getpid()), large_queue, mq_name(kSmall, getpid()) + ".pong"}) {
    const std::size_t size = name == large_queue ? kLarge : kSmall;
    mq_attr attributes{};
    // The ping-pong's reply queue holds one message at a time: a few places keep the three
    // queues within RLIMIT_MSGQUEUE (800 KiB by default).
    const bool pong = name.ends_with(".pong");
    attributes.mq_maxmsg = pong ? std::min(8L, g_capacity) : capacity_for(size);
    attributes.mq_msgsize = static_cast<long>(size);
    const mqd_t queue =
        mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attributes);
    if (queue == static_cast<mqd_t>(-1))
      return fail("mq_open " + name + " (mq_maxmsg " + std::to_string(capacity_for(size)) +
                  "): " + strerror(errno));
    mq_close(queue);  // the children open it by name; unlinked at the end
  }
  void* shared =
      mmap(nullptr, sizeof(Control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return fail(std::string("mmap: ") + strerror(errno));
  g_control = new (shared) Control();
#if SYNCHMESS_HAVE_ICEORYX
  if (!start_roudi(g_base + "/iox-roudi.log"))
    return fail("iox-roudi (package iceoryx) did not start: see " + g_base + "/iox-roudi.log");
#endif
  return true;
}

bool tear_down(std::FILE* report_to) {
#if SYNCHMESS_HAVE_ICEORYX
  stop_roudi(report_to);
#endif
  for (const std::size_t size : {kSmall, kLarge})
    mq_unlink(mq_name(size, getpid()).c_str());
  mq_unlink((mq_name(kSmall, getpid()) + ".pong").c_str());
  bool ok = true;
  if (g_server.running()) {
    std::string report;
    ok = g_server.stop(kServerStopTimeout, report);
    std::fprintf(report_to, "%s: %s\n", ok ? "stopped" : "FAILED", report.c_str());
    if (!ok) std::fprintf(stderr, "%s", g_server.log_text().c_str());
  }
  if (!g_mount.empty()) {
    if (is_mount_point(g_mount)) {
      lazy_unmount(g_mount);
      ok = false;
    }
    rmdir(g_mount.c_str());
  }
  if (!g_base.empty()) {
    unlink((g_base + "/synchmess-cuse.log").c_str());
    unlink((g_base + "/iox-roudi.log").c_str());
    rmdir(g_base.c_str());
  }
  return ok;
}

}  // namespace
}  // namespace synchmess::bench

int main(int argc, char** argv) {
  using namespace synchmess::bench;
  std::string server_flag;
  auto line = take_command_line(argc, argv, [&](char* arg) {
    if (std::strncmp(arg, "--server=", 9) == 0) {
      server_flag = arg + 9;
    } else if (std::strncmp(arg, "--seconds=", 10) == 0) {
      g_seconds = std::atof(arg + 10);
    } else if (std::strncmp(arg, "--large-depth=", 14) == 0) {
      g_large_depth = std::atol(arg + 14);
    } else if (std::strncmp(arg, "--region-size=", 14) == 0) {
      g_region_size = arg + 14;
    } else if (std::strncmp(arg, "--rounds=", 9) == 0) {
      g_rounds = std::atoi(arg + 9);
    } else {
      return false;
    }
    return true;
  });
  if (!line) return 1;
  if (g_seconds <= 0 || g_rounds < 1 || g_large_depth < 1) {
    std::fprintf(
        stderr,
        "synchmess_process_bench: --seconds must be > 0, --rounds and --large-depth >= 1\n");
    return 1;
  }
  if (const auto done = start_benchmarks(*line, register_benchmarks)) return *done;
  if (geteuid() != 0) {
    std::fprintf(stderr,
                 "synchmess_process_bench must run as root: it mounts synchmess with allow_other, "
                 "sets max_storage_size and opens a POSIX queue of %ld messages (try: sudo %s)\n",
                 kMaxCapacity, argv[0]);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  const std::string server_path = pick_path(server_flag, "SYNCHMESS_CUSE", SYNCHMESS_CUSE_PATH);
  std::FILE* const summary = line->console ? stdout : stderr;
  if (!set_up(server_path)) {
    tear_down(stderr);
    return 1;
  }
  benchmark::AddCustomContext("machine", std::to_string(std::thread::hardware_concurrency()) +
                                             " CPUs online; compare ratios within one run");
  benchmark::AddCustomContext("queue capacity",
                              std::to_string(g_capacity) + " messages of 64 B, " +
                                  std::to_string(g_large_capacity) +
                                  " of 4 KiB, both queues (fs.mqueue.msg_max caps it)");
  const std::string load_at_start = load_average();
  run_passes(summary, line->passes);
  print_summary(summary, line->passes, load_at_start, "synchmess_process_bench");
  std::fflush(summary);
  const bool server_ok = tear_down(summary);
  benchmark::Shutdown();
  return server_ok && g_failed == 0 ? 0 : 1;
}
