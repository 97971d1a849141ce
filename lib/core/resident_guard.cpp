#include "core/resident_guard.hpp"

namespace synchmess::core {

ResidentGuard::ResidentGuard(Source source, Settings settings) noexcept
    : source_(source), settings_(settings) {
  std::lock_guard lock(reading_mu_);
  last_trim_ = source_.now(source_.context) - settings_.trim_interval;
  read(0);
}

ResidentGuard::Reading ResidentGuard::read(uint64_t own) noexcept {
  // The count first: what is admitted while the reading is taken counts after it too.
  const uint64_t admitted = admitted_.load(std::memory_order_relaxed) - own;
  const Reading reading{source_.anon_bytes(source_.context), source_.limit(source_.context)};
  reading_.store(reading.held, std::memory_order_relaxed);
  limit_.store(reading.limit, std::memory_order_relaxed);
  admitted_at_reading_.store(admitted, std::memory_order_release);
  readings_.fetch_add(1, std::memory_order_relaxed);
  return reading;
}

namespace {
bool within(uint64_t held, uint64_t more, uint64_t limit) noexcept {
  return held <= limit && more <= limit - held;
}
}  // namespace

bool ResidentGuard::admits(uint64_t bytes) noexcept {
  const uint64_t admitted = admitted_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  const uint64_t at_reading = admitted_at_reading_.load(std::memory_order_acquire);
  const uint64_t reading = reading_.load(std::memory_order_relaxed);
  // Signed distance: a reading taken after our add may count past `admitted`.
  const auto since_signed = static_cast<int64_t>(admitted - at_reading);
  const uint64_t since = since_signed > 0 ? static_cast<uint64_t>(since_signed) : 0;
  const bool fits = within(reading, since, limit_.load(std::memory_order_relaxed));
  if (fits && since < settings_.refresh_bytes) return true;

  std::unique_lock lock(reading_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return fits;  // another thread is reading: the estimate decides
  Reading now_held = read(bytes);
  if (within(now_held.held, bytes, now_held.limit)) return true;
  const auto now = source_.now(source_.context);
  if (now - last_trim_ < settings_.trim_interval) return false;
  last_trim_ = now;
  source_.trim(source_.context);
  trims_.fetch_add(1, std::memory_order_relaxed);
  now_held = read(bytes);
  return within(now_held.held, bytes, now_held.limit);
}

}  // namespace synchmess::core
