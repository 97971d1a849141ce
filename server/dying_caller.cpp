#include "server/dying_caller.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <memory>
#include <mutex>
#include <vector>

namespace synchmess::server {
namespace {

constexpr uint64_t bit(int signal) noexcept {
  return uint64_t{1} << (signal - 1);
}

// Signals whose default action is to terminate or dump core: all but those that are ignored
// (SIGCHLD, SIGURG, SIGWINCH), continue (SIGCONT) or stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU)
// by default. Real-time signals terminate by default.
constexpr uint64_t kDefaultFatal = ~(bit(SIGCHLD) | bit(SIGURG) | bit(SIGWINCH) | bit(SIGCONT) |
                                     bit(SIGSTOP) | bit(SIGTSTP) | bit(SIGTTIN) | bit(SIGTTOU));

// The hexadecimal value of the line "<key>\t<hex>" in `status`.
std::optional<uint64_t> mask_of(std::string_view status, std::string_view key) noexcept {
  size_t at = 0;
  for (;;) {
    at = status.find(key, at);
    if (at == std::string_view::npos) return std::nullopt;
    if (at == 0 || status[at - 1] == '\n') break;
    at += key.size();
  }
  size_t begin = at + key.size();
  while (begin < status.size() && (status[begin] == ' ' || status[begin] == '\t'))
    ++begin;
  uint64_t value = 0;
  const char* first = status.data() + begin;
  const char* last = status.data() + status.size();
  const auto [end, error] = std::from_chars(first, last, value, 16);
  if (error != std::errc{} || end == first || (end != last && *end != '\n')) return std::nullopt;
  return value;
}

// Descriptors of /proc/<tid>/stat, kept for the threads that park most often (a consumer parks
// at every read that finds the group empty): a pread() costs a third of open+read+close. A
// descriptor is shared while in use, so an eviction never closes it under a reader. A thread id
// that was reused by a new thread reads ESRCH through the old descriptor: it is reopened.
class StatFiles {
 public:
  static StatFiles& instance() noexcept {
    static StatFiles files;
    return files;
  }

  std::optional<ThreadStat> read(pid_t tid) noexcept {
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::shared_ptr<Descriptor> file = find_or_open(tid, attempt > 0);
      if (!file) return std::nullopt;
      char text[1024];
      const ssize_t n = ::pread(file->fd, text, sizeof text, 0);
      if (n > 0) return parse_thread_stat(std::string_view(text, static_cast<size_t>(n)));
    }
    return std::nullopt;
  }

 private:
  static constexpr size_t kCapacity = 64;
  struct Descriptor {
    explicit Descriptor(int descriptor) noexcept : fd(descriptor) {}
    ~Descriptor() { ::close(fd); }
    Descriptor(const Descriptor&) = delete;
    Descriptor& operator=(const Descriptor&) = delete;
    const int fd;
  };
  struct Entry {
    pid_t tid;
    uint64_t last_use;
    std::shared_ptr<Descriptor> file;
  };

  std::shared_ptr<Descriptor> find_or_open(pid_t tid, bool reopen) noexcept {
    try {
      {
        std::lock_guard lock(mu_);
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
          if (it->tid != tid) continue;
          if (reopen) {
            entries_.erase(it);
            break;
          }
          it->last_use = ++clock_;
          return it->file;
        }
      }
      char path[40];
      std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(tid));
      const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) return nullptr;
      auto file = std::make_shared<Descriptor>(fd);
      std::lock_guard lock(mu_);
      if (entries_.size() >= kCapacity) {
        auto oldest = entries_.begin();
        for (auto it = entries_.begin(); it != entries_.end(); ++it)
          if (it->last_use < oldest->last_use) oldest = it;
        entries_.erase(oldest);
      }
      entries_.push_back(Entry{tid, ++clock_, file});
      return file;
    } catch (...) {  // out of memory: no descriptor, /proc cannot tell
      return nullptr;
    }
  }

  std::mutex mu_;
  uint64_t clock_ = 0;          // guarded by mu_
  std::vector<Entry> entries_;  // guarded by mu_
};

std::optional<SignalMasks> read_signal_masks(pid_t tid) noexcept {
  char path[40];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(tid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char text[4096];  // the masks come in the first 1.5 KiB
  const ssize_t size = ::read(fd, text, sizeof text);
  ::close(fd);
  if (size <= 0) return std::nullopt;
  return parse_signal_masks(std::string_view(text, static_cast<size_t>(size)));
}

}  // namespace

std::optional<SignalMasks> parse_signal_masks(std::string_view status) noexcept {
  const auto pending = mask_of(status, "SigPnd:");
  const auto shared = mask_of(status, "ShdPnd:");
  const auto blocked = mask_of(status, "SigBlk:");
  const auto ignored = mask_of(status, "SigIgn:");
  const auto caught = mask_of(status, "SigCgt:");
  if (!pending || !shared || !blocked || !ignored || !caught) return std::nullopt;
  return SignalMasks{*pending, *shared, *blocked, *ignored, *caught};
}

bool fatal_signal_pending(const SignalMasks& masks) noexcept {
  if ((masks.pending & bit(SIGKILL)) != 0) return true;  // a group kill, or an exit in progress
  const uint64_t deliverable = (masks.pending | masks.shared_pending) & ~masks.blocked;
  return (deliverable & ~masks.ignored & ~masks.caught & kDefaultFatal) != 0;
}

std::optional<ThreadStat> parse_thread_stat(std::string_view stat) noexcept {
  // "pid (comm) state f4 ... f30 signal ...": comm may hold spaces and parentheses, so fields
  // are counted from the last ')'. After it, field 3 (state) is token 0, field 31 (signal) 28.
  const size_t paren = stat.rfind(')');
  if (paren == std::string_view::npos) return std::nullopt;
  std::string_view rest = stat.substr(paren + 1);
  ThreadStat result;
  for (int token = 0; token <= 28; ++token) {
    const size_t begin = rest.find_first_not_of(' ');
    if (begin == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(begin);
    const size_t end = std::min(rest.find(' '), rest.size());
    const std::string_view field = rest.substr(0, end);
    if (token == 0) {
      if (field.size() != 1) return std::nullopt;
      result.state = field[0];
    } else if (token == 28) {
      const auto [last, error] =
          std::from_chars(field.data(), field.data() + field.size(), result.pending);
      if (error != std::errc{} || last != field.data() + field.size()) return std::nullopt;
    }
    rest.remove_prefix(end);
  }
  return result;
}

bool thread_dying(pid_t tid) noexcept {
  if (tid <= 0) return false;
  const auto stat = StatFiles::instance().read(tid);
  if (!stat) return false;
  if ((stat->pending & bit(SIGKILL)) != 0) return true;
  if (stat->state == 'S') return false;
  const auto masks = read_signal_masks(tid);
  return masks && fatal_signal_pending(*masks);
}

}  // namespace synchmess::server
