#include "common.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <synchmess/client.h>

namespace synchmess::stress {

int64_t now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string errno_name(int error) {
  const char* name = strerrorname_np(error);
  return name != nullptr ? name : std::to_string(error);
}

void say(const char* format, ...) {
  va_list arguments;
  va_start(arguments, format);
  std::vfprintf(stdout, format, arguments);
  va_end(arguments);
  std::fflush(stdout);
}

namespace {

std::optional<long> count_entries(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return std::nullopt;
  long count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count;
}

}  // namespace

ProcSample sample_process(pid_t pid) {
  ProcSample sample;
  if (pid <= 0) return sample;
  const std::string base = "/proc/" + std::to_string(pid);
  {
    std::ifstream stat_file(base + "/stat");
    std::string line;
    if (std::getline(stat_file, line)) {
      // Fields after the command name, which is in parentheses and may hold spaces.
      const auto close = line.rfind(')');
      if (close != std::string::npos) {
        std::istringstream fields(line.substr(close + 2));
        std::vector<std::string> values;
        std::string value;
        while (fields >> value)
          values.push_back(value);
        // values[0] is field 3 (state); utime is field 14, stime field 15.
        if (values.size() > 13) {
          const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
          const double utime = std::strtod(values[11].c_str(), nullptr) / tick;
          const double stime = std::strtod(values[12].c_str(), nullptr) / tick;
          sample.utime_s = utime;
          sample.stime_s = stime;
          sample.cpu_s = utime + stime;
        }
      }
    }
  }
  {
    std::ifstream status(base + "/status");
    std::string line;
    while (std::getline(status, line)) {
      const auto value_of = [&line](const char* key) -> std::optional<uint64_t> {
        const std::size_t length = std::strlen(key);
        if (line.compare(0, length, key) != 0) return std::nullopt;
        return std::strtoull(line.c_str() + length, nullptr, 10);
      };
      if (auto rss = value_of("VmRSS:")) sample.rss_kib = rss;
      if (auto hwm = value_of("VmHWM:")) sample.hwm_kib = hwm;
    }
  }
  sample.threads = count_entries(base + "/task");
  if (auto fds = count_entries(base + "/fd")) sample.fds = static_cast<uint64_t>(*fds);
  return sample;
}

std::string format_kib(std::optional<uint64_t> kib) {
  if (!kib) return "n/a";
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(*kib) / 1024.0);
  return text;
}

std::string format_seconds(std::optional<double> seconds) {
  if (!seconds) return "n/a";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f s", *seconds);
  return text;
}

std::string format_ns(double ns) {
  char text[32];
  const double magnitude = ns < 0 ? -ns : ns;
  if (magnitude >= 1e9) {
    std::snprintf(text, sizeof text, "%.2f s", ns / 1e9);
  } else if (magnitude >= 1e6) {
    std::snprintf(text, sizeof text, "%.2f ms", ns / 1e6);
  } else if (magnitude >= 1e3) {
    std::snprintf(text, sizeof text, "%.0f us", ns / 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.0f ns", ns);
  }
  return text;
}

std::string format_count(std::optional<long> count) {
  return count ? std::to_string(*count) : "n/a";
}

std::string format_rate(double per_second) {
  char text[32];
  if (per_second >= 1e6) {
    std::snprintf(text, sizeof text, "%.2fM", per_second / 1e6);
  } else if (per_second >= 1e3) {
    std::snprintf(text, sizeof text, "%.1fk", per_second / 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.0f", per_second);
  }
  return text;
}

int64_t percentile(std::vector<int64_t>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  // Nearest rank: the smallest value with at least p % of the values at or below it.
  std::size_t rank =
      static_cast<std::size_t>(p / 100.0 * static_cast<double>(values.size()) + 0.999999999);
  rank = std::clamp<std::size_t>(rank, 1, values.size());
  return values[rank - 1];
}

bool parse_number(const char* text, long min, long max, long& out) {
  if (text == nullptr || *text < '0' || *text > '9') return false;
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min || value > max) return false;
  out = value;
  return true;
}

bool take_numeric_option(const char* program, std::span<const NumericOption> options, int id,
                         const char* value, const char* spelled) {
  for (const NumericOption& option : options) {
    if (option.id != id) continue;
    if (parse_number(value, option.min, option.max, *option.target)) return true;
    std::fprintf(stderr, "%s: %s takes a number from %ld to %ld, not '%s'\n", program, option.name,
                 option.min, option.max, value);
    return false;
  }
  std::fprintf(stderr, "%s: unknown option or missing value: %s\nTry '%s --help'.\n", program,
               spelled, program);
  return false;
}

std::string Groups::name(std::size_t index) const {
  return prefix_ + "-" + std::to_string(index);
}

bool Groups::install(std::size_t count) {
  while (installed_ < count) {
    int created = 0;
    if (synch_install_group(name(installed_).c_str(), nullptr, 0, &created) != 0) return false;
    if (created != 1) {
      // The name existed already (somebody else's group): refuse rather than measure it, and
      // leave it alone (not counted, so never removed by us).
      errno = EEXIST;
      return false;
    }
    ++installed_;
  }
  return true;
}

std::vector<int> Groups::open_all() const {
  std::vector<int> fds;
  for (std::size_t i = 0; i < installed_; ++i)
    fds.push_back(synch_open_group(name(i).c_str(), O_RDWR));
  return fds;
}

int Groups::remove_all() noexcept {
  int failures = 0;
  while (installed_ > 0) {
    --installed_;
    if (synch_remove_group(name(installed_).c_str()) != 0) ++failures;
  }
  return failures;
}

}  // namespace synchmess::stress
