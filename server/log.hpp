// Logging to stderr with fmt: one line per event, with a monotonic timestamp and a level.
#pragma once

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

namespace synchmess::server::log {

enum class Level { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

Level level() noexcept;
void set_level(Level level) noexcept;
// Writes one whole line (a single write(2), so lines of concurrent threads never mix).
void write_line(Level level, std::string_view text) noexcept;

template <class... Args>
void emit(Level at, fmt::format_string<Args...> format, Args&&... args) noexcept {
  if (static_cast<int>(at) > static_cast<int>(level())) return;
  try {
    write_line(at, fmt::format(format, std::forward<Args>(args)...));
  } catch (...) {
    write_line(Level::kError, "log: formatting failed");
  }
}

// A token bucket for records that users can cause (installs, refusals at a limit): `burst`
// records at once, then `per_second`. What it holds back is counted, and the next record it lets
// through says how many similar records were suppressed. Thread-safe.
class RateLimit {
 public:
  constexpr RateLimit(double burst, double per_second) noexcept
      : burst_(burst), per_second_(per_second), tokens_(burst) {}
  RateLimit(const RateLimit&) = delete;
  RateLimit& operator=(const RateLimit&) = delete;

  // True when a record may be written now; `suppressed` is then the count held back since the
  // last one that was written (and the count restarts).
  bool admit(uint64_t& suppressed) noexcept;

 private:
  const double burst_;
  const double per_second_;
  std::mutex mu_;
  double tokens_;                                   // guarded by mu_
  std::chrono::steady_clock::time_point refilled_;  // guarded by mu_
  uint64_t suppressed_ = 0;                         // guarded by mu_
};

// emit(), if `limit` admits it, with " (N similar records suppressed)" appended when some were.
template <class... Args>
void limited(RateLimit& limit, Level at, fmt::format_string<Args...> format,
             Args&&... args) noexcept {
  if (static_cast<int>(at) > static_cast<int>(level())) return;
  uint64_t suppressed = 0;
  if (!limit.admit(suppressed)) return;
  try {
    std::string text = fmt::format(format, std::forward<Args>(args)...);
    if (suppressed != 0) text += fmt::format(" ({} similar records suppressed)", suppressed);
    write_line(at, text);
  } catch (...) {
    write_line(Level::kError, "log: formatting failed");
  }
}

template <class... Args>
void error(fmt::format_string<Args...> format, Args&&... args) noexcept {
  emit(Level::kError, format, std::forward<Args>(args)...);
}
template <class... Args>
void warning(fmt::format_string<Args...> format, Args&&... args) noexcept {
  emit(Level::kWarning, format, std::forward<Args>(args)...);
}
template <class... Args>
void info(fmt::format_string<Args...> format, Args&&... args) noexcept {
  emit(Level::kInfo, format, std::forward<Args>(args)...);
}
template <class... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) noexcept {
  emit(Level::kDebug, format, std::forward<Args>(args)...);
}

}  // namespace synchmess::server::log
