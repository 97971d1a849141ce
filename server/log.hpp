// Logging to stderr with fmt: one line per event, with a monotonic timestamp and a level.
#pragma once

#include <fmt/core.h>

#include <atomic>
#include <cstdio>
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
