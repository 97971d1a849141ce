#include "core/params.hpp"

#include <charconv>

namespace synchmess::core {
namespace {

constexpr Error kInvalid{std::errc::invalid_argument};

std::string_view trim(std::string_view text) noexcept {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

Result<uint64_t> parse_decimal(std::string_view text) noexcept {
  if (text.empty()) return kInvalid;
  for (const char c : text) {
    if (c < '0' || c > '9') return kInvalid;  // no sign, no hex, no spaces inside
  }
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return kInvalid;  // overflow
  return value;
}

}  // namespace

Result<synch_params> parse_params_text(std::string_view text) noexcept {
  synch_params changes{};
  bool any = false;
  while (!text.empty()) {
    const auto newline = text.find('\n');
    const std::string_view line = trim(text.substr(0, newline));
    text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
    if (line.empty()) continue;
    const auto equals = line.find('=');
    if (equals == std::string_view::npos) return kInvalid;
    const std::string_view key = trim(line.substr(0, equals));
    auto value = parse_decimal(trim(line.substr(equals + 1)));
    if (!value) return kInvalid;
    if (value.value() == 0) return kInvalid;  // zero is never a valid limit
    if (key == kMaxMessageSizeKey) {
      changes.max_message_size = value.value();
    } else if (key == kMaxStorageSizeKey) {
      changes.max_storage_size = value.value();
    } else {
      return kInvalid;
    }
    any = true;
  }
  if (!any) return kInvalid;  // an empty write changes nothing and is most likely a mistake
  return changes;
}

std::string format_params_text(const synch_params& params) {
  std::string text;
  text.append(kMaxMessageSizeKey).append("=").append(std::to_string(params.max_message_size));
  text.append("\n");
  text.append(kMaxStorageSizeKey).append("=").append(std::to_string(params.max_storage_size));
  text.append("\n");
  return text;
}

Status Params::validate(const synch_params& changes) noexcept {
  if (changes.max_message_size > SYNCH_MAX_MESSAGE_SIZE_LIMIT) return kInvalid;
  if (changes.max_storage_size > SYNCH_MAX_STORAGE_SIZE_LIMIT) return kInvalid;
  return {};
}

synch_params Params::get() const noexcept {
  return synch_params{.max_message_size = max_message_size(),
                      .max_storage_size = max_storage_size()};
}

Status Params::set(const synch_params& changes) noexcept {
  return apply(changes, nullptr, nullptr);
}

Status Params::apply(const synch_params& changes, synch_params* before,
                     synch_params* after) noexcept {
  if (auto valid = validate(changes); !valid) return valid;
  std::lock_guard lock(set_mu_);
  if (before != nullptr) *before = get();
  if (changes.max_message_size != 0) {
    max_message_size_.store(changes.max_message_size, std::memory_order_relaxed);
  }
  if (changes.max_storage_size != 0) {
    max_storage_size_.store(changes.max_storage_size, std::memory_order_relaxed);
  }
  if (after != nullptr) *after = get();
  return {};
}

Status Params::set_text(std::string_view text, synch_params* before, synch_params* after) noexcept {
  auto changes = parse_params_text(text);
  if (!changes) return make_error(changes.error());
  return apply(changes.value(), before, after);
}

bool Params::replace_if(const synch_params& expected, const synch_params& replacement) noexcept {
  std::lock_guard lock(set_mu_);
  const synch_params now = get();
  if (now.max_message_size != expected.max_message_size ||
      now.max_storage_size != expected.max_storage_size) {
    return false;
  }
  max_message_size_.store(replacement.max_message_size, std::memory_order_relaxed);
  max_storage_size_.store(replacement.max_storage_size, std::memory_order_relaxed);
  return true;
}

}  // namespace synchmess::core
