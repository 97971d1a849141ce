// synchmess_core_bench: the in-process benchmarks of the core library (no server, no devices).
//
// Sections (each file's header says what it measures and how to read it):
//   queue_mpmc/...    messages/s through Group::send/try_receive in process,
//                     1P+1C, 2P+2C, 4P+4C, vs std::mutex + std::deque       (queue_bench.cpp)
//   queue_1thread/... the same operations on one thread (their bare cost)   (queue_bench.cpp)
//   barrier_wake/...  one awake() to the last of 1..1000 futex sleepers, vs pthread_cond_broadcast
//                                                                           (barrier_bench.cpp)
//   delay/...         schedule, expire and revoke 100k delayed messages, vs a std::multimap
//                                                                           (delay_bench.cpp)
// Every figure is printed beside its baseline measured in the same run (counters base_* and
// speedup), and a summary table with every ratio follows Google Benchmark's own output.
//
// Usage: synchmess_core_bench [--passes=N] [Google Benchmark flags]. The selected benchmarks run N
// times over (default 3; 1 with --benchmark_format=json/csv), so that each baseline and its
// subject are measured close together several times; the summary gives the median ratio and its
// range. Without --benchmark_min_time each benchmark runs for 0.2 s per pass (the whole default
// run takes about 60 s); the barrier benchmarks have fixed iteration counts. Figures and the
// command used for them: benchmarks/README.md.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace synchmess::bench {
void register_queue_benchmarks();
void register_barrier_benchmarks();
void register_delay_benchmarks();
}  // namespace synchmess::bench

int main(int argc, char** argv) {
  // glibc runs pthread mutexes without atomic instructions while a process has never had a second
  // thread; the core is always used multi-threaded, so make the baselines pay what they would
  // there, whichever benchmarks a filter selects (otherwise queue_1thread's mutex baseline runs
  // 3x faster when no threaded benchmark ran before it).
  std::thread([] {}).join();

  auto line = synchmess::bench::take_command_line(argc, argv, [](char*) { return false; });
  if (!line) return 1;
  std::vector<char*>& args = line->args;
  const int passes = line->passes;
  const bool console = line->console;
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;

  const unsigned cpus = std::thread::hardware_concurrency();
  benchmark::AddCustomContext(
      "machine", std::to_string(cpus) +
                     " CPUs online; this project's machines have 2 shared, noisy vCPUs: "
                     "threads beyond 2 are time-sliced, compare ratios within one run");
  benchmark::AddCustomContext("speedup",
                              "counter speedup = how many times faster than the baseline "
                              "measured just before, in the same pass");
  const std::string load_at_start = synchmess::bench::load_average();

  synchmess::bench::register_queue_benchmarks();
  synchmess::bench::register_barrier_benchmarks();
  synchmess::bench::register_delay_benchmarks();

  std::FILE* const summary = console ? stdout : stderr;
  synchmess::bench::run_passes(summary, passes);
  synchmess::bench::print_summary(summary, passes, load_at_start);
  benchmark::Shutdown();
  return 0;
}
