// The server's own memory: what receives and removals free goes back to the system
// (MemoryTrimmer), and the global bound holds against what the process really holds
// (ProcessMemoryGuard, a core::ResidentGuard over /proc/self/statm).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "core/params.hpp"
#include "core/quotas.hpp"
#include "core/registry.hpp"
#include "core/resident_guard.hpp"
#include "core/timer_queue.hpp"

namespace synchmess::server {

// Gives the memory that receives and removals free back to the system. glibc's malloc keeps
// freed chunks in its arenas (one per worker thread) and returns only the top of the main heap
// by itself; malloc_trim(0) returns every free page of every arena. Looked at once a second: it
// trims when 1 MiB or more of message memory was freed since the last trim, or groups were
// removed (counted, not sampled: memory held and freed between two looks counts too).
class MemoryTrimmer {
 public:
  // `trim` gives the memory back: malloc_trim(0) unless a test passes its own.
  MemoryTrimmer(core::TimerQueue& timers, const core::Quotas& quotas,
                const core::Registry& registry, void (*trim)() = nullptr) noexcept;
  ~MemoryTrimmer();
  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;

 private:
  static constexpr std::chrono::seconds kPeriod{1};
  static constexpr uint64_t kWorthTrimming = 1 << 20;

  static void tick(void* self) noexcept;
  void check() noexcept;

  core::TimerQueue& timers_;
  const core::Quotas& quotas_;
  const core::Registry& registry_;
  void (*const trim_)();
  core::Timer timer_;
  uint64_t freed_at_trim_ = 0;  // only the timer touches these
  uint64_t removals_seen_ = 0;
};

// The global bound held against the process's anonymous resident memory (the heap: messages,
// and whatever else the server allocates for its users), installed into the Quotas for its
// lifetime. The limit is the documented one (README "Limits and quotas"): the anonymous memory
// when the devices are served, plus --max-memory and a sixteenth of it (what malloc keeps
// between live chunks in ordinary use), plus kSlack, plus for each thread that serves
// requests kPerThread and twice max_message_size (its stack, and its request and pop buffers,
// which fill as far as the largest message they carried), plus kPerGroup for each group.
// Not made under AddressSanitizer or ThreadSanitizer: their allocators and shadow memory are
// not what a release server holds (create() answers nullptr, and the count alone bounds).
class ProcessMemoryGuard {
 public:
  static constexpr uint64_t kSlack = uint64_t{4} << 20;
  static constexpr uint64_t kPerGroup = uint64_t{32} << 10;
  static constexpr uint64_t kPerThread = uint64_t{64} << 10;
  // False in a sanitizer build: create() then makes no guard.
  static const bool kAvailable;

  // nullptr when !kAvailable or /proc/self/statm cannot be read. `threads`: those that serve
  // requests (workers, the FUSE reader).
  static std::unique_ptr<ProcessMemoryGuard> create(core::Quotas& quotas,
                                                    const core::Registry& registry,
                                                    const core::Params& params, unsigned threads);
  ~ProcessMemoryGuard();
  ProcessMemoryGuard(const ProcessMemoryGuard&) = delete;
  ProcessMemoryGuard& operator=(const ProcessMemoryGuard&) = delete;

  const core::ResidentGuard& guard() const noexcept { return guard_; }
  uint64_t start_bytes() const noexcept { return start_; }

 private:
  ProcessMemoryGuard(core::Quotas& quotas, const core::Registry& registry,
                     const core::Params& params, int statm_fd, uint64_t start,
                     unsigned threads) noexcept;
  static uint64_t anon_bytes(int statm_fd) noexcept;
  static core::ResidentGuard::Source source(ProcessMemoryGuard* self) noexcept;

  core::Quotas& quotas_;
  const core::Registry& registry_;
  const core::Params& params_;
  const int statm_fd_;
  const uint64_t start_;
  const unsigned threads_;
  core::ResidentGuard guard_;
};

}  // namespace synchmess::server
