// synchmess_kernel_bench: one message sent and taken back through the kernel, by one client thread,
// with synchmess served over FUSE against three baselines measured in the same run.
//
// Every benchmark is named kernel/<placement>/<size>/<subject>; one iteration is one pair: a send
// of <size> bytes followed by a receive of them, on the benchmark's (main) thread:
//   subject    send                            receive                         what serves it
//   pipe       write(pipe[1], msg, N)          read(pipe[0], buf, N)           the kernel (pipe)
//   mq         mq_send(q, msg, N, 0)           mq_receive(q, buf, N, NULL)     the kernel (mqueue)
//   echo_fuse  write(fd, msg, N)               read(fd, buf, N)                synchmess_echo_fs
//   synchmess_fuse  the same on a group file of synchmess-cuse --fuse-mount    synchmess-cuse
//   synchmess_fast  synch_send(fd, msg, N)   synch_receive(fd, buf, N)       the group's shared
//              region (the client library's fast path, issue 9): no server, no system call
// Sizes: 64 B and 4 KiB (4096 B, the default max_message_size). Placements:
//   one_cpu    the benchmark thread and every thread of both FUSE servers pinned to one CPU (CPU 0,
//              or the first the benchmark may use) with sched_setaffinity: each round trip to a
//              server is two context switches on that CPU, no cross-CPU wake-up;
//   two_cpus   the benchmark thread pinned to that CPU, every server thread to another one: each
//              request and each reply wakes a thread on the other CPU (the cross-CPU cost, stable;
//              only when the benchmark may use two CPUs or more);
//   unpinned   everything may run on every CPU the benchmark was given, as the scheduler decides:
//              a pair either stays on one CPU or wakes a thread on the other CPU at each request
//              (on this project's VMs ~10x slower), and the mix changes from one benchmark to the
//              next, even between the echo floor and synchmess seconds apart: ratios here swing
//              both ways; synchmess's own cost is what the one_cpu ratios show.
// mq: one blocking queue per size (mq_msgsize = N, mq_maxmsg = 1), unlinked once open. pipe: one
// pipe for the whole run. Both live in this process.
// The same thread sends and receives because that is the operation synchmess offers in one call
// each: a write() stores the message, a read() takes it. pipe and mq keep the message in the kernel
// between the two calls (as the original kernel module did), with no other thread involved: they
// are what a kernel-resident queue costs. A two-thread pipe ping-pong would measure thread wake-ups
// instead, which neither the kernel module nor a queue needs; the cost of a round trip to another
// process is what echo_fuse measures, with FUSE around it.
//
// echo_fuse is the floor: synchmess_echo_fs (echo_fs.cpp) mounts with synchmess's FUSE options
// (allow_other,default_permissions as root; direct_io, nonseekable; the same init flags and
// attribute timeouts) and serves one file whose read() returns what the last write() stored, from
// one thread reading the session fd with blocking reads, as synchmess's FUSE reader does. The
// difference between synchmess_fuse and echo_fuse is synchmess's work per request. The issue's
// target: synchmess_fuse within 1.3x of echo_fuse. Issue 9's: synchmess_fast at most 0.5x mq, at
// both sizes, pinned and unpinned (the same descriptor: the library takes the region, raw
// write()/read() take the device).
//
// The benchmark starts both servers itself, each in a fresh directory under a new
// /var/tmp/synchmess_kernel_bench.XXXXXX, waits for DIR/synchmess (and DIR/echo), installs the
// group `kernel_bench` with the client library (SYNCHMESS_DIR=DIR), opens it and the echo file
// once (O_RDWR) for the whole run. At the end it closes them, stops both servers with SIGTERM and
// requires exit status 0 (exit 1 otherwise); a mount a failed server left is unmounted with
// `fusermount3 -u -z`. It must run as root (the mounts use allow_other, like synchmess's own
// root mount); otherwise it says so and exits 1.
//
// Time: manual, per pair (steady_clock around the send and the receive); each benchmark first
// makes one unmeasured pair and checks the received bytes equal the sent ones. Google Benchmark's
// Time column is the mean time per pair. Counters (all per pair, in ns unless said otherwise):
//   p50_ns        the median pair;
//   cpu_ns        CPU time of the benchmark thread (user + kernel: the system calls' own work);
//   srv_cpu_ns    CPU time of the whole server process (echo_fuse, synchmess_fuse only);
//   base_echo_ns, base_mq_ns, base_pipe_ns (synchmess_fuse only): the mean pair of echo_fuse, mq
//                 and pipe measured just before, in the same pass, size and placement;
//   x_echo, x_mq, x_pipe (synchmess_fuse only): synchmess_fuse's mean / that baseline's mean, how
//                 many times slower synchmess is (the core benchmark's `speedup` is the inverse;
//                 here the subject is always the slower one and a ratio < 1 would print in milli).
// Order within a pass: for each placement and size, pipe, mq, echo_fuse, synchmess_fuse, so each
// baseline runs seconds before the subject; all of it --passes=N times (default 3), and the
// summary gives each ratio's median over the passes and its range. Flags besides Google
// Benchmark's: --passes=N, --server=PATH (synchmess-cuse; env SYNCHMESS_CUSE; default: the one of
// this build), --echo-fs=PATH (env SYNCHMESS_ECHO_FS; default: this build's). Without
// --benchmark_min_time each benchmark runs for 0.2 s per pass: the default run takes ~25 s.
// After the passes comes a summary (its own format, as the ratios are subject / baseline here):
// per size and placement, each ratio's median over the passes [lowest-highest], the median figures,
// the ratio of median pairs and of CPU times; the synchmess_fuse / echo_fuse line says MET or NOT
// MET for the 1.3x target; the exit status is 0 either way (1 when a benchmark or a server failed).
// Figures are kept per pass with benchmarks/core/support.cpp (record_figure, set_pass).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <synchmess/client.h>

