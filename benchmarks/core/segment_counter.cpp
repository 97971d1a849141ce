// Counts the message ring's segment allocations, and the segments deleted by the very thread that
// allocated them (a producer that lost the race to link the next segment deletes the one it
// built; linked segments are retired by consumers), by replacing the over-aligned operator
// new/delete of this binary (see support.hpp: segment_allocations(), segment_discards()).
//
// Only the aligned forms are replaced: a segment is alignas(64), every Message and every container
// node uses the plain forms, so the count costs nothing on the hot paths it does not count. Built
// only without sanitizers (their runtimes own operator new and would see mismatched pairs).
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <optional>

#include "support.hpp"

#ifdef SYNCHMESS_BENCH_COUNT_SEGMENTS

namespace {

constexpr std::size_t kCountedSize = 4096;  // a segment is about 10 KiB; nothing else aligned is
std::atomic<uint64_t> g_large_aligned{0};
std::atomic<uint64_t> g_discarded{0};
thread_local void* t_last_large = nullptr;  // the last counted block this thread allocated

void* allocate_aligned(std::size_t size, std::align_val_t alignment) noexcept {
  const auto align = static_cast<std::size_t>(alignment);
  const std::size_t rounded = (size + align - 1) / align * align;  // aligned_alloc's rule
  void* memory = std::aligned_alloc(align, rounded == 0 ? align : rounded);
  if (size >= kCountedSize && memory != nullptr) {
    g_large_aligned.fetch_add(1, std::memory_order_relaxed);
    t_last_large = memory;
  }
  return memory;
}

void free_aligned(void* memory) noexcept {
  if (memory != nullptr && memory == t_last_large) {
    g_discarded.fetch_add(1, std::memory_order_relaxed);
    t_last_large = nullptr;
  }
  std::free(memory);
}

}  // namespace

void* operator new(std::size_t size, std::align_val_t alignment) {
  void* memory = allocate_aligned(size, alignment);
  if (memory == nullptr) throw std::bad_alloc();
  return memory;
}
void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return allocate_aligned(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return operator new(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment,
                     const std::nothrow_t& tag) noexcept {
  return operator new(size, alignment, tag);
}
void operator delete(void* memory, std::align_val_t) noexcept {
  free_aligned(memory);
}
void operator delete(void* memory, std::size_t, std::align_val_t) noexcept {
  free_aligned(memory);
}
void operator delete(void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
  free_aligned(memory);
}
void operator delete[](void* memory, std::align_val_t) noexcept {
  free_aligned(memory);
}
void operator delete[](void* memory, std::size_t, std::align_val_t) noexcept {
  free_aligned(memory);
}
void operator delete[](void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
  free_aligned(memory);
}

std::optional<uint64_t> synchmess::bench::segment_allocations() noexcept {
  return g_large_aligned.load(std::memory_order_relaxed);
}

std::optional<uint64_t> synchmess::bench::segment_discards() noexcept {
  return g_discarded.load(std::memory_order_relaxed);
}

#else

std::optional<uint64_t> synchmess::bench::segment_allocations() noexcept {
  return std::nullopt;
}

std::optional<uint64_t> synchmess::bench::segment_discards() noexcept {
  return std::nullopt;
}

#endif
