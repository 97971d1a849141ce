#include "server/parked_request.hpp"

#include <algorithm>
#include <cerrno>

#include "server/dying_caller.hpp"

namespace synchmess::server {

ParkedRequest::ParkedRequest(fuse_req_t req, Kind kind, std::shared_ptr<core::Group> group,
                             size_t size, std::shared_ptr<void> keep_alive) noexcept
    : req_(req),
      kind_(kind),
      group_(std::move(group)),
      size_(size),
      caller_tid_(fuse_req_ctx(req)->pid),
      keep_alive_(std::move(keep_alive)) {}

void ParkedRequest::sleep_on_barrier(fuse_req_t req, std::shared_ptr<core::Group> group,
                                     std::shared_ptr<void> keep_alive) {
  auto* parked =
      new ParkedRequest(req, Kind::kBarrierSleep, std::move(group), 0, std::move(keep_alive));
  parked->park(core::Group::kWaitForever);
  parked->unref();  // the handler's reference
}

void ParkedRequest::read(fuse_req_t req, std::shared_ptr<core::Group> group, size_t size,
                         std::chrono::milliseconds timeout, std::shared_ptr<void> keep_alive) {
  auto* parked = new ParkedRequest(req, Kind::kRead, std::move(group), size, std::move(keep_alive));
  parked->park(timeout);
  parked->unref();
}

void ParkedRequest::write(fuse_req_t req, std::shared_ptr<core::Group> group,
                          std::span<const std::byte> bytes, uid_t sender,
                          std::chrono::milliseconds timeout, std::shared_ptr<void> keep_alive) {
  auto* parked =
      new ParkedRequest(req, Kind::kWrite, std::move(group), bytes.size(), std::move(keep_alive));
  parked->park(timeout, bytes, sender);
  parked->unref();
}

void ParkedRequest::park(std::chrono::milliseconds timeout, std::span<const std::byte> bytes,
                         uid_t sender) noexcept {
  // Register first (libfuse runs the callback at once if the interrupt already arrived), then
  // park, then look at `interrupted_` once more: an interrupt cannot slip between them.
  fuse_req_interrupt_func(req_, &ParkedRequest::on_interrupt, this);
  ref();  // the park's reference
  if (kind_ == Kind::kWrite) {
    auto parked = group_->send_or_park(bytes, sender, *this, timeout);
    if (!parked || parked.value()) {  // refused, or sent at once: not parked
      core::WaitOutcome outcome =
          parked ? core::WaitOutcome::woken() : core::WaitOutcome::failed(parked.error());
      unregister_interrupt();
      answer(outcome);
      unref();
      return;
    }
  } else if (kind_ == Kind::kBarrierSleep) {
    if (auto parked = group_->park_on_barrier(*this); !parked) {
      core::WaitOutcome outcome = core::WaitOutcome::failed(parked.error());
      unregister_interrupt();
      answer(outcome);
      unref();
      return;
    }
  } else {
    auto parked = group_->receive_or_park(*this, timeout);
    if (!parked || parked.value()) {  // gone, or a message came at once: not parked
      core::WaitOutcome outcome = parked ? core::WaitOutcome::delivered(std::move(parked.value()))
                                         : core::WaitOutcome::failed(parked.error());
      unregister_interrupt();
      answer(outcome);
      unref();
      return;
    }
  }
  if (interrupted_.load() && cancel()) {
    core::WaitOutcome outcome = core::WaitOutcome::failed(std::errc::interrupted);
    unregister_interrupt();
    answer(outcome);
    unref();
  }
}

bool ParkedRequest::cancel() noexcept {
  switch (kind_) {
    case Kind::kBarrierSleep:
      return group_->cancel_barrier_wait(*this);
    case Kind::kRead:
      return group_->cancel_receive(*this);
    case Kind::kWrite:
      return group_->cancel_send(*this);
  }
  return false;
}

void ParkedRequest::on_interrupt(fuse_req_t, void* self) noexcept {
  auto* parked = static_cast<ParkedRequest*>(self);
  parked->interrupted_.store(true);
  if (parked->cancel()) {
    core::WaitOutcome outcome = core::WaitOutcome::failed(std::errc::interrupted);
    parked->answer(outcome);  // inside the callback: libfuse keeps the request alive for us
    parked->unref();
  }
}

void ParkedRequest::complete(core::WaitOutcome outcome) noexcept {
  unregister_interrupt();
  answer(outcome);
  unref();
}

bool ParkedRequest::caller_dying() noexcept {
  return kind_ == Kind::kRead && thread_dying(caller_tid_);
}

void ParkedRequest::answer(core::WaitOutcome& outcome) noexcept {
  if (outcome.error != std::errc{}) {
    fuse_reply_err(req_, core::to_errno(outcome.error));
  } else if (kind_ == Kind::kWrite) {
    if (outcome.timed_out) {
      fuse_reply_err(req_, ENOSPC);  // the send timeout passed without room
    } else {
      fuse_reply_write(req_, size_);
    }
  } else if (kind_ == Kind::kBarrierSleep) {
    fuse_reply_ioctl(req_, 0, nullptr, 0);
  } else if (outcome.message) {
    const auto bytes = outcome.message->data();
    fuse_reply_buf(req_, reinterpret_cast<const char*>(bytes.data()),
                   std::min(size_, bytes.size()));
  } else {
    fuse_reply_buf(req_, nullptr, 0);  // the receive timeout passed: nothing read
  }
  keep_alive_.reset();  // the session may go once nothing of it is in use
}

}  // namespace synchmess::server