#include "core/support.hpp"
#include "server_process.hpp"

namespace synchmess::bench {
namespace {

constexpr const char* kGroupName = "kernel_bench";
constexpr double kTarget = 1.3;      // synchmess_fuse / echo_fuse, at most
constexpr double kFastTarget = 0.5;  // synchmess_fast / mq, at most
constexpr std::size_t kSizes[] = {64, 4096};
constexpr auto kServerStartTimeout = std::chrono::seconds(10);
constexpr auto kServerStopTimeout = std::chrono::seconds(10);

enum class Placement { kOneCpu, kTwoCpus, kUnpinned };
enum class Subject { kPipe, kMq, kEcho, kSynchmess, kFast };
constexpr Placement kPlacements[] = {Placement::kOneCpu, Placement::kTwoCpus, Placement::kUnpinned};
constexpr Subject kSubjects[] = {Subject::kPipe, Subject::kMq, Subject::kEcho, Subject::kSynchmess,
                                 Subject::kFast};

const char* placement_name(Placement placement) {
  switch (placement) {
    case Placement::kOneCpu:
      return "one_cpu";
    case Placement::kTwoCpus:
      return "two_cpus";
    case Placement::kUnpinned:
      return "unpinned";
  }
  return "?";
}

const char* subject_name(Subject subject) {
  switch (subject) {
    case Subject::kPipe:
      return "pipe";
    case Subject::kMq:
      return "mq";
    case Subject::kEcho:
      return "echo_fuse";
    case Subject::kSynchmess:
      return "synchmess_fuse";
    case Subject::kFast:
      return "synchmess_fast";
  }
  return "?";
}

struct Case {
  Placement placement;
  std::size_t size;
  Subject subject;
};

// The benchmark's name, also the key of its figures.
std::string key_of(Placement placement, std::size_t size, Subject subject) {
  return std::string("kernel/") + placement_name(placement) + "/" + std::to_string(size) + "B/" +
         subject_name(subject);
}

// Everything the benchmarks use, set up once by main().
struct Environment {
  cpu_set_t all_cpus{};   // the benchmark's affinity at start: "unpinned"
  cpu_set_t one_cpu{};    // its first CPU: "one_cpu"
  cpu_set_t other_cpu{};  // its second CPU, for the servers of "two_cpus"
  int pinned_cpu = 0;
  int other_cpu_number = -1;  // -1: the benchmark may use one CPU only (no "two_cpus")
  std::string base_dir;       // /var/tmp/synchmess_kernel_bench.XXXXXX
  std::string synchmess_dir;
  std::string echo_dir;
  ServerProcess synchmess;
  ServerProcess echo;
  int group_fd = -1;
  int echo_fd = -1;
  int pipe_fds[2] = {-1, -1};
  std::map<std::size_t, mqd_t> queues;  // one per size, msgsize = that size
};
Environment* g_env = nullptr;

// ---- the servers' clean-up on SIGINT/SIGTERM/SIGHUP (async-signal-safe calls only) ----

struct SignalCleanup {
  pid_t pids[2] = {-1, -1};
  char mounts[2][256] = {};
  char files[3][256] = {};  // unlinked: the servers' logs
  char base[256] = {};
  char fusermount[64] = {};
};
SignalCleanup g_cleanup;

void wait_or_kill(pid_t pid) {
  for (int i = 0; i < 300; ++i) {  // 3 s
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) != 0) return;
    const timespec tick{0, 10'000'000};
    nanosleep(&tick, nullptr);
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
}

void on_stop_signal(int signal_number) {
  for (pid_t pid : g_cleanup.pids) {
    if (pid > 0) kill(pid, SIGTERM);
  }
  for (pid_t pid : g_cleanup.pids) {
    if (pid > 0) wait_or_kill(pid);
  }
  for (const char* mount : g_cleanup.mounts) {
    if (mount[0] == '\0' || g_cleanup.fusermount[0] == '\0') continue;
    const pid_t child = fork();
    if (child == 0) {
      const int null_fd = open("/dev/null", O_WRONLY);
      dup2(null_fd, STDOUT_FILENO);
      dup2(null_fd, STDERR_FILENO);
      char u[] = "-u";
      char z[] = "-z";
      char* args[] = {g_cleanup.fusermount, u, z, const_cast<char*>(mount), nullptr};
      char* no_environment[] = {nullptr};
      execve(g_cleanup.fusermount, args, no_environment);
      _exit(127);
    }
    if (child > 0) wait_or_kill(child);
  }
  for (const char* file : g_cleanup.files) {
    if (file[0] != '\0') unlink(file);
  }
  for (const char* mount : g_cleanup.mounts) {
    if (mount[0] != '\0') rmdir(mount);
  }
  if (g_cleanup.base[0] != '\0') rmdir(g_cleanup.base);
  signal(signal_number, SIG_DFL);
  raise(signal_number);
}

void copy_path(char (&out)[256], const std::string& path) {
  std::snprintf(out, sizeof out, "%s", path.c_str());
}

// ---- placement ----

bool apply_placement(Placement placement, std::string& error) {
  const cpu_set_t& client_cpus =
      placement == Placement::kUnpinned ? g_env->all_cpus : g_env->one_cpu;
  const cpu_set_t& server_cpus = placement == Placement::kOneCpu    ? g_env->one_cpu
                                 : placement == Placement::kTwoCpus ? g_env->other_cpu
                                                                    : g_env->all_cpus;
  if (sched_setaffinity(0, sizeof client_cpus, &client_cpus) != 0) {
    error = std::string("sched_setaffinity of the benchmark thread: ") + std::strerror(errno);
    return false;
  }
  return g_env->synchmess.set_affinity(server_cpus, error) &&
         g_env->echo.set_affinity(server_cpus, error);
}

double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// ---- one pair: send `size` bytes of `out`, receive them into `in`; 0 or an errno ----

int fd_pair(int fd, const char* out, char* in, std::size_t size) {
  const ssize_t written = write(fd, out, size);
  if (written != static_cast<ssize_t>(size)) return written < 0 ? errno : EPROTO;
  const ssize_t got = read(fd, in, size);
  if (got != static_cast<ssize_t>(size)) return got < 0 ? errno : EPROTO;
  return 0;
}

int pipe_pair(const char* out, char* in, std::size_t size) {
  if (write(g_env->pipe_fds[1], out, size) != static_cast<ssize_t>(size)) return errno;
  std::size_t done = 0;  // a pipe may return fewer bytes than asked (never here: one write)
  while (done < size) {
    const ssize_t got = read(g_env->pipe_fds[0], in + done, size - done);
    if (got <= 0) return got < 0 ? errno : EPROTO;
    done += static_cast<std::size_t>(got);
  }
  return 0;
}

int fast_pair(int fd, const char* out, char* in, std::size_t size) {
  const ssize_t sent = synch_send(fd, out, size);
  if (sent != static_cast<ssize_t>(size)) return sent < 0 ? errno : EPROTO;
  const ssize_t got = synch_receive(fd, in, size);
  if (got != static_cast<ssize_t>(size)) return got < 0 ? errno : EPROTO;
  return 0;
}

int mq_pair(mqd_t queue, const char* out, char* in, std::size_t size) {
  if (mq_send(queue, out, size, 0) != 0) return errno;
  const ssize_t got = mq_receive(queue, in, size, nullptr);
  if (got != static_cast<ssize_t>(size)) return got < 0 ? errno : EPROTO;
  return 0;
}

// ---- the benchmark ----

void set_ns_counter(benchmark::State& state, const char* name, double seconds_value) {
  state.counters[name] = benchmark::Counter(seconds_value * 1e9);
}

// Benchmarks that failed (a server died, an error from the kernel): main() then exits 1.
int g_failed_benchmarks = 0;

void fail_benchmark(benchmark::State& state, const std::string& message) {
  ++g_failed_benchmarks;
  state.SkipWithError(message.c_str());
}

template <typename Pair>
void measure(benchmark::State& state, const Case& c, Pair pair, const ServerProcess* server) {
  std::string error;
  if (!apply_placement(c.placement, error)) {
    fail_benchmark(state, error);
    return;
  }
  std::vector<char> out(c.size);
  std::vector<char> in(c.size);
  for (std::size_t i = 0; i < c.size; ++i)
    out[i] = static_cast<char>('a' + i % 26);
  // One unmeasured pair: the subject works and gives back the bytes sent.
  if (const int failed = pair(out.data(), in.data(), c.size); failed != 0) {
    fail_benchmark(state, std::string("first pair failed: ") + std::strerror(failed));
    return;
  }
  if (std::memcmp(out.data(), in.data(), c.size) != 0) {
    fail_benchmark(state, "the bytes received differ from those sent");
    return;
  }

  std::vector<Clock::duration::rep> samples;
  samples.reserve(static_cast<std::size_t>(std::min<benchmark::IterationCount>(
      state.max_iterations, benchmark::IterationCount{10'000'000})));
  const double cpu_start = thread_cpu_seconds();
  const double server_start = server != nullptr ? server->cpu_seconds() : -1;
  for (auto _ : state) {
    const auto start = Clock::now();
    const int failed = pair(out.data(), in.data(), c.size);
    const auto end = Clock::now();
    if (failed != 0) {
      fail_benchmark(state, std::string("send+receive failed: ") + std::strerror(failed));
      break;
    }
    state.SetIterationTime(seconds(end - start));
    samples.push_back((end - start).count());
  }
  const double cpu_end = thread_cpu_seconds();
  const double server_end = server != nullptr ? server->cpu_seconds() : -1;
  if (state.error_occurred() || samples.empty()) return;

  const auto pairs = static_cast<double>(samples.size());
  double total = 0;
  for (const auto sample : samples)
    total += static_cast<double>(sample);
  const double unit = seconds(Clock::duration(1));
  const double mean = total / pairs * unit;
  auto middle = samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 2);
  std::nth_element(samples.begin(), middle, samples.end());
  const double p50 = static_cast<double>(*middle) * unit;
  const double cpu = (cpu_end - cpu_start) / pairs;

