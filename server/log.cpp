#include "server/log.hpp"

#include <unistd.h>

#include <chrono>
#include <string>

namespace synchmess::server::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};
const auto g_start = std::chrono::steady_clock::now();

constexpr std::string_view name_of(Level level) noexcept {
  switch (level) {
    case Level::kError:
      return "error";
    case Level::kWarning:
      return "warning";
    case Level::kInfo:
      return "info";
    case Level::kDebug:
      return "debug";
  }
  return "?";
}

}  // namespace

Level level() noexcept {
  return g_level.load(std::memory_order_relaxed);
}
void set_level(Level level) noexcept {
  g_level.store(level, std::memory_order_relaxed);
}

void write_line(Level level, std::string_view text) noexcept {
  try {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - g_start).count();
    const std::string line =
        fmt::format("synchmess-cuse [{:10.3f}] {}: {}\n", seconds, name_of(level), text);
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  } catch (...) {
    // Logging must never take the server down.
  }
}

}  // namespace synchmess::server::log
