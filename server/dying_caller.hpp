// Whether the thread behind a request is dying: a fatal signal is pending, but the thread has not
// run since, so its kernel-side wait has not been interrupted and no FUSE_INTERRUPT is on its way.
//
// Why: a reader parked in read() that is killed wakes up only when the scheduler runs it; until
// then a writer's request can reach us first, and a message handed to the parked reader would
// die with it. The kernel marks the signal at kill() time: complete_signal() (kernel/signal.c)
// adds SIGKILL to every thread's own pending set for a signal that kills the whole group, and
// wakes the thread it chose for any other signal (TASK_INTERRUPTIBLE -> runnable). Both are
// visible in /proc before the thread runs, so the server looks before it hands a message over.
//
// Cost: one pread() of /proc/<tid>/stat (~3 us; its descriptor is kept for the threads that park
// most), and /proc/<tid>/status (~10 us) only for a thread that is not asleep.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace synchmess::server {

// The signal masks of /proc/<tid>/status (bit n-1 is signal n).
struct SignalMasks {
  uint64_t pending = 0;         // SigPnd: the thread's own
  uint64_t shared_pending = 0;  // ShdPnd: the process's
  uint64_t blocked = 0;         // SigBlk
  uint64_t ignored = 0;         // SigIgn
  uint64_t caught = 0;          // SigCgt: a handler is installed
};

// The masks from the text of /proc/<tid>/status; nothing when a line is missing or malformed.
std::optional<SignalMasks> parse_signal_masks(std::string_view status) noexcept;

// True when the masks say the thread will die without returning to user space: SIGKILL in its
// own pending set, or a pending signal whose default action ends the process (terminate or
// dump core) that the thread neither blocks, ignores nor catches.
bool fatal_signal_pending(const SignalMasks& masks) noexcept;

// What /proc/<tid>/stat says of a thread: its state letter and its own pending signals (the
// first 31; SIGKILL is among them).
struct ThreadStat {
  char state = '?';
  uint64_t pending = 0;
};
std::optional<ThreadStat> parse_thread_stat(std::string_view stat) noexcept;

// Whether thread `tid` is dying. The rule:
//   - SIGKILL pending in the thread's own set (a group kill, an exit in progress): dying;
//   - asleep ('S'): not dying, since a signal that could end its wait would have woken it;
//   - otherwise (woken, or in the middle of going to sleep): dying iff /proc/<tid>/status shows
//     a fatal signal pending (fatal_signal_pending).
// False when /proc cannot tell (the thread is gone, or lives in a pid namespace we do not see:
// fuse_req_ctx() gives pid 0 then). Thread-safe.
bool thread_dying(pid_t tid) noexcept;

}  // namespace synchmess::server