  const std::string key = key_of(c.placement, c.size, c.subject);
  record_figure(key, mean);
  record_figure(key + ":p50", p50);
  record_figure(key + ":cpu", cpu);
  set_ns_counter(state, "p50_ns", p50);
  set_ns_counter(state, "cpu_ns", cpu);
  if (server != nullptr && server_start >= 0 && server_end >= 0) {
    const double server_cpu = (server_end - server_start) / pairs;
    record_figure(key + ":srv_cpu", server_cpu);
    set_ns_counter(state, "srv_cpu_ns", server_cpu);
  }
  if (c.subject != Subject::kSynchmess && c.subject != Subject::kFast) return;
  const struct {
    Subject subject;
    const char* base_counter;
    const char* ratio_counter;
  } baselines[] = {{Subject::kEcho, "base_echo_ns", "x_echo"},
                   {Subject::kMq, "base_mq_ns", "x_mq"},
                   {Subject::kPipe, "base_pipe_ns", "x_pipe"}};
  for (const auto& baseline : baselines) {
    const auto figure = recorded_figure(key_of(c.placement, c.size, baseline.subject));
    if (!figure || *figure <= 0) continue;
    set_ns_counter(state, baseline.base_counter, *figure);
    state.counters[baseline.ratio_counter] = benchmark::Counter(mean / *figure);
  }
}

