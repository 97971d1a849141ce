// ResidentGuard: the global memory bound held against what the process really holds.
//
// Quotas count every stored message's real footprint, but an allocator holds more than what is
// live: a page with one live chunk stays resident, and a free chunk is reused only by a request
// that fits it. A sender who interleaves lifetimes and sizes on purpose (fill two groups in
// turn, revoke one, send larger messages, repeat) makes the heap grow while the count stays
// under --max-memory: measured, 15.3 MiB of heap for an 8 MiB bound. The guard closes that
// (SPEC "Limits and quotas": resident memory never passes the bound by more than a fixed,
// documented overhead, whatever any user sends): Quotas asks it before admitting a charge, and
// it compares an estimate of the process's anonymous resident memory with a limit.
//
// The estimate is the last reading plus every byte admitted since; frees never lower it (a free
// may only leave a hole). It is read again once `refresh_bytes` were admitted since the last
// reading, and whenever the estimate would pass the limit; when the reading itself is over, the
// guard has the allocator give free memory back (at most once per `trim_interval`) and reads
// once more. So the anonymous memory passes the limit by at most what other callers admitted
// between a reading and their allocation (one message each, at most).
//
// Contract: admits(bytes) says whether `bytes` more may be allocated now; false is final for
// that call (the caller refuses the send: ENOSPC). The Source's functions must be safe to call
// from any thread; `trim` may be slow (it runs under the guard's reading lock only).
// Thread-safety: any thread, concurrently. One thread reads at a time (a try-lock); the others
// decide on the estimate meanwhile.
// Lifetime: the Source's context outlives the guard; the guard outlives every caller (Quotas).
// Memory ordering: a reading stores reading_ and limit_ (relaxed), then admitted_at_reading_
// (release); a caller loads admitted_at_reading_ (acquire), then reading_: it sees the reading
// that goes with that count or a newer one, never an older reading with a newer count (that
// would shrink the estimate). admitted_ is a relaxed counter; a caller that sees a count newer than
// its own treats the bytes since as 0.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace synchmess::core {

class ResidentGuard {
 public:
  struct Source {
    // The process's anonymous resident memory now, in bytes.
    uint64_t (*anon_bytes)(void* context) noexcept;
    // Asks the allocator to give its free memory back to the system (malloc_trim).
    void (*trim)(void* context) noexcept;
    // The most anon_bytes() may be, now (it may grow with the number of groups); asked at
    // each reading.
    uint64_t (*limit)(void* context) noexcept;
    // A monotonic clock, for the trim interval.
    std::chrono::steady_clock::time_point (*now)(void* context) noexcept;
    void* context;
  };

  struct Settings {
    uint64_t refresh_bytes = uint64_t{1} << 20;
    std::chrono::milliseconds trim_interval{1000};
  };

  ResidentGuard(Source source, Settings settings) noexcept;
  explicit ResidentGuard(Source source) noexcept : ResidentGuard(source, Settings{}) {}
  ResidentGuard(const ResidentGuard&) = delete;
  ResidentGuard& operator=(const ResidentGuard&) = delete;

  bool admits(uint64_t bytes) noexcept;

  // For tests and the server's log: the last reading and the readings/trims made so far.
  uint64_t last_reading() const noexcept { return reading_.load(std::memory_order_relaxed); }
  uint64_t readings() const noexcept { return readings_.load(std::memory_order_relaxed); }
  uint64_t trims() const noexcept { return trims_.load(std::memory_order_relaxed); }

 private:
  struct Reading {
    uint64_t held;
    uint64_t limit;
  };
  // Under reading_mu_: reads anew; `own` (the caller's bytes, not yet allocated) stays counted.
  Reading read(uint64_t own) noexcept;

  const Source source_;
  const Settings settings_;
  std::atomic<uint64_t> admitted_{0};  // every byte ever admitted (wraps harmlessly)
  std::atomic<uint64_t> admitted_at_reading_{0};
  std::atomic<uint64_t> reading_{0};
  std::atomic<uint64_t> limit_{0};  // as of the last reading
  std::atomic<uint64_t> readings_{0};
  std::atomic<uint64_t> trims_{0};
  std::mutex reading_mu_;
  std::chrono::steady_clock::time_point last_trim_{};  // under reading_mu_
};

}  // namespace synchmess::core
