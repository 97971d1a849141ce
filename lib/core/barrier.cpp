#include "core/barrier.hpp"

#include <cstdlib>

namespace synchmess::core {
namespace {

// How long one futex sleep lasts before the sleeper looks again (close, a moved generation).
constexpr std::chrono::milliseconds kSleepSlice{100};

}  // namespace

Barrier::Barrier() noexcept {
  auto created = region::Region::create("barrier", region::kMinRingBytes);
  if (!created) std::abort();
  own_.emplace(std::move(created.value()));
  region_ = &*own_;
}

Status Barrier::sleep() noexcept {
  if (closed_.load() != std::errc{}) return make_error(closed_.load());
  const uint32_t generation = region_->barrier_enter(region::kServerSlot);
  for (;;) {
    if (region_->barrier_passed(generation)) break;
    const auto woke = region_->barrier_wait(generation, kSleepSlice);
    if (!woke && region_->barrier_cancel(region::kServerSlot, generation)) {
      return make_error(std::errc::interrupted);  // not woken: no longer a sleeper
    }
  }
  if (closed_.load() != std::errc{} && closed_generation_.load() == generation) {
    return make_error(closed_.load());
  }
  return {};
}

void Barrier::park(Waiter& waiter) noexcept {
  {
    std::lock_guard lock(mu_);
    if (closed_.load() == std::errc{}) {
      waiter.barrier_generation_ = region_->barrier_enter(region::kServerSlot);
      parked_.push_back(waiter);
      region_->set_interest(region::kInterestBarrier);
      return;
    }
  }
  waiter.complete(WaitOutcome::failed(closed_.load()));
}

bool Barrier::cancel(Waiter& waiter) noexcept {
  std::lock_guard lock(mu_);
  if (!parked_.contains(waiter)) return false;
  // Uncounted only if its generation is still asleep; otherwise an awake took it, and
  // on_generation_changed() answers it.
  if (!region_->barrier_cancel(region::kServerSlot, waiter.barrier_generation_)) return false;
  parked_.remove(waiter);
  if (parked_.empty()) region_->clear_interest(region::kInterestBarrier);
  return true;
}

uint64_t Barrier::awake() noexcept {
  const uint64_t woken = region_->barrier_awake(region::kServerSlot);
  on_generation_changed();
  return woken;
}

void Barrier::on_generation_changed() noexcept {
  Waiter* woken;
  {
    std::lock_guard lock(mu_);
    const uint32_t now = region_->barrier_generation();
    WaiterList taken;
    for (Waiter* waiter = parked_.front(); waiter != nullptr;) {
      Waiter* next = WaiterList::chain_next(*waiter);
      if (waiter->barrier_generation_ != now) {  // parked before the last generation moved
        parked_.remove(*waiter);
        taken.push_back(*waiter);
      }
      waiter = next;
    }
    woken = taken.detach_all();  // under mu_: a cancel() sees them off every list
    if (parked_.empty()) region_->clear_interest(region::kInterestBarrier);
  }
  WaiterList::complete_chain(woken, std::errc{});
}

void Barrier::close(std::errc reason) noexcept {
  Waiter* closed;
  {
    std::lock_guard lock(mu_);
    if (closed_.load() != std::errc{}) return;
    closed_generation_.store(region_->barrier_generation());
    closed_.store(reason);
    closed = parked_.detach_all();
  }
  region_->barrier_awake(region::kServerSlot);  // every sleeper wakes and sees closed_
  WaiterList::complete_chain(closed, reason);
}

}  // namespace synchmess::core
