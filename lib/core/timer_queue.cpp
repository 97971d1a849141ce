#include "core/timer_queue.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace synchmess::core {

Result<std::unique_ptr<TimerQueue>> TimerQueue::create(NowFunction now) noexcept {
  const int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return make_error(static_cast<std::errc>(errno));
  return std::unique_ptr<TimerQueue>(new TimerQueue(fd, std::move(now)));
}

TimerQueue::~TimerQueue() {
  close(fd_);
}

bool TimerQueue::earlier(const Timer* a, const Timer* b) const noexcept {
  return a->due_ != b->due_ ? a->due_ < b->due_ : a->sequence_ < b->sequence_;
}

void TimerQueue::place(std::size_t index, Timer* timer) noexcept {
  heap_[index] = timer;
  timer->heap_index_ = index;
}

void TimerQueue::sift_up(std::size_t index) noexcept {
  Timer* timer = heap_[index];
  while (index > 0) {
    const std::size_t parent = (index - 1) / 2;
    if (!earlier(timer, heap_[parent])) break;
    place(index, heap_[parent]);
    index = parent;
  }
  place(index, timer);
}

void TimerQueue::sift_down(std::size_t index) noexcept {
  Timer* timer = heap_[index];
  const std::size_t size = heap_.size();
  for (;;) {
    std::size_t child = 2 * index + 1;
    if (child >= size) break;
    if (child + 1 < size && earlier(heap_[child + 1], heap_[child])) ++child;
    if (!earlier(heap_[child], timer)) break;
    place(index, heap_[child]);
    index = child;
  }
  place(index, timer);
}

void TimerQueue::remove_at(std::size_t index) noexcept {
  Timer* removed = heap_[index];
  removed->heap_index_ = Timer::kNotArmed;
  Timer* last = heap_.back();
  heap_.pop_back();
  if (last == removed) return;
  place(index, last);
  sift_down(index);
  sift_up(last->heap_index_);
}

void TimerQueue::update_fd() noexcept {
  itimerspec spec{};
  if (!heap_.empty()) {
    // Absolute CLOCK_MONOTONIC time, the clock of steady_clock on Linux. A due time in the past
    // fires at once; zero would disarm, so the earliest value is 1 ns.
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(heap_.front()->due_.time_since_epoch())
            .count();
    const int64_t at = ns < 1 ? 1 : ns;
    spec.it_value.tv_sec = static_cast<time_t>(at / 1'000'000'000);
    spec.it_value.tv_nsec = static_cast<long>(at % 1'000'000'000);
  }
  timerfd_settime(fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
}

void TimerQueue::arm(Timer& timer, Clock::time_point due) noexcept {
  std::lock_guard lock(mu_);
  timer.due_ = due;
  timer.sequence_ = next_sequence_++;
  if (timer.heap_index_ == Timer::kNotArmed) {
    heap_.push_back(&timer);
    timer.heap_index_ = heap_.size() - 1;
  }
  sift_down(timer.heap_index_);
  sift_up(timer.heap_index_);
  if (heap_.front() == &timer || heap_.size() == 1) update_fd();
}

bool TimerQueue::cancel(Timer& timer) noexcept {
  std::lock_guard lock(mu_);
  if (timer.heap_index_ == Timer::kNotArmed) return false;
  const bool was_first = timer.heap_index_ == 0;
  remove_at(timer.heap_index_);
  if (was_first) update_fd();
  return true;
}

void TimerQueue::cancel_sync(Timer& timer) noexcept {
  std::unique_lock lock(mu_);
  if (timer.heap_index_ != Timer::kNotArmed) {
    const bool was_first = timer.heap_index_ == 0;
    remove_at(timer.heap_index_);
    if (was_first) update_fd();
  }
  // A fire of this timer may still be running even when it was armed again meanwhile (a fire
  // that re-arms its own timer). Called from inside that fire: nothing to wait for.
  if (firing_thread_ == std::this_thread::get_id()) return;
  fire_done_.wait(lock, [&] { return firing_ != &timer; });
}

std::size_t TimerQueue::run_due() noexcept {
  std::lock_guard run_lock(run_mu_);
  uint64_t expirations = 0;
  while (read(fd_, &expirations, sizeof expirations) > 0) {
  }
  std::size_t fired = 0;
  const Clock::time_point now = this->now();
  std::unique_lock lock(mu_);
  while (!heap_.empty() && heap_.front()->due_ <= now) {
    Timer* timer = heap_.front();
    remove_at(0);
    firing_ = timer;
    firing_thread_ = std::this_thread::get_id();
    const Timer::Callback fire = timer->fire_;
    void* const context = timer->context_;
    lock.unlock();
    fire(context);  // may free `timer`: not touched below
    ++fired;
    lock.lock();
    firing_ = nullptr;
    firing_thread_ = {};
    fire_done_.notify_all();
  }
  update_fd();
  return fired;
}

std::optional<TimerQueue::Clock::time_point> TimerQueue::next_due() const noexcept {
  std::lock_guard lock(mu_);
  if (heap_.empty()) return std::nullopt;
  return heap_.front()->due_;
}

std::size_t TimerQueue::armed() const noexcept {
  std::lock_guard lock(mu_);
  return heap_.size();
}

Result<std::unique_ptr<TimerThread>> TimerThread::start(TimerQueue& timers) noexcept {
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) return make_error(static_cast<std::errc>(errno));
  return std::unique_ptr<TimerThread>(new TimerThread(timers, stop_fd));
}

TimerThread::TimerThread(TimerQueue& timers, int stop_fd)
    : timers_(timers), stop_fd_(stop_fd), thread_([this] { run(); }) {}

TimerThread::~TimerThread() {
  const uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof one);
  thread_.join();
  close(stop_fd_);
}

void TimerThread::run() noexcept {
  pollfd fds[2] = {{timers_.fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) continue;  // EINTR
    if (fds[1].revents != 0) return;
    if (fds[0].revents != 0) timers_.run_due();
  }
}

}  // namespace synchmess::core
