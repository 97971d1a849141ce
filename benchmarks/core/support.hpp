// Shared pieces of synchmess_core_bench: the figures of this run (so that every benchmark can be
// printed beside its baseline, with the ratio), the end-of-run summary table, and a crew of worker
// threads re-used across rounds.
//
// How the ratios work: main() runs the whole selection several times ("passes"); within a pass,
// benchmarks run in registration order and every baseline is registered before what is compared
// with it, so a baseline and its subject are measured seconds apart. A benchmark records its
// headline figure (the same number Google Benchmark prints: items/s, or seconds per iteration)
// under a key for the current pass; the benchmark compared with it reads that figure and adds two
// counters: `base_*` (the baseline's figure) and `speedup` (how many times faster than the
// baseline: a ratio of throughputs, or the inverse ratio of times; > 1 means faster). At the end
// main() prints every comparison as one table: the median over the passes of the per-pass ratio,
// and its range, which is what a noisy shared machine lets one trust.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace synchmess::bench {

using Clock = std::chrono::steady_clock;

inline double seconds(Clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

// CPU time used by the whole process so far (every thread). Per message it is the cost of the
// work itself: other processes on a shared machine steal wall time, not this.
double process_cpu_seconds();

// ---- figures and comparisons ----

enum class Figure {
  kRate,  // items per second: higher is better
  kTime,  // seconds per operation: lower is better
};

// The pass being run (0-based); figures are kept per pass.
void set_pass(int pass);

// Remembers `value` as the figure of the current pass under `key` (a later call replaces it: the
// last invocation of a benchmark function in a pass is the one Google Benchmark reports).
void record_figure(const std::string& key, double value);
// The figure of the current pass.
std::optional<double> recorded_figure(const std::string& key);

// Records `value` under `key` and, when `baseline_key` has a figure, adds the counters
// `base_counter` (the baseline's figure, shown in `kind`'s unit) and `speedup` to `state`.
void record_and_compare(benchmark::State& state, const std::string& key, double value,
                        const std::string& baseline_key, Figure kind,
                        const std::string& base_counter);

// One line of the summary: "<label>  <median speedup>x [<lowest>-<highest>]  (<subject> vs
// <baseline>)", the speedup taken per pass, figures as medians over the passes. When figures are
// also recorded under "<key>:p50" (the median iteration) for both, the line adds that ratio;
// likewise "<key>:cpu" (CPU seconds per item, lower is better).
struct Comparison {
  std::string section;
  std::string label;
  std::string subject_key;
  std::string baseline_key;
  Figure kind = Figure::kRate;
  std::string unit;              // e.g. "msg/s"; for kTime the value is printed in us or ms
  std::optional<double> target;  // a speedup the project wants; the summary says met / not met
  std::string target_text;       // what the target is, in words
};
void add_comparison(const std::string& section, const std::string& label,
                    const std::string& subject_key, const std::string& baseline_key, Figure kind,
                    const std::string& unit, std::optional<double> target = std::nullopt,
                    const std::string& target_text = "");
// A line printed under a section's heading in the summary (what a baseline is, caveats).
void add_note(const std::string& section, const std::string& text);
void print_summary(std::FILE* out, int passes, const std::string& load_at_start,
                   const char* program = "synchmess_core_bench");

// ---- the command line of the benchmark programs ----

// What main() passes on to benchmark::Initialize, and the passes to run. The program's own flags
// (own_flag() returns true for them) and --passes=N are taken out; --benchmark_min_time=0.2 is
// added unless given. Passes default to 3, or 1 with a JSON/CSV --benchmark_format (documents
// cannot be concatenated); the summary goes to stdout beside a console table, else to stderr.
struct CommandLine {
  std::vector<char*> args;  // argv[0] first, no terminating nullptr
  int passes = 0;
  bool console = true;
};
// nullopt after a message on stderr when --passes is not a number >= 1.
std::optional<CommandLine> take_command_line(int argc, char** argv,
                                             const std::function<bool(char*)>& own_flag);
// True when an argument starts with `flag`.
bool has_flag(const std::vector<char*>& args, const char* flag);

// The path of a program the benchmark starts: `flag_value` (its command-line flag) when given,
// else $`env_name` when set and not empty, else `built` (the path CMake baked in).
std::string pick_path(const std::string& flag_value, const char* env_name, const char* built);
// benchmark::Initialize with `line`, then register_benchmarks(). Returns the exit status when the
// program is done already: 1 when arguments it does not know were reported, 0 after printing the
// list for --benchmark_list_tests (no server or privilege is needed for that); nullopt: run.
std::optional<int> start_benchmarks(CommandLine& line,
                                    const std::function<void()>& register_benchmarks);
// Runs the selected benchmarks `passes` times, each under a "==== pass N of M ====" heading in
// `summary`, all with one display reporter (libbenchmark 1.7.1's RunSpecifiedBenchmarks() without
// a reporter deletes the static default reporter it hands out, so a second call would crash; the
// one made here is that same static one, honouring --benchmark_format, never deleted).
void run_passes(std::FILE* summary, int passes);

// The first three fields of /proc/loadavg: how busy the machine was (other jobs skew figures).
std::string load_average();
// "4.25M", "870.0k": a rate in engineering units.
std::string format_rate(double per_second);
// "12.3 us", "4.56 ms".
std::string format_time(double seconds);

// ---- threads ----

// Worker threads created once and re-used for many rounds (thread creation stays out of the
// figures). run_round() starts body(index) on every worker at once and returns the wall time from
// the first worker's start to the last worker's end.
class Crew {
 public:
  Crew(int size, std::function<void(int index)> body);
  ~Crew();
  Crew(const Crew&) = delete;
  Crew& operator=(const Crew&) = delete;

  Clock::duration run_round();

 private:
  void work(int index);

  std::function<void(int)> body_;
  std::mutex mu_;
  std::condition_variable start_;
  std::condition_variable done_;
  uint64_t round_ = 0;  // guarded by mu_
  int running_ = 0;     // guarded by mu_
  bool stop_ = false;   // guarded by mu_
  std::vector<Clock::time_point> started_;
  std::vector<Clock::time_point> ended_;
  std::vector<std::thread> threads_;
};

}  // namespace synchmess::bench
