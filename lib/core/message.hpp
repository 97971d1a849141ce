// Message: one write()'s bytes, in one allocation.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <span>

namespace synchmess::core {

class Message;

struct MessageDeleter {
  void operator()(Message* message) const noexcept;
};

using MessagePtr = std::unique_ptr<Message, MessageDeleter>;

// Immutable after creation; the bytes follow the header in the same allocation.
class Message {
 public:
  // Copies `bytes` into a new message; nullptr when memory is exhausted.
  static MessagePtr create(std::span<const std::byte> bytes) noexcept {
    void* memory = ::operator new(sizeof(Message) + bytes.size(), std::nothrow);
    if (memory == nullptr) return nullptr;
    auto* message = new (memory) Message(bytes.size());
    if (!bytes.empty()) std::memcpy(message->bytes(), bytes.data(), bytes.size());
    return MessagePtr(message);
  }

  std::size_t size() const noexcept { return size_; }
  std::span<const std::byte> data() const noexcept { return {bytes(), size_}; }

  // Copies min(size(), out.size()) bytes to `out`; returns the count copied.
  std::size_t copy_to(std::span<std::byte> out) const noexcept {
    const std::size_t count = out.size() < size_ ? out.size() : size_;
    if (count != 0) std::memcpy(out.data(), bytes(), count);
    return count;
  }

 private:
  explicit Message(std::size_t size) noexcept : size_(size) {}
  std::byte* bytes() noexcept { return reinterpret_cast<std::byte*>(this + 1); }
  const std::byte* bytes() const noexcept { return reinterpret_cast<const std::byte*>(this + 1); }

  std::size_t size_;
};

static_assert(alignof(Message) <= alignof(std::max_align_t), "bytes follow the header");

inline void MessageDeleter::operator()(Message* message) const noexcept {
  message->~Message();
  ::operator delete(message);
}

}  // namespace synchmess::core
