#include "server/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
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

// syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG.
constexpr int priority_of(Level level) noexcept {
  switch (level) {
    case Level::kError:
      return 3;
    case Level::kWarning:
      return 4;
    case Level::kInfo:
      return 6;
    case Level::kDebug:
      return 7;
  }
  return 6;
}

// True when stderr is the journal's stream: systemd sets JOURNAL_STREAM to its "device:inode".
// Then each line starts with "<priority>" (sd-daemon(3)), which journald files as the record's
// priority and strips, and the timestamp and program name are left to journald.
bool stderr_is_journal() noexcept {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long device = 0;
  unsigned long long inode = 0;
  if (std::sscanf(stream, "%llu:%llu", &device, &inode) != 2) return false;
  struct stat st {};
  return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == device && st.st_ino == inode;
}

}  // namespace

Level level() noexcept {
  return g_level.load(std::memory_order_relaxed);
}
void set_level(Level level) noexcept {
  g_level.store(level, std::memory_order_relaxed);
}

bool RateLimit::admit(uint64_t& suppressed) noexcept {
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (refilled_ != std::chrono::steady_clock::time_point{}) {
    const double elapsed = std::chrono::duration<double>(now - refilled_).count();
    tokens_ = std::min(burst_, tokens_ + elapsed * per_second_);
  }
  refilled_ = now;
  if (tokens_ < 1.0) {
    ++suppressed_;
    return false;
  }
  tokens_ -= 1.0;
  suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

void write_line(Level level, std::string_view text) noexcept {
  try {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - g_start).count();
    static const bool journal = stderr_is_journal();  // decided once, at the first record
    std::string line = journal
                           ? fmt::format("<{}>{}: ", priority_of(level), name_of(level))
                           : fmt::format("synchmess-cuse [{:10.3f}] {}: ", seconds, name_of(level));
    // One record, one line: control characters in the text (a newline in config text, say)
    // are written as escapes.
    for (const char c : text) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        line += c == '\n' ? std::string("\\n")
                          : fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
      } else {
        line += c;
      }
    }
    line += '\n';
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  } catch (...) {
    // Logging must never take the server down.
  }
}

}  // namespace synchmess::server::log
