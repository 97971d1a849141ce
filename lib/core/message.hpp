// Message: one write()'s bytes, in one allocation, and the quota charge it carries.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>

#include "core/quotas.hpp"

namespace synchmess::core {

class Message;

struct MessageDeleter {
  void operator()(Message* message) const noexcept;
};

using MessagePtr = std::unique_ptr<Message, MessageDeleter>;

// What a stored message was charged to (Quotas::charge_memory), given back when it is freed.
struct QuotaCharge {
  Quotas* quotas = nullptr;  // nullptr: nothing charged
  uid_t uid = 0;
  uint32_t bytes = 0;
};

// Immutable after creation; the bytes follow the header in the same allocation. Freeing a
// message (whoever does it: the reader after its reply, a revoke, a removal) gives its charge
// back, so no path can forget to.
class Message {
 public:
  // Copies `bytes` into a new message that carries `charge`; nullptr when memory is exhausted
  // (the charge is then not taken over: the caller still holds it).
  static MessagePtr create(std::span<const std::byte> bytes, QuotaCharge charge = {}) noexcept {
    void* memory = ::operator new(sizeof(Message) + bytes.size(), std::nothrow);
    if (memory == nullptr) return nullptr;
    auto* message = new (memory) Message(bytes.size(), charge);
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
  friend struct MessageDeleter;
  Message(std::size_t size, QuotaCharge charge) noexcept : size_(size), charge_(charge) {}
  std::byte* bytes() noexcept { return reinterpret_cast<std::byte*>(this + 1); }
  const std::byte* bytes() const noexcept { return reinterpret_cast<const std::byte*>(this + 1); }

  std::size_t size_;
  QuotaCharge charge_;
};

static_assert(alignof(Message) <= alignof(std::max_align_t), "bytes follow the header");
static_assert(sizeof(Message) == 24, "Group::footprint() counts this header");

inline void MessageDeleter::operator()(Message* message) const noexcept {
  const QuotaCharge charge = message->charge_;
  message->~Message();
  ::operator delete(message);
  if (charge.quotas != nullptr) charge.quotas->uncharge_memory(charge.uid, charge.bytes);
}

}  // namespace synchmess::core
