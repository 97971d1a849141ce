#include "server/memory.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>

namespace synchmess::server {

MemoryTrimmer::MemoryTrimmer(core::TimerQueue& timers, const core::Quotas& quotas,
                             const core::Registry& registry, void (*trim)()) noexcept
    : timers_(timers),
      quotas_(quotas),
      registry_(registry),
      trim_(trim != nullptr ? trim : [] { malloc_trim(0); }),
      timer_(&MemoryTrimmer::tick, this) {
  timers_.arm(timer_, timers_.now() + kPeriod);
}

MemoryTrimmer::~MemoryTrimmer() {
  timers_.cancel_sync(timer_);
}

void MemoryTrimmer::tick(void* self) noexcept {
  static_cast<MemoryTrimmer*>(self)->check();
}

void MemoryTrimmer::check() noexcept {
  const uint64_t freed = quotas_.memory_freed();
  const uint64_t removals = registry_.removals();
  if (freed - freed_at_trim_ >= kWorthTrimming || removals != removals_seen_) {
    trim_();
    freed_at_trim_ = freed;
  }
  removals_seen_ = removals;
  timers_.arm(timer_, timers_.now() + kPeriod);
}

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

}  // namespace

const bool ProcessMemoryGuard::kAvailable = !kSanitized;

uint64_t ProcessMemoryGuard::anon_bytes(int statm_fd) noexcept {
  // statm: size resident shared ... in pages; shared = file-backed + shmem (the regions), so
  // resident - shared is the anonymous memory: the heap, stacks and the libraries' data.
  char text[128];
  const ssize_t length = ::pread(statm_fd, text, sizeof text - 1, 0);
  if (length <= 0) return 0;
  text[length] = '\0';
  unsigned long long size = 0, resident = 0, shared = 0;
  if (std::sscanf(text, "%llu %llu %llu", &size, &resident, &shared) != 3) return 0;
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return resident > shared ? (resident - shared) * page : 0;
}

core::ResidentGuard::Source ProcessMemoryGuard::source(ProcessMemoryGuard* self) noexcept {
  return {
      .anon_bytes =
          [](void* context) noexcept {
            return anon_bytes(static_cast<ProcessMemoryGuard*>(context)->statm_fd_);
          },
      .trim = [](void*) noexcept { malloc_trim(0); },
      .limit =
          [](void* context) noexcept {
            const auto* guard = static_cast<ProcessMemoryGuard*>(context);
            const uint64_t max_memory = guard->quotas_.limits().max_memory;
            return guard->start_ + max_memory + max_memory / 16 + kSlack +
                   (kPerThread + 2 * guard->params_.max_message_size()) * guard->threads_ +
                   kPerGroup * guard->registry_.size();
          },
      .now = [](void*) noexcept { return std::chrono::steady_clock::now(); },
      .context = self,
  };
}

std::unique_ptr<ProcessMemoryGuard> ProcessMemoryGuard::create(core::Quotas& quotas,
                                                               const core::Registry& registry,
                                                               const core::Params& params,
                                                               unsigned threads) {
  if (kSanitized) return nullptr;
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  const uint64_t start = anon_bytes(fd);
  if (start == 0) {
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<ProcessMemoryGuard>(
      new ProcessMemoryGuard(quotas, registry, params, fd, start, threads));
}

ProcessMemoryGuard::ProcessMemoryGuard(core::Quotas& quotas, const core::Registry& registry,
                                       const core::Params& params, int statm_fd, uint64_t start,
                                       unsigned threads) noexcept
    : quotas_(quotas),
      registry_(registry),
      params_(params),
      statm_fd_(statm_fd),
      start_(start),
      threads_(threads),
      guard_(source(this)) {
  quotas_.set_guard(&guard_);
}

ProcessMemoryGuard::~ProcessMemoryGuard() {
  quotas_.set_guard(nullptr);
  ::close(statm_fd_);
}

}  // namespace synchmess::server
