// EventLoop: one epoll set served by a fixed pool of worker threads.
#pragma once

#include <fuse_lowlevel.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/result.hpp"

namespace synchmess::server {

// What a worker owns: a receive buffer big enough for any FUSE/CUSE request.
struct Worker {
  fuse_buf buffer{};
};

class EventLoop;

// One readiness notification handed to a source. The fd is registered one-shot: no other worker
// sees it again until rearm(), so a source reads one request, rearms, then processes it while
// another worker may already read the next one.
struct Event {
  EventLoop& loop;
  uint64_t id;
  int fd;
  void rearm() const noexcept;
};

class EventSource {
 public:
  virtual ~EventSource() = default;
  // Runs on a worker. Must not block: waits park instead (see core::Waiter).
  virtual void on_readable(const Event& event, Worker& worker) noexcept = 0;
};

// Contract: the thread count is fixed at create(); it never grows with devices, sleepers or
// waiting readers. A source stays alive while a worker uses it (workers hold a shared_ptr for the
// duration of on_readable), so remove() may be called at any time from any thread.
class EventLoop {
 public:
  static core::Result<std::unique_ptr<EventLoop>> create(unsigned threads) noexcept;
  ~EventLoop();  // stops
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Registers `source` for `fd` without watching it yet: the id exists before any event can
  // arrive, so a source may store it first. The fd stays owned by the caller.
  uint64_t register_source(int fd, std::shared_ptr<EventSource> source);
  // Starts watching a registered fd for input (one-shot, see Event).
  core::Status watch(uint64_t id) noexcept;
  // register_source() + watch(); forgets the source when watching fails.
  core::Result<uint64_t> add(int fd, std::shared_ptr<EventSource> source) noexcept;
  void rearm(uint64_t id, int fd) noexcept;
  // No new events for `id`; the source is released once no worker uses it.
  void remove(uint64_t id, int fd) noexcept;

  // Forgets every source (after stop(): nothing of the loop may outlive what it serves).
  void remove_all() noexcept;

  void start();
  // Wakes every worker and joins them. Sources stay registered (the caller destroys them).
  void stop() noexcept;

  unsigned threads() const noexcept { return thread_count_; }

  // A Worker's buffer size: FUSE_MAX_MAX_PAGES pages plus the request header. libfuse reads up
  // to its session's bufsize, which never exceeds this for CUSE or FUSE sessions.
  static const std::size_t kRequestBufferSize;

 private:
  EventLoop(int epoll_fd, int stop_fd, unsigned threads) noexcept
      : epoll_fd_(epoll_fd), stop_fd_(stop_fd), thread_count_(threads) {}
  struct Registration {
    int fd;
    std::shared_ptr<EventSource> source;
  };
  void run_worker() noexcept;
  Registration find(uint64_t id) const;

  const int epoll_fd_;
  const int stop_fd_;
  const unsigned thread_count_;
  std::vector<std::thread> workers_;
  mutable std::mutex mu_;
  std::map<uint64_t, Registration> sources_;  // guarded by mu_
  uint64_t next_id_ = 1;                      // guarded by mu_; 0 is "stop"
};

}  // namespace synchmess::server
