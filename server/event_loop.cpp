#include "server/event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "server/log.hpp"

namespace synchmess::server {
namespace {

constexpr uint64_t kStopId = 0;
constexpr std::size_t kMaxPages = 256;       // FUSE_MAX_MAX_PAGES
constexpr std::size_t kHeaderSize = 0x1000;  // FUSE_BUFFER_HEADER_SIZE

}  // namespace

const std::size_t EventLoop::kRequestBufferSize =
    kMaxPages * static_cast<std::size_t>(sysconf(_SC_PAGESIZE)) + kHeaderSize;

void Event::rearm() const noexcept {
  loop.rearm(id, fd);
}

core::Result<std::unique_ptr<EventLoop>> EventLoop::create(unsigned threads) noexcept {
  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return core::make_error(static_cast<std::errc>(errno));
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) {
    const int error = errno;
    close(epoll_fd);
    return core::make_error(static_cast<std::errc>(error));
  }
  // Level-triggered and never consumed: once written, every worker sees it and leaves.
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kStopId;
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, stop_fd, &event);
  return std::unique_ptr<EventLoop>(new EventLoop(epoll_fd, stop_fd, threads));
}

EventLoop::~EventLoop() {
  stop();
  close(stop_fd_);
  close(epoll_fd_);
}

uint64_t EventLoop::register_source(int fd, std::shared_ptr<EventSource> source) {
  std::lock_guard lock(mu_);
  const uint64_t id = next_id_++;
  sources_.emplace(id, Registration{fd, std::move(source)});
  return id;
}

core::Status EventLoop::watch(uint64_t id) noexcept {
  const Registration registration = find(id);
  if (!registration.source) return core::make_error(std::errc::no_such_file_or_directory);
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.u64 = id;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, registration.fd, &event) != 0) {
    return core::make_error(static_cast<std::errc>(errno));
  }
  return {};
}

core::Result<uint64_t> EventLoop::add(int fd, std::shared_ptr<EventSource> source) noexcept {
  const uint64_t id = register_source(fd, std::move(source));
  if (auto watching = watch(id); !watching) {
    remove(id, fd);
    return core::make_error(watching.error());
  }
  return id;
}

void EventLoop::rearm(uint64_t id, int fd) noexcept {
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.u64 = id;
  // ENOENT: removed meanwhile. Nothing else can fail for a registered fd.
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event);
}

void EventLoop::remove(uint64_t id, int fd) noexcept {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  std::shared_ptr<EventSource> released;  // destroyed outside the lock
  std::lock_guard lock(mu_);
  if (auto found = sources_.find(id); found != sources_.end()) {
    released = std::move(found->second.source);
    sources_.erase(found);
  }
}

void EventLoop::remove_all() noexcept {
  std::map<uint64_t, Registration> released;  // destroyed outside the lock
  {
    std::lock_guard lock(mu_);
    released.swap(sources_);
  }
  for (const auto& [id, registration] : released) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, registration.fd, nullptr);
  }
}

EventLoop::Registration EventLoop::find(uint64_t id) const {
  std::lock_guard lock(mu_);
  auto found = sources_.find(id);
  return found == sources_.end() ? Registration{-1, nullptr} : found->second;
}

void EventLoop::start() {
  for (unsigned i = 0; i < thread_count_; ++i)
    workers_.emplace_back([this] { run_worker(); });
}

void EventLoop::stop() noexcept {
  if (workers_.empty()) return;
  const uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof one);
  for (auto& worker : workers_)
    worker.join();
  workers_.clear();
}

void EventLoop::run_worker() noexcept {
  Worker worker;
  worker.buffer.mem = std::malloc(kRequestBufferSize);
  if (worker.buffer.mem == nullptr) {
    log::error("worker: cannot allocate its request buffer");
    return;
  }
  for (;;) {
    epoll_event ready{};
    const int count = epoll_wait(epoll_fd_, &ready, 1, -1);
    if (count < 0) {
      if (errno == EINTR) continue;
      log::error("worker: epoll_wait failed: {}", std::strerror(errno));
      break;
    }
    if (count == 0) continue;
    if (ready.data.u64 == kStopId) break;
    const Registration registration = find(ready.data.u64);
    if (!registration.source) continue;  // removed after the event was queued
    registration.source->on_readable(Event{*this, ready.data.u64, registration.fd}, worker);
  }
  std::free(worker.buffer.mem);
}

}  // namespace synchmess::server
