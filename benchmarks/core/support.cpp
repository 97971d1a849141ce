// The figures of this run, the summary table, and the worker crew (see support.hpp).
#include "support.hpp"

#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

namespace synchmess::bench {
namespace {

int g_pass = 0;

// figures()[key][pass]
std::map<std::string, std::map<int, double>>& figures() {
  static std::map<std::string, std::map<int, double>> instance;
  return instance;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// The median over the passes of one key's figure.
std::optional<double> median_figure(const std::string& key) {
  const auto found = figures().find(key);
  if (found == figures().end() || found->second.empty()) return std::nullopt;
  std::vector<double> values;
  for (const auto& [pass, value] : found->second)
    values.push_back(value);
  return median(values);
}

std::vector<Comparison>& comparisons() {
  static std::vector<Comparison> instance;
  return instance;
}

std::vector<std::pair<std::string, std::string>>& notes() {
  static std::vector<std::pair<std::string, std::string>> instance;
  return instance;
}

// The speedup of `subject` over `baseline`: > 1 means the subject is faster.
double speedup(Figure kind, double subject, double baseline) {
  return kind == Figure::kRate ? subject / baseline : baseline / subject;
}

// The speedup of `subject_key` over `baseline_key` in every pass that measured both.
std::vector<double> speedups(Figure kind, const std::string& subject_key,
                             const std::string& baseline_key) {
  std::vector<double> ratios;
  const auto subject = figures().find(subject_key);
  const auto baseline = figures().find(baseline_key);
  if (subject == figures().end() || baseline == figures().end()) return ratios;
  for (const auto& [pass, value] : subject->second) {
    const auto other = baseline->second.find(pass);
    if (other != baseline->second.end() && value > 0 && other->second > 0)
      ratios.push_back(speedup(kind, value, other->second));
  }
  return ratios;
}

std::string format_figure(Figure kind, double value, const std::string& unit) {
  if (kind == Figure::kRate) return format_rate(value) + " " + unit;
  return format_time(value);
}

}  // namespace

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

void set_pass(int pass) {
  g_pass = pass;
}

void record_figure(const std::string& key, double value) {
  figures()[key][g_pass] = value;
}

std::optional<double> recorded_figure(const std::string& key) {
  const auto found = figures().find(key);
  if (found == figures().end()) return std::nullopt;
  const auto in_pass = found->second.find(g_pass);
  if (in_pass == found->second.end()) return std::nullopt;
  return in_pass->second;
}

void record_and_compare(benchmark::State& state, const std::string& key, double value,
                        const std::string& baseline_key, Figure kind,
                        const std::string& base_counter) {
  record_figure(key, value);
  if (key == baseline_key) return;  // the baseline itself
  const auto baseline = recorded_figure(baseline_key);
  if (!baseline || *baseline <= 0 || value <= 0) return;
  state.counters[base_counter] =
      benchmark::Counter(kind == Figure::kTime ? *baseline * 1e6 : *baseline);
  state.counters["speedup"] = benchmark::Counter(speedup(kind, value, *baseline));
}

void add_comparison(const std::string& section, const std::string& label,
                    const std::string& subject_key, const std::string& baseline_key, Figure kind,
                    const std::string& unit, std::optional<double> target,
                    const std::string& target_text) {
  comparisons().push_back(
      {section, label, subject_key, baseline_key, kind, unit, target, target_text});
}

void add_note(const std::string& section, const std::string& text) {
  notes().emplace_back(section, text);
}

std::optional<CommandLine> take_command_line(int argc, char** argv,
                                             const std::function<bool(char*)>& own_flag) {
  CommandLine line;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strncmp(argv[i], "--passes=", 9) == 0) {
      line.passes = std::atoi(argv[i] + 9);
      if (line.passes < 1) {
        std::fprintf(stderr, "%s: --passes wants a number >= 1\n", argv[0]);
        return std::nullopt;
      }
    } else if (i == 0 || !own_flag(argv[i])) {
      line.args.push_back(argv[i]);
    }
  }
  static char default_min_time[] = "--benchmark_min_time=0.2";
  if (!has_flag(line.args, "--benchmark_min_time"))
    line.args.insert(line.args.begin() + 1, default_min_time);
  for (const char* arg : line.args) {
    if (std::strncmp(arg, "--benchmark_format=", 19) == 0 &&
        std::strcmp(arg + 19, "console") != 0) {
      line.console = false;
    }
  }
  if (line.passes == 0) line.passes = line.console ? 3 : 1;
  return line;
}

bool has_flag(const std::vector<char*>& args, const char* flag) {
  const std::size_t length = std::strlen(flag);
  for (const char* arg : args) {
    if (arg != nullptr && std::strncmp(arg, flag, length) == 0) return true;
  }
  return false;
}

std::string pick_path(const std::string& flag_value, const char* env_name, const char* built) {
  if (!flag_value.empty()) return flag_value;
  if (const char* value = std::getenv(env_name); value != nullptr && value[0] != '\0') return value;
  return built;
}

std::optional<int> start_benchmarks(CommandLine& line,
                                    const std::function<void()>& register_benchmarks) {
  std::vector<char*>& args = line.args;
  const bool list_only = has_flag(args, "--benchmark_list_tests");
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  register_benchmarks();
  if (!list_only) return std::nullopt;
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}

void run_passes(std::FILE* summary, int passes) {
  benchmark::BenchmarkReporter* const reporter = benchmark::CreateDefaultDisplayReporter();
  for (int pass = 0; pass < passes; ++pass) {
    set_pass(pass);
    std::fprintf(summary, "\n==== pass %d of %d ====\n", pass + 1, passes);
    std::fflush(summary);
    benchmark::RunSpecifiedBenchmarks(reporter);
  }
}

