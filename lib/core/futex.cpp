#include "core/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

namespace synchmess::core {
namespace {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t),
              "the kernel reads the futex word as a plain 32-bit integer");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "a futex word must be lock-free");

long futex(const std::atomic<uint32_t>& word, int op, uint32_t value,
           const timespec* timeout) noexcept {
  // The kernel only reads the word; the cast drops const for the system call signature.
  auto* address = const_cast<std::atomic<uint32_t>*>(&word);
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(address), op | FUTEX_PRIVATE_FLAG, value,
                 timeout, nullptr, 0);
}

}  // namespace

FutexWaitResult futex_wait(const std::atomic<uint32_t>& word, uint32_t expected,
                           std::optional<std::chrono::nanoseconds> timeout) noexcept {
  timespec relative{};
  const timespec* relative_ptr = nullptr;
  if (timeout) {
    const auto ns = timeout->count() < 0 ? 0 : timeout->count();
    relative.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    relative.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    relative_ptr = &relative;
  }
  if (futex(word, FUTEX_WAIT, expected, relative_ptr) == 0) return FutexWaitResult::kWoken;
  switch (errno) {
    case EAGAIN:
      return FutexWaitResult::kValueChanged;
    case ETIMEDOUT:
      return FutexWaitResult::kTimedOut;
    case EINTR:
      return FutexWaitResult::kInterrupted;
    default:
      // EFAULT/EINVAL cannot happen with a valid aligned word; treat as a spurious wake-up so
      // callers re-check their condition instead of sleeping forever.
      return FutexWaitResult::kWoken;
  }
}

int futex_wake(const std::atomic<uint32_t>& word, int count) noexcept {
  const long woken = futex(word, FUTEX_WAKE, static_cast<uint32_t>(count), nullptr);
  return woken < 0 ? 0 : static_cast<int>(woken);
}

}  // namespace synchmess::core
