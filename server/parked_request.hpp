// ParkedRequest: a kernel request that waits in the core (barrier sleep, read with a receive
// timeout) without holding a thread, answered later or cancelled when its caller is interrupted.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <span>

#include "core/group.hpp"
#include "core/waiter.hpp"

namespace synchmess::server {

// Lifetime: reference-counted. The handler that parks holds one reference until it returns; the
// park holds one until the request is answered (by complete(), or by a successful cancel after
// an interrupt). `keep_alive` (the transport's device) keeps the libfuse session alive until
// then.
//
// Interrupts (the caller got a signal; libfuse calls on_interrupt with the request's lock
// held, at once if the interrupt came first). Exactly one party answers:
//   - on_interrupt sets `interrupted_`, then tries to cancel the wait: if that succeeds it
//     answers EINTR itself;
//   - the handler, after parking, cancels too when it sees `interrupted_` (the interrupt may
//     have come before the wait existed);
//   - complete() answers otherwise.
// Every answer except the one from inside on_interrupt first unregisters the interrupt callback
// (fuse_req_interrupt_func(req, NULL, NULL) takes the request's lock, so it waits for a running
// on_interrupt to return): after that no callback can touch this object.
class ParkedRequest final : public core::Waiter {
 public:
  enum class Kind { kBarrierSleep, kRead, kWrite };

  // Parks a SLEEP_ON_BARRIER: answered 0 by the next awake, EINTR on a signal, EIDRM when the
  // group is removed, ENODEV when it is already gone.
  static void sleep_on_barrier(fuse_req_t req, std::shared_ptr<core::Group> group,
                               std::shared_ptr<void> keep_alive);

  // Parks a read: answered with up to `size` bytes of the next message, 0 bytes after
  // `timeout` (core::Group::kWaitForever: never), EINTR, EIDRM.
  static void read(fuse_req_t req, std::shared_ptr<core::Group> group, size_t size,
                   std::chrono::milliseconds timeout, std::shared_ptr<void> keep_alive);

  // Sends `bytes` from `sender`, or parks the write until the group has room: answered with
  // the byte count once sent, ENOSPC after `timeout` (core::Group::kWaitForever: never) or when
  // the budget was lowered below it, EINTR, EIDRM; at once with the refusals no wait can end.
  static void write(fuse_req_t req, std::shared_ptr<core::Group> group,
                    std::span<const std::byte> bytes, uid_t sender,
                    std::chrono::milliseconds timeout, std::shared_ptr<void> keep_alive);

  void complete(core::WaitOutcome outcome) noexcept override;
  // A reader whose calling thread has a fatal signal pending (see dying_caller.hpp).
  bool caller_dying() noexcept override;

 private:
  ParkedRequest(fuse_req_t req, Kind kind, std::shared_ptr<core::Group> group, size_t size,
                std::shared_ptr<void> keep_alive) noexcept;
  ~ParkedRequest() override = default;

  static void on_interrupt(fuse_req_t req, void* self) noexcept;
  // Parks; answers at once when the wait could not start. Consumes nothing. A write parks
  // `bytes` (copied by the group).
  void park(std::chrono::milliseconds timeout, std::span<const std::byte> bytes = {},
            uid_t sender = 0) noexcept;
  bool cancel() noexcept;
  void answer(core::WaitOutcome& outcome) noexcept;  // requires: callback unregistered or inside it
  void unregister_interrupt() noexcept { fuse_req_interrupt_func(req_, nullptr, nullptr); }
  void ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  const fuse_req_t req_;
  const Kind kind_;
  const std::shared_ptr<core::Group> group_;
  const size_t size_;       // a read: the caller's buffer; a write: the message's size
  const pid_t caller_tid_;  // the calling thread (FUSE passes the thread's id)
  std::shared_ptr<void> keep_alive_;
  std::atomic<int> refs_{1};
  std::atomic<bool> interrupted_{false};
};

}  // namespace synchmess::server