std::string load_average() {
  char text[64] = "unknown";
  if (std::FILE* file = std::fopen("/proc/loadavg", "r")) {
    if (std::fgets(text, sizeof text, file) == nullptr) std::snprintf(text, sizeof text, "unknown");
    std::fclose(file);
  }
  std::string line = text;
  std::size_t end = 0;
  for (int field = 0; field < 3 && end != std::string::npos; ++field)
    end = line.find(' ', end == 0 ? 0 : end + 1);
  if (end != std::string::npos) line.resize(end);
  while (!line.empty() && line.back() == '\n')
    line.pop_back();
  return line;
}

std::string format_rate(double per_second) {
  char text[32];
  if (per_second >= 1e9) {
    std::snprintf(text, sizeof text, "%.2fG", per_second / 1e9);
  } else if (per_second >= 1e6) {
    std::snprintf(text, sizeof text, "%.2fM", per_second / 1e6);
  } else if (per_second >= 1e3) {
    std::snprintf(text, sizeof text, "%.1fk", per_second / 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.1f", per_second);
  }
  return text;
}

std::string format_time(double value) {
  char text[32];
  if (value >= 1.0) {
    std::snprintf(text, sizeof text, "%.2f s", value);
  } else if (value >= 1e-3) {
    std::snprintf(text, sizeof text, "%.2f ms", value * 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.1f us", value * 1e6);
  }
  return text;
}

void print_summary(std::FILE* out, int passes, const std::string& load_at_start,
                   const char* program) {
  if (figures().empty()) return;
  std::fprintf(out,
               "\n==== %s summary: %d pass(es); each line: the median over the "
               "passes of the speedup measured within a pass [lowest-highest], then the median "
               "figures (subject vs baseline) ====\n"
               "machine: %u CPUs online, load average at start %s. This project's machines have "
               "2 shared vCPUs and other jobs may run beside the benchmark: absolute figures move "
               "by several times between runs, ratios much less (benchmarks/README.md has the "
               "spread)\n"
               "speedup > 1x: faster than the baseline (throughput ratio, or inverse time "
               "ratio); median-iteration: the same ratio of the median round/iteration instead "
               "of the mean; cpu/msg: ratio of process CPU time per message (the work itself, "
               "what other jobs on the machine cannot inflate)\n",
               program, passes, std::thread::hardware_concurrency(), load_at_start.c_str());
  std::string section;
  for (const Comparison& line : comparisons()) {
    const std::vector<double> ratios = speedups(line.kind, line.subject_key, line.baseline_key);
    if (ratios.empty()) continue;  // filtered out
    if (line.section != section) {
      section = line.section;
      std::fprintf(out, "\n-- %s\n", section.c_str());
      for (const auto& [note_section, text] : notes()) {
        if (note_section == section) std::fprintf(out, "   %s\n", text.c_str());
      }
    }
    const double ratio = median(ratios);
    const auto [lowest, highest] = std::minmax_element(ratios.begin(), ratios.end());
    std::fprintf(out, "  %-60s %5.2fx [%.2f-%.2f]  (%s vs %s)", line.label.c_str(), ratio, *lowest,
                 *highest,
                 format_figure(line.kind, *median_figure(line.subject_key), line.unit).c_str(),
                 format_figure(line.kind, *median_figure(line.baseline_key), line.unit).c_str());
    const auto round_ratios =
        speedups(line.kind, line.subject_key + ":p50", line.baseline_key + ":p50");
    if (!round_ratios.empty()) std::fprintf(out, "  median-iteration %.2fx", median(round_ratios));
    const auto cpu_ratios =
        speedups(Figure::kTime, line.subject_key + ":cpu", line.baseline_key + ":cpu");
    if (!cpu_ratios.empty()) std::fprintf(out, "  cpu/msg %.2fx", median(cpu_ratios));
    if (line.target) {
      std::fprintf(out, "  target %s: %s", line.target_text.c_str(),
                   ratio >= *line.target ? "MET" : "NOT MET");
    }
    std::fprintf(out, "\n");
  }
  std::fflush(out);
}

// ---- Crew ----

Crew::Crew(int size, std::function<void(int index)> body)
    : body_(std::move(body)),
      started_(static_cast<std::size_t>(size)),
      ended_(static_cast<std::size_t>(size)) {
  threads_.reserve(static_cast<std::size_t>(size));
  for (int index = 0; index < size; ++index)
    threads_.emplace_back([this, index] { work(index); });
}

Crew::~Crew() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (auto& thread : threads_)
    thread.join();
}

Clock::duration Crew::run_round() {
  std::unique_lock lock(mu_);
  running_ = static_cast<int>(threads_.size());
  ++round_;
  start_.notify_all();
  done_.wait(lock, [&] { return running_ == 0; });
  const auto first = *std::min_element(started_.begin(), started_.end());
  const auto last = *std::max_element(ended_.begin(), ended_.end());
  return last - first;
}

void Crew::work(int index) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      start_.wait(lock, [&] { return stop_ || round_ != seen; });
      if (stop_) return;
      seen = round_;
    }
    const auto slot = static_cast<std::size_t>(index);
    started_[slot] = Clock::now();
    body_(index);
    ended_[slot] = Clock::now();
    std::lock_guard lock(mu_);
    if (--running_ == 0) done_.notify_one();
  }
}

}  // namespace synchmess::bench