void run_case(benchmark::State& state, Case c) {
  Environment& env = *g_env;
  switch (c.subject) {
    case Subject::kPipe:
      measure(state, c, pipe_pair, nullptr);
      return;
    case Subject::kMq: {
      const mqd_t queue = env.queues.at(c.size);
      measure(
          state, c,
          [queue](const char* out, char* in, std::size_t size) {
            return mq_pair(queue, out, in, size);
          },
          nullptr);
      return;
    }
    case Subject::kEcho:
    case Subject::kSynchmess: {
      const bool echo = c.subject == Subject::kEcho;
      const int fd = echo ? env.echo_fd : env.group_fd;
      measure(
          state, c,
          [fd](const char* out, char* in, std::size_t size) { return fd_pair(fd, out, in, size); },
          echo ? &env.echo : &env.synchmess);
      return;
    }
    case Subject::kFast: {
      const int fd = env.group_fd;
      measure(
          state, c,
          [fd](const char* out, char* in, std::size_t size) {
            return fast_pair(fd, out, in, size);
          },
          &env.synchmess);
      return;
    }
  }
}

void register_benchmarks() {
  cpu_set_t usable{};
  const bool two_cpus = sched_getaffinity(0, sizeof usable, &usable) == 0 && CPU_COUNT(&usable) > 1;
  for (const Placement placement : kPlacements) {
    if (placement == Placement::kTwoCpus && !two_cpus) continue;  // set_up() picks the same CPUs
    for (const std::size_t size : kSizes) {
      for (const Subject subject : kSubjects) {
        benchmark::RegisterBenchmark(key_of(placement, size, subject).c_str(), run_case,
                                     Case{placement, size, subject})
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

// ---- the summary ----

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// A figure of every pass that has it (set_pass() moves support.cpp's current pass).
std::map<int, double> figures_of(const std::string& key, int passes) {
  std::map<int, double> values;
  for (int pass = 0; pass < passes; ++pass) {
    set_pass(pass);
    if (const auto figure = recorded_figure(key); figure && *figure > 0) values[pass] = *figure;
  }
  return values;
}

// subject / baseline in every pass that measured both.
std::vector<double> ratios(const std::string& subject, const std::string& baseline, int passes) {
  const auto subjects = figures_of(subject, passes);
  const auto baselines = figures_of(baseline, passes);
  std::vector<double> values;
  for (const auto& [pass, value] : subjects) {
    if (const auto other = baselines.find(pass); other != baselines.end())
      values.push_back(value / other->second);
  }
  return values;
}

std::optional<double> median_figure(const std::string& key, int passes) {
  std::vector<double> values;
  for (const auto& [pass, value] : figures_of(key, passes))
    values.push_back(value);
  if (values.empty()) return std::nullopt;
  return median(values);
}

// "612 ns", "21.3 us", "1.20 ms".
std::string format_duration(double value) {
  char text[32];
  if (value < 1e-6) {
    std::snprintf(text, sizeof text, "%.0f ns", value * 1e9);
  } else if (value < 1e-3) {
    std::snprintf(text, sizeof text, "%.1f us", value * 1e6);
  } else {
    std::snprintf(text, sizeof text, "%.2f ms", value * 1e3);
  }
  return text;
}

// Appends printf-formatted text to `line`.
template <typename... Args>
void append(std::string& line, const char* format, Args... args) {
  char text[256];
  std::snprintf(text, sizeof text, format, args...);
  line += text;
}

// One line: "<label>  <median ratio>x [<lowest>-<highest>]  (<subject> vs <baseline>)", the same
// ratio for the median pairs, optionally for CPU times and the target; "" when no pass measured
// both.
std::string summary_line(int passes, const std::string& label, const std::string& subject,
                         const std::string& baseline, bool with_cpu, double target = 0) {
  const std::vector<double> values = ratios(subject, baseline, passes);
  if (values.empty()) return "";
  const double ratio = median(values);
  const auto [lowest, highest] = std::minmax_element(values.begin(), values.end());
  std::string line;
  append(line, "  %-44s %6.2fx [%.2f-%.2f]  (%s vs %s)", label.c_str(), ratio, *lowest, *highest,
         format_duration(*median_figure(subject, passes)).c_str(),
         format_duration(*median_figure(baseline, passes)).c_str());
  if (const auto p50 = ratios(subject + ":p50", baseline + ":p50", passes); !p50.empty())
    append(line, "  median-pair %.2fx", median(p50));
  if (with_cpu) {
    if (const auto cpu = ratios(subject + ":cpu", baseline + ":cpu", passes); !cpu.empty())
      append(line, "  client-cpu %.2fx", median(cpu));
    if (const auto srv = ratios(subject + ":srv_cpu", baseline + ":srv_cpu", passes);
        !srv.empty()) {
      append(line, "  server-cpu %.2fx (%s vs %s)", median(srv),
             format_duration(*median_figure(subject + ":srv_cpu", passes)).c_str(),
             format_duration(*median_figure(baseline + ":srv_cpu", passes)).c_str());
    }
  }
  if (target > 0)
    append(line, "  target <= %.1fx: %s", target, ratio <= target ? "MET" : "NOT MET");
  return line + "\n";
}

void print_kernel_summary(std::FILE* out, int passes, const std::string& load_at_start) {
  std::fprintf(out,
               "\n==== synchmess_kernel_bench summary: %d pass(es); each line: the median over the "
               "passes of the ratio of mean times per send+receive pair measured within a pass, "
               "subject / baseline (> 1x: the subject is slower) [lowest-highest], then the "
               "median figures (subject vs baseline) ====\n"
               "machine: %u CPUs online, load average at start %s; other jobs on a shared "
               "machine move absolute figures, ratios much less (benchmarks/README.md)\n"
               "median-pair: the same ratio of the median pairs; client-cpu: of the benchmark "
               "thread's CPU time per pair (user + kernel); server-cpu: of the FUSE server "
               "process's CPU time per pair\n",
               passes, std::thread::hardware_concurrency(), load_at_start.c_str());
  for (const Placement placement : kPlacements) {
    for (const std::size_t size : kSizes) {
      const auto key = [&](Subject subject) { return key_of(placement, size, subject); };
      const std::string lines =
          summary_line(passes, "synchmess_fuse / echo_fuse (the FUSE floor)",
                       key(Subject::kSynchmess), key(Subject::kEcho), true, kTarget) +
          summary_line(passes, "synchmess_fuse / mq (POSIX message queue)",
                       key(Subject::kSynchmess), key(Subject::kMq), false) +
          summary_line(passes, "synchmess_fuse / pipe (write, read back)", key(Subject::kSynchmess),
                       key(Subject::kPipe), false) +
          summary_line(passes, "echo_fuse / mq (what FUSE itself costs)", key(Subject::kEcho),
                       key(Subject::kMq), false) +
          summary_line(passes, "synchmess_fast / mq (the fast path)", key(Subject::kFast),
                       key(Subject::kMq), true,
                       placement == Placement::kTwoCpus ? 0 : kFastTarget) +
          summary_line(passes, "synchmess_fast / pipe", key(Subject::kFast), key(Subject::kPipe),
                       false);
      if (lines.empty()) continue;  // filtered out
      if (placement == Placement::kOneCpu) {
        std::fprintf(out, "\n-- %zu B messages, client and servers pinned to CPU %d\n", size,
                     g_env->pinned_cpu);
      } else if (placement == Placement::kTwoCpus) {
        std::fprintf(out,
                     "\n-- %zu B messages, client on CPU %d, servers on CPU %d (a cross-CPU "
                     "wake-up at every request and reply)\n",
                     size, g_env->pinned_cpu, g_env->other_cpu_number);
      } else {
        std::fprintf(out,
                     "\n-- %zu B messages, unpinned (client and servers on any CPU)\n"
                     "   each pair either stays on one CPU (~ the pinned figure) or wakes a thread "
                     "on the other CPU at every request (on a VM often ~10x slower); the scheduler "
                     "picks the mix per benchmark, even for the floor and synchmess seconds apart, "
                     "so these ratios swing both ways: synchmess's own cost is the pinned ratio\n",
                     size);
      }
      std::fputs(lines.c_str(), out);
    }
  }
  std::fflush(out);
}

// ---- set-up and tear-down ----

bool fail(const std::string& message) {
  std::fprintf(stderr, "synchmess_kernel_bench: %s\n", message.c_str());
  return false;
}

// Creates the directories, starts both servers, installs and opens the group, opens the echo
// file, the pipe and the queues.
bool set_up(Environment& env, const std::string& server_path, const std::string& echo_fs_path) {
  if (sched_getaffinity(0, sizeof env.all_cpus, &env.all_cpus) != 0)
    return fail(std::string("sched_getaffinity: ") + std::strerror(errno));
  env.pinned_cpu = 0;
  while (env.pinned_cpu < CPU_SETSIZE && !CPU_ISSET(env.pinned_cpu, &env.all_cpus))
    ++env.pinned_cpu;
  CPU_ZERO(&env.one_cpu);
  CPU_SET(env.pinned_cpu, &env.one_cpu);
  for (int cpu = env.pinned_cpu + 1; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &env.all_cpus)) {
      env.other_cpu_number = cpu;
      break;
    }
  }
  CPU_ZERO(&env.other_cpu);
  if (env.other_cpu_number >= 0) CPU_SET(env.other_cpu_number, &env.other_cpu);

  for (const std::string& path : {server_path, echo_fs_path}) {
    if (access(path.c_str(), X_OK) != 0) {
      return fail("cannot execute " + path + ": " + std::strerror(errno) +
                  " (build it, or give its path with --server= / --echo-fs=)");
    }
  }
  char base_template[] = "/var/tmp/synchmess_kernel_bench.XXXXXX";
  if (mkdtemp(base_template) == nullptr)
    return fail(std::string("mkdtemp under /var/tmp: ") + std::strerror(errno));
  env.base_dir = base_template;
  env.synchmess_dir = env.base_dir + "/synchmess";
  env.echo_dir = env.base_dir + "/echo";
  copy_path(g_cleanup.base, env.base_dir);
  for (const std::string* dir : {&env.synchmess_dir, &env.echo_dir}) {
    if (mkdir(dir->c_str(), 0755) != 0) return fail("mkdir " + *dir + ": " + std::strerror(errno));
  }
  copy_path(g_cleanup.mounts[0], env.synchmess_dir);
  copy_path(g_cleanup.mounts[1], env.echo_dir);
  copy_path(g_cleanup.files[0], env.base_dir + "/synchmess-cuse.log");
  copy_path(g_cleanup.files[1], env.base_dir + "/synchmess_echo_fs.log");

  std::string error;
  if (!env.synchmess.start({server_path, "--fuse-mount=" + env.synchmess_dir}, g_cleanup.files[0],
                           error)) {
    return fail("cannot start " + server_path + ": " + error);
  }
  g_cleanup.pids[0] = env.synchmess.pid();
  if (!env.echo.start({echo_fs_path, env.echo_dir}, g_cleanup.files[1], error))
    return fail("cannot start " + echo_fs_path + ": " + error);
  g_cleanup.pids[1] = env.echo.pid();
  if (!env.synchmess.wait_for_file(env.synchmess_dir + "/synchmess", kServerStartTimeout, error))
    return fail(error + "\n" + env.synchmess.log_text());
  if (!env.echo.wait_for_file(env.echo_dir + "/echo", kServerStartTimeout, error))
    return fail(error + "\n" + env.echo.log_text());

  // The client library finds the devices in SYNCHMESS_DIR (no other thread runs yet).
  setenv(SYNCH_DIR_ENV, env.synchmess_dir.c_str(), 1);
  char group_path[SYNCH_PATH_MAX];
  int created = 0;
  if (synch_install_group(kGroupName, group_path, sizeof group_path, &created) != 0)
    return fail(std::string("synch_install_group: ") + std::strerror(errno));
  env.group_fd = synch_open_group(kGroupName, O_RDWR);
  if (env.group_fd < 0)
    return fail(std::string("synch_open_group ") + group_path + ": " + std::strerror(errno));
  if (synch_fast_path_active(env.group_fd) != 1) {
    return fail(std::string("the server offered no fast path for ") + group_path +
                " (SYNCHMESS_FASTPATH=0 in the environment?)");
  }
  env.echo_fd = open((env.echo_dir + "/echo").c_str(), O_RDWR | O_CLOEXEC);
  if (env.echo_fd < 0) return fail(env.echo_dir + "/echo: " + std::strerror(errno));
  if (pipe2(env.pipe_fds, O_CLOEXEC) != 0)
    return fail(std::string("pipe2: ") + std::strerror(errno));
  for (const std::size_t size : kSizes) {
    const std::string name =
        "/synchmess_kernel_bench." + std::to_string(getpid()) + "." + std::to_string(size);
    mq_attr attributes{};
    attributes.mq_maxmsg = 1;
    attributes.mq_msgsize = static_cast<long>(size);
    const mqd_t queue =
        mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attributes);
    if (queue == static_cast<mqd_t>(-1))
      return fail("mq_open " + name + ": " + std::strerror(errno));
    mq_unlink(name.c_str());  // lives while open
    env.queues[size] = queue;
  }
  return true;
}

// Closes everything, stops both servers (exit status 0 required), unmounts what a failed server
// left, removes the directories. Returns false when a server did not end well.
bool tear_down(Environment& env, std::FILE* report_to) {
  if (env.group_fd >= 0) synch_close_group(env.group_fd);
  env.group_fd = -1;
  for (int* fd : {&env.echo_fd, &env.pipe_fds[0], &env.pipe_fds[1]}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  for (const auto& [size, queue] : env.queues)
    mq_close(queue);
  env.queues.clear();

  bool ok = true;
  for (ServerProcess* server : {&env.synchmess, &env.echo}) {
    if (!server->running()) continue;
    std::string report;
    const bool clean = server->stop(kServerStopTimeout, report);
    std::fprintf(report_to, "%s: %s\n", clean ? "stopped" : "FAILED", report.c_str());
    std::fflush(report_to);
    if (!clean) {
      std::fprintf(stderr, "---- %s ----\n%s----\n", server->log_path().c_str(),
                   server->log_text().c_str());
      ok = false;
    }
  }
  g_cleanup.pids[0] = g_cleanup.pids[1] = -1;
  for (const std::string& dir : {env.synchmess_dir, env.echo_dir}) {
    if (dir.empty()) continue;
    if (is_mount_point(dir)) {
      std::fprintf(stderr, "synchmess_kernel_bench: %s is still mounted: fusermount3 -u -z %s\n",
                   dir.c_str(), dir.c_str());
      lazy_unmount(dir);
      ok = false;
    }
    rmdir(dir.c_str());
  }
  for (const char* file : g_cleanup.files) {
    if (file[0] != '\0') unlink(file);
  }
  if (!env.base_dir.empty()) rmdir(env.base_dir.c_str());
  return ok;
}

}  // namespace
}  // namespace synchmess::bench

