// Params: the run-time parameters of /dev/synch/config (the original's /sys attributes).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include <synchmess/synchmess.h>

#include "core/result.hpp"

namespace synchmess::core {

// The text format of /dev/synch/config. Reading prints one `key=value` line per parameter:
//   max_message_size=4096
//   max_storage_size=1048576
// A write carries one or more lines `key=value` (spaces and tabs around key and value, a final
// newline and empty lines are allowed; the last of repeated keys wins). Values are decimal.
// An unknown key, a line without '=', a value that is not a decimal number, zero, or a value out
// of range makes the whole write fail with EINVAL and nothing is applied.
inline constexpr std::string_view kMaxMessageSizeKey = "max_message_size";
// The longest config write accepted (SPEC: longer ones are refused whole, EINVAL).
inline constexpr std::size_t kMaxConfigWrite = 4096;
inline constexpr std::string_view kMaxStorageSizeKey = "max_storage_size";

// Parses config text into changes: fields absent from the text are 0 (leave unchanged).
// Does not check ranges (validate() does).
Result<synch_params> parse_params_text(std::string_view text) noexcept;
std::string format_params_text(const synch_params& params);

// Contract: both values are always in range: 1..SYNCH_MAX_MESSAGE_SIZE_LIMIT and
// 1..SYNCH_MAX_STORAGE_SIZE_LIMIT. set() changes either or both at once, all or nothing.
// Lowering a limit only affects later sends: stored messages stay.
// Memory ordering: readers see each value atomically (relaxed loads: a send racing with a change
// may check against the old or the new value, as with any run-time setting).
class Params {
 public:
  Params() noexcept = default;  // the defaults; set() applies a server's options

  uint64_t max_message_size() const noexcept {
    return max_message_size_.load(std::memory_order_relaxed);
  }
  uint64_t max_storage_size() const noexcept {
    return max_storage_size_.load(std::memory_order_relaxed);
  }
  synch_params get() const noexcept;

  // Checks `changes` (0 = leave unchanged) and applies them together. EINVAL when out of range.
  Status set(const synch_params& changes) noexcept;
  // parse_params_text() + set(); zero values are EINVAL here. `before`/`after` (optional):
  // the values just before and just after, taken under the same lock.
  Status set_text(std::string_view text, synch_params* before = nullptr,
                  synch_params* after = nullptr) noexcept;
  // Sets `replacement` (every field) only if the values are still `expected`: false, nothing
  // done, when they changed meanwhile. For undoing a set_text() (values already checked).
  bool replace_if(const synch_params& expected, const synch_params& replacement) noexcept;
  std::string text() const { return format_params_text(get()); }

  // EINVAL unless every non-zero field is in range.
  static Status validate(const synch_params& changes) noexcept;

 private:
  Status apply(const synch_params& changes, synch_params* before, synch_params* after) noexcept;

  std::mutex set_mu_;  // serializes set(): both fields change together
  std::atomic<uint64_t> max_message_size_{SYNCH_DEFAULT_MAX_MESSAGE_SIZE};
  std::atomic<uint64_t> max_storage_size_{SYNCH_DEFAULT_MAX_STORAGE_SIZE};
};

}  // namespace synchmess::core
