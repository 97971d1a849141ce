// Shared pieces of synchmess_stress and synchmess_scale: clocks, the server's /proc figures,
// percentiles, command-line numbers, and groups installed for the length of a run.
//
// Both programs talk to a running server through the client library (include/synchmess/client.h),
// so SYNCHMESS_DIR picks the device directory (a FUSE mount) exactly as for any client.
#ifndef SYNCHMESS_BENCHMARKS_STRESS_COMMON_HPP
#define SYNCHMESS_BENCHMARKS_STRESS_COMMON_HPP

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace synchmess::stress {

// CLOCK_MONOTONIC in nanoseconds: the clock of every timestamp in a message and of every
// interval printed.
int64_t now_ns() noexcept;

// "EAGAIN" for EAGAIN, or the number.
std::string errno_name(int error);

// One line on stdout, flushed (benchmark.sh shows the output as it comes).
void say(const char* format, ...) __attribute__((format(printf, 1, 2)));

// What /proc says about a process (the server). Every field is empty when /proc/<pid> could not
// be read (the process is gone, or no pid was given).
struct ProcSample {
  std::optional<double> cpu_s;      // utime + stime of /proc/<pid>/stat, seconds (all threads)
  std::optional<double> utime_s;    // utime alone
  std::optional<double> stime_s;    // stime alone
  std::optional<long> threads;      // entries of /proc/<pid>/task
  std::optional<uint64_t> rss_kib;  // VmRSS of /proc/<pid>/status
  std::optional<uint64_t> hwm_kib;  // VmHWM (peak RSS) of /proc/<pid>/status
  std::optional<uint64_t> fds;      // entries of /proc/<pid>/fd
};
ProcSample sample_process(pid_t pid);

// "12.3 MiB", "1.42 s", "250 us" ... or "n/a" for an empty value.
std::string format_kib(std::optional<uint64_t> kib);
std::string format_seconds(std::optional<double> seconds);
std::string format_ns(double ns);
std::string format_count(std::optional<long> count);
std::string format_rate(double per_second);

// Nearest-rank percentile (p in 0..100) of values; sorts them. 0 for an empty vector.
int64_t percentile(std::vector<int64_t>& values, double p);

// Strict decimal numbers for options: false on anything else (sign, junk, overflow, range).
bool parse_number(const char* text, long min, long max, long& out);

// A numeric command-line option: its getopt_long id, how it is spelled, its range, where its
// value goes.
struct NumericOption {
  int id;
  const char* name;
  long min, max;
  long* target;
};
// Stores `value` in the option of getopt_long's `id`. Returns true, or prints what is wrong
// (`spelled` is the argument as given: an unknown option, or a value out of range) as
// "PROGRAM: ..." on stderr and returns false (the caller exits 2).
bool take_numeric_option(const char* program, std::span<const NumericOption> options, int id,
                         const char* value, const char* spelled);

// The groups of one run, removed by the destructor (and by remove_all()). Names are
// "<prefix>-<index>". install() reports the error of the failing call (errno).
class Groups {
 public:
  explicit Groups(std::string prefix) : prefix_(std::move(prefix)) {}
  Groups(const Groups&) = delete;
  Groups& operator=(const Groups&) = delete;
  ~Groups() { remove_all(); }

  std::string name(std::size_t index) const;
  // Installs groups until there are `count`; false (errno set) on the first failure.
  bool install(std::size_t count);
  // Opens every installed group O_RDWR; -1 entries where open failed.
  std::vector<int> open_all() const;
  // Removes every group this object installed; returns how many removals failed.
  int remove_all() noexcept;
  std::size_t size() const { return installed_; }

 private:
  std::string prefix_;
  std::size_t installed_ = 0;
};

}  // namespace synchmess::stress

#endif  // SYNCHMESS_BENCHMARKS_STRESS_COMMON_HPP