int main(int argc, char** argv) {
  using namespace synchmess::bench;
  // Our flags are taken out before Google Benchmark sees the arguments.
  std::string server_flag;
  std::string echo_fs_flag;
  auto line = take_command_line(argc, argv, [&](char* arg) {
    if (std::strncmp(arg, "--server=", 9) == 0) {
      server_flag = arg + 9;
    } else if (std::strncmp(arg, "--echo-fs=", 10) == 0) {
      echo_fs_flag = arg + 10;
    } else {
      return false;
    }
    return true;
  });
  if (!line) return 1;
  const int passes = line->passes;
  const bool console = line->console;
  if (const auto done = start_benchmarks(*line, register_benchmarks)) return *done;

  if (geteuid() != 0) {
    std::fprintf(stderr,
                 "synchmess_kernel_bench must run as root: it mounts two FUSE file systems with "
                 "allow_other,default_permissions, as synchmess-cuse --fuse-mount does for root "
                 "(try: sudo %s)\n",
                 argv[0]);
    return 1;
  }
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    std::fprintf(stderr, "synchmess_kernel_bench: cannot use /dev/fuse: %s (modprobe fuse)\n",
                 std::strerror(errno));
    return 1;
  }
  for (const char* path : {"/usr/bin/fusermount3", "/bin/fusermount3"}) {
    if (g_cleanup.fusermount[0] == '\0' && access(path, X_OK) == 0)
      std::snprintf(g_cleanup.fusermount, sizeof g_cleanup.fusermount, "%s", path);
  }
  struct sigaction stop {};
  stop.sa_handler = on_stop_signal;
  sigemptyset(&stop.sa_mask);
  for (const int signal_number : {SIGINT, SIGTERM, SIGHUP})
    sigaction(signal_number, &stop, nullptr);

  static Environment env;
  g_env = &env;
  const std::string server_path = pick_path(server_flag, "SYNCHMESS_CUSE", SYNCHMESS_CUSE_PATH);
  const std::string echo_fs_path =
      pick_path(echo_fs_flag, "SYNCHMESS_ECHO_FS", SYNCHMESS_ECHO_FS_PATH);
  std::FILE* const summary = console ? stdout : stderr;
  if (!set_up(env, server_path, echo_fs_path)) {
    tear_down(env, stderr);
    return 1;
  }

  const unsigned cpus = std::thread::hardware_concurrency();
  benchmark::AddCustomContext("machine",
                              std::to_string(cpus) +
                                  " CPUs online; this project's machines have 2 shared, noisy "
                                  "vCPUs: compare ratios within one run");
  benchmark::AddCustomContext("servers", server_path + " --fuse-mount=" + env.synchmess_dir +
                                             " (pid " + std::to_string(env.synchmess.pid()) +
                                             "); " + echo_fs_path + " " + env.echo_dir + " (pid " +
                                             std::to_string(env.echo.pid()) + ")");
  benchmark::AddCustomContext("pinned CPU", std::to_string(env.pinned_cpu));
  benchmark::AddCustomContext("x_echo/x_mq/x_pipe",
                              "synchmess_fuse mean time / the baseline's, same pass "
                              "(> 1: synchmess slower)");
  const std::string load_at_start = load_average();

  run_passes(summary, passes);
  print_kernel_summary(summary, passes, load_at_start);
  std::fprintf(summary, "\n");
  std::fflush(summary);  // before tear_down() may print a server's log on stderr
  const bool servers_ok = tear_down(env, summary);
  benchmark::Shutdown();
  if (g_failed_benchmarks > 0) {
    std::fprintf(stderr, "synchmess_kernel_bench: %d benchmark(s) failed (ERROR OCCURRED above)\n",
                 g_failed_benchmarks);
  }
  return servers_ok && g_failed_benchmarks == 0 ? 0 : 1;
}
