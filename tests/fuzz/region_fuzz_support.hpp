// What the two region fuzzers share (region_fuzzer, region_server_fuzzer): the input as a byte
// stream, one timer queue and parameter set for the whole run, and how a check fails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>

#include "core/params.hpp"
#include "core/timer_queue.hpp"

namespace synchmess::fuzz {

// A failed check: the message, then abort() (libFuzzer keeps the input).
[[noreturn]] inline void broken(const std::string& what) {
  std::fprintf(stderr, "%s\n", what.c_str());
  std::abort();
}

// The input read as a little-endian byte stream; zeros once it is used up.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  uint64_t bytes(int count) {
    uint64_t value = 0;
    for (int i = 0; i < count; ++i)
      value |= uint64_t{byte()} << (8 * i);
    return value;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

// What lives for the whole run: one timer queue, one parameter set.
struct World {
  std::unique_ptr<core::TimerQueue> timers = [] {
    auto created = core::TimerQueue::create();
    if (!created) broken("no timerfd");
    return std::move(created).value();
  }();
  core::Params params;
};

inline World& world() {
  static World instance;
  return instance;
}

inline std::span<const std::byte> bytes_of(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

}  // namespace synchmess::fuzz
