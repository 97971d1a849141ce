// The client library's fast path (docs/DESIGN.md, "The client library"): descriptors attached
// to their group's shared region, and the calls that the region serves without the server.
//
// C++ inside, no C++ runtime outside: the library is linked into C programs with a C linker,
// so nothing here uses exceptions, RTTI, operator new, std::mutex or statics that need a
// guard. Memory comes from calloc and is never given back (one small chunk per 256 descriptor
// numbers), so a descriptor's state has a stable address for as long as any thread may look.
//
// Per descriptor number, a Descriptor: unknown (the first call on it probes it: a descriptor
// received with SCM_RIGHTS, or opened with open(), is as much an authorization as one from
// synch_open_group()), attached (its region, slot, socket, eventfd and the timeouts the library
// set), on the device (probed, not offered), closing, or inherited (attached in the parent of a
// fork(): the first call in this process attaches it). One thread probes, kAttaching
// meanwhile; the others use the device for that call. A call takes a use (users + 1,
// then the state must still be attached; a close sets closing, then waits for users to drop to 0: a
// Dekker pair, both sequentially consistent), so a close never unmaps a region under a call. Memory
// ordering: the attach publishes the descriptor's fields with the release store of `state`; a use's
// acquire load sees them. Region operations: see region.hpp.
#include "fast_path.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <limits.h>  // PATH_MAX
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstddef>
#include <new>
#include <optional>
#include <span>

#include <synchmess/client.h>  // synch_device_path()
#include <synchmess/synchmess.h>

#include "region/door.hpp"
#include "region/handshake.hpp"
#include "region/region.hpp"

namespace {

using synchmess::region::Region;
namespace layout = synchmess::region;
namespace handshake = synchmess::region::handshake;

// Not known to this process's library (never used, or closed with synch_close_group()): the
// first call probes it. 0: what a fresh chunk holds.
constexpr uint32_t kUnknown = 0;
constexpr uint32_t kAttached = 1;
constexpr uint32_t kClosing = 2;
// Attached in the parent when this process forked: its first call takes a slot of its own
// (the same handshake), one thread at a time (kAttaching meanwhile: calls use the device).
constexpr uint32_t kInherited = 3;
constexpr uint32_t kAttaching = 4;
// Probed and not offered (not a group device, not opened O_RDWR, a server without the fast
// path, SYNCHMESS_FASTPATH=0): the device, until synch_close_group() or synch_open_group().
constexpr uint32_t kDevice = 5;

// Waits look at the group (removed?), the descriptor (closed?) and the server (alive?) this
// often; other calls look at the server at most this often (a clock read in between).
constexpr int64_t kSliceNs = 100'000'000;
constexpr int64_t kLivenessNs = 10'000'000;
// How long a reader spins on a message whose producer is still copying it (nanoseconds,
// usually), before it waits like a reader of an empty group.
constexpr int kPendingSpins = 4000;
// How long a receive waits for a send under way at the front, whatever its timeout (the server
// waits as long on the device path).
constexpr int64_t kPendingSendWaitNs = 2'000'000'000;

constexpr unsigned kChunkBits = 8;
constexpr unsigned kChunkSize = 1u << kChunkBits;
constexpr unsigned kChunks = 4096;  // descriptor numbers up to 1M; larger ones use the device

struct Descriptor {
  std::atomic<uint32_t> state{kUnknown};
  std::atomic<uint32_t> users{0};
  std::atomic<uint32_t> recv_timeout_ms{0};
  std::atomic<uint32_t> send_timeout_ms{0};
  std::atomic<int64_t> next_liveness_check{0};
  std::atomic<bool> server_gone{false};
  // The number now names another file (closed with close(), then reused): the device, for good.
  std::atomic<bool> file_changed{false};
  // Valid while attached (written before the state's release store).
  Region region;
  struct stat file {};  // the open file's node at the attach: st_dev, st_ino, st_rdev
  int socket = -1;
  int eventfd = -1;
  uint16_t slot = 0;
};

std::atomic<Descriptor*> g_chunks[kChunks];  // constant-initialized: null
pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

int64_t now_ns(clockid_t clock) noexcept {
  timespec now{};
  clock_gettime(clock, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

Descriptor* descriptor_of(int fd, bool create) noexcept {
  if (fd < 0 || static_cast<unsigned>(fd) >= kChunks * kChunkSize) return nullptr;
  std::atomic<Descriptor*>& chunk = g_chunks[static_cast<unsigned>(fd) >> kChunkBits];
  Descriptor* descriptors = chunk.load(std::memory_order_acquire);
  if (descriptors == nullptr) {
    if (!create) return nullptr;
    void* memory = calloc(kChunkSize, sizeof(Descriptor));
    if (memory == nullptr) return nullptr;
    auto* fresh = static_cast<Descriptor*>(memory);
    for (unsigned i = 0; i < kChunkSize; ++i)
      new (&fresh[i]) Descriptor();
    Descriptor* expected = nullptr;
    if (chunk.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
      descriptors = fresh;
    } else {
      free(memory);  // another thread's chunk won; ours was never used
      descriptors = expected;
    }
  }
  return &descriptors[static_cast<unsigned>(fd) & (kChunkSize - 1)];
}

bool take_over(int fd, Descriptor& descriptor, uint32_t from) noexcept;

// A call's hold on an attached descriptor (nothing when it is not attached). A descriptor
// inherited across fork(), or not yet known here, is attached first (this process's own slot).
class Use {
 public:
  explicit Use(int fd) noexcept {
    Descriptor* descriptor = descriptor_of(fd, true);
    if (descriptor == nullptr) return;
    uint32_t state = descriptor->state.load(std::memory_order_acquire);
    if ((state == kInherited || state == kUnknown) && take_over(fd, *descriptor, state)) {
      state = kAttached;
    }
    if (state != kAttached) return;
    descriptor->users.fetch_add(1);
    if (descriptor->state.load() != kAttached) {  // closing meanwhile
      descriptor->users.fetch_sub(1);
      return;
    }
    descriptor_ = descriptor;
  }
  ~Use() {
    if (descriptor_ != nullptr) descriptor_->users.fetch_sub(1);
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  explicit operator bool() const noexcept { return descriptor_ != nullptr; }
  Descriptor& operator*() const noexcept { return *descriptor_; }

 private:
  Descriptor* descriptor_ = nullptr;
};

// The server's end of the connection: gone when it hung up (it died, or removed the group).
bool socket_alive(const Descriptor& descriptor) noexcept {
  pollfd item{descriptor.socket, POLLIN, 0};
  const int ready = poll(&item, 1, 0);
  return ready == 0 || (ready < 0 && errno == EINTR);
}

bool same_node(const struct stat& a, const struct stat& b) noexcept {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_rdev == b.st_rdev;
}

// Looked at, at most every kLivenessNs: a dead server's region must not keep taking messages
// for long (its devices fail; the library then uses them and reports their errors). And a safety
// net for a broken rule: a descriptor closed with close() (not synch_close_group()) whose number
// now names another group's node goes to the device from the next look on (a look at every call
// would cost a system call each; DESIGN "Descriptors from anywhere").
bool server_alive(int fd, Descriptor& descriptor) noexcept {
  if (descriptor.server_gone.load(std::memory_order_relaxed) ||
      descriptor.file_changed.load(std::memory_order_relaxed)) {
    return false;
  }
  const int64_t now = now_ns(CLOCK_MONOTONIC_COARSE);
  if (now < descriptor.next_liveness_check.load(std::memory_order_relaxed)) return true;
  descriptor.next_liveness_check.store(now + kLivenessNs, std::memory_order_relaxed);
  struct stat file {};
  if (fstat(fd, &file) != 0 || !same_node(file, descriptor.file)) {
    descriptor.file_changed.store(true, std::memory_order_relaxed);
    return false;
  }
  if (socket_alive(descriptor)) return true;
  descriptor.server_gone.store(true, std::memory_order_relaxed);
  return false;
}

bool nonblocking(int fd) noexcept {
  const int flags = fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_NONBLOCK) != 0;
}

bool closed(const Region& region) noexcept {
  return (region.flags() & layout::kFlagClosed) != 0;
}

int fail(int error) noexcept {
  errno = error;
  return -1;
}

void drop_region(Descriptor& descriptor) noexcept {
  descriptor.region = Region();
  if (descriptor.socket >= 0) close(descriptor.socket);
  if (descriptor.eventfd >= 0) close(descriptor.eventfd);
  descriptor.socket = -1;
  descriptor.eventfd = -1;
}

void detach(Descriptor& descriptor) noexcept {
  // Never attached in this process: nothing mapped to drop.
  for (const uint32_t idle : {kInherited, kDevice}) {
    uint32_t expected = idle;
    if (descriptor.state.compare_exchange_strong(expected, kUnknown)) return;
  }
  uint32_t expected = kAttached;
  if (!descriptor.state.compare_exchange_strong(expected, kClosing)) return;
  // Waiters of this process look again (and see the descriptor closing); waiters elsewhere
  // find nothing new and sleep on.
  descriptor.region.wake_all();
  while (descriptor.users.load() != 0) {
    const timespec pause{0, 100'000};
    nanosleep(&pause, nullptr);
  }
  drop_region(descriptor);
  descriptor.state.store(kUnknown, std::memory_order_release);
}

// After fork(), the child's copies of the mappings and sockets go (the parent's slots stay the
// parent's: the server hears of the parent's end only when the parent's socket closes), and
// each descriptor the parent had attached is marked kInherited: the child's first call on it
// takes a slot of its own. Only the forking thread exists in the child: no calls are in flight
// (their counts, copied from the parent, are reset), and nothing here may take a lock.
void drop_all_in_child() noexcept {
  for (auto& chunk : g_chunks) {
    Descriptor* descriptors = chunk.load(std::memory_order_acquire);
    if (descriptors == nullptr) continue;
    for (unsigned i = 0; i < kChunkSize; ++i) {
      Descriptor& descriptor = descriptors[i];
      const uint32_t state = descriptor.state.load();
      if (state == kUnknown || state == kDevice) continue;
      drop_region(descriptor);
      descriptor.users.store(0);
      // A descriptor being closed (or attached) in the parent is the parent's business: here it
      // is probed afresh at its first call.
      descriptor.state.store(state == kAttached || state == kInherited ? kInherited : kUnknown);
    }
  }
}

void register_atfork() noexcept {
  pthread_atfork(nullptr, nullptr, &drop_all_in_child);
}

bool fast_path_enabled() noexcept {
  const char* setting = secure_getenv(SYNCH_FASTPATH_ENV);
  return setting == nullptr || strcmp(setting, "0") != 0;
}

// True when `fd` is a group device of this library's server: a node beside the control device
// (SYNCHMESS_DIR), opened for reading and writing (the server offers the region to no other);
// its node into `device`. Asked before the offer's ioctl, which no other device may see.
bool group_device_opened_rdwr(int fd, struct stat& device) noexcept {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_ACCMODE) != O_RDWR) return false;
  char control_path[PATH_MAX];
  if (synch_device_path("synchmess", control_path, sizeof control_path) < 0) return false;
  struct stat control {};
  if (fstat(fd, &device) != 0 || stat(control_path, &control) != 0) return false;
  if (S_ISCHR(control.st_mode)) {  // CUSE: every node of the server has its major
    return S_ISCHR(device.st_mode) && major(device.st_rdev) == major(control.st_rdev) &&
           device.st_rdev != control.st_rdev;
  }
  // A FUSE mount: the files of one file system.
  return S_ISREG(control.st_mode) && S_ISREG(device.st_mode) && device.st_dev == control.st_dev &&
         device.st_ino != control.st_ino;
}

// The handshake (docs/DESIGN.md, "The handshake") for `descriptor`, which no call uses: true
// when it is attached (state kAttached, published), false when it stays on the device (its
// state untouched).
bool handshake_for(int fd, Descriptor* descriptor) noexcept {
  struct stat file {};
  if (!fast_path_enabled() || !group_device_opened_rdwr(fd, file)) return false;
  synch_fastpath_offer offer{};
  if (ioctl(fd, SYNCH_IOC_FASTPATH_OFFER, &offer) != 0)
    return false;  // an older or --no-fast-path server
  const size_t name_length = strnlen(offer.socket_name, sizeof offer.socket_name);
  if (offer.version != layout::kLayoutVersion || name_length == 0 ||
      name_length == sizeof offer.socket_name) {
    return false;
  }
  auto connected = handshake::connect_to({offer.socket_name, name_length});
  if (!connected) return false;
  const int socket = connected.value();
  const timeval patience{2, 0};  // the server answers at once; a stuck one is not waited for
  setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
  setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof patience);
  if (send(socket, offer.secret, sizeof offer.secret, MSG_NOSIGNAL) !=
      static_cast<ssize_t>(sizeof offer.secret)) {
    close(socket);
    return false;
  }
  auto granted = handshake::receive_grant(socket);
  if (!granted) {
    close(socket);
    return false;
  }
  const handshake::Received grant = granted.value();
  auto mapped = Region::attach(grant.memfd);
  close(grant.memfd);  // the mapping keeps the memory
  if (!mapped || mapped.value().region_bytes() != grant.grant.region_bytes) {
    close(socket);
    close(grant.eventfd);
    return false;
  }
  pthread_once(&g_atfork_once, &register_atfork);
  descriptor->region = static_cast<Region&&>(mapped.value());
  descriptor->region.set_notify_fd(grant.eventfd);
  descriptor->socket = socket;
  descriptor->eventfd = grant.eventfd;
  descriptor->slot = static_cast<uint16_t>(grant.grant.slot);
  // The device's timeouts for this open file: set by whoever opened it, maybe another process.
  descriptor->recv_timeout_ms.store(offer.recv_timeout_ms);
  descriptor->send_timeout_ms.store(offer.send_timeout_ms);
  descriptor->server_gone.store(false);
  descriptor->file = file;
  descriptor->file_changed.store(false);
  descriptor->next_liveness_check.store(0);
  descriptor->state.store(kAttached, std::memory_order_release);
  return true;
}

// A descriptor just opened by synch_open_group(): attached now, not at its first call.
void attach(int fd) noexcept {
  Descriptor* descriptor = descriptor_of(fd, true);
  if (descriptor == nullptr) return;
  detach(*descriptor);  // a number closed with close() and reused: its old region goes
  descriptor->recv_timeout_ms.store(0);  // a new open file: the device's are 0 too
  descriptor->send_timeout_ms.store(0);
  (void)take_over(fd, *descriptor, kUnknown);
}

// A descriptor this process has not attached (`from`: kUnknown, or kInherited across fork()):
// it takes its own slot, at its first call. One thread does; a call that finds another thread
// at it uses the device meanwhile.
bool take_over(int fd, Descriptor& descriptor, uint32_t from) noexcept {
  if (!descriptor.state.compare_exchange_strong(from, kAttaching)) return false;
  if (handshake_for(fd, &descriptor)) return true;
  descriptor.state.store(kDevice, std::memory_order_release);  // the device, from now on
  return false;
}

// One look at the ring; a message whose producer is still copying it is waited for briefly.
Region::Take take(Region& region, std::span<std::byte> out, uint16_t slot,
                  uint32_t& length) noexcept {
  for (int spins = 0;; ++spins) {
    const Region::Take taken = region.pop(out, slot, length);
    if ((taken != Region::Take::kPending && taken != Region::Take::kContended) ||
        spins == kPendingSpins) {
      return taken;
    }
    if (spins > 64) sched_yield();
  }
}

// Why a wait of `descriptor` must end now: 0 (it may go on), or the errno. The server's socket
// is looked at only when a slice ran out (`slice_over`): a wake-up costs no system call.
int wait_ended(Descriptor& descriptor, bool slice_over) noexcept {
  if (descriptor.state.load() != kAttached) return EBADF;  // closed under the wait
  if (closed(descriptor.region)) return EIDRM;             // the group was removed
  if (slice_over && !socket_alive(descriptor)) {
    descriptor.server_gone.store(true, std::memory_order_relaxed);
    return ENOTCONN;  // the server died
  }
  return 0;
}

// One result of a receive from the ring: `length` bytes taken, min(length, len) copied.
ssize_t received(uint32_t length, size_t len) noexcept {
  return static_cast<ssize_t>(length < len ? length : len);
}

}  // namespace

extern "C" {

void synch_fp_attach(int fd) {
  const int saved = errno;
  attach(fd);
  errno = saved;
}

void synch_fp_detach(int fd) {
  const int saved = errno;
  if (Descriptor* descriptor = descriptor_of(fd, false)) detach(*descriptor);
  errno = saved;
}

int synch_fp_attached(int fd) {
  Use use(fd);
  return use && !(*use).file_changed.load(std::memory_order_relaxed) ? 1 : 0;
}

int synch_fp_send(int fd, const void* buf, size_t len, ssize_t* result) {
  Use use(fd);
  if (!use || len == 0) return 0;
  Descriptor& descriptor = *use;
  Region& region = descriptor.region;
  if (!server_alive(fd, descriptor)) return 0;  // the device says what is wrong
  // Which door: the rules are door.hpp's (asked before the ring, and with its answer).
  const layout::Published published = layout::read_published(region.header());
  layout::Way way = layout::send_door(published, len, region.max_payload(), std::nullopt);
  if (way.door == layout::Door::kRing) {
    const Region::Put put = region.push(std::span(static_cast<const std::byte*>(buf), len),
                                        descriptor.slot, published.max_storage_size, true);
    // Whether this send may wait for room is asked only when the budget is full (a system call).
    const bool may_wait = put == Region::Put::kNoBudget && len <= published.max_storage_size &&
                          descriptor.send_timeout_ms.load() != 0 && !nonblocking(fd);
    way = layout::send_door(published, len, region.max_payload(), put, may_wait);
  }
  switch (way.door) {
    case layout::Door::kDone:
      *result = static_cast<ssize_t>(len);
      return 1;
    case layout::Door::kFail:
      *result = fail(way.error);
      return 1;
    default:
      return 0;  // the device
  }
}

int synch_fp_receive(int fd, void* buf, size_t len, ssize_t* result) {
  Use use(fd);
  if (!use) return 0;
  Descriptor& descriptor = *use;
  Region& region = descriptor.region;
  if (!server_alive(fd, descriptor)) return 0;
  layout::Header& header = region.header();
  const std::span out(static_cast<std::byte*>(buf), len);
  int64_t deadline = -1;  // set at the first empty look
  bool waited = false;
  for (;;) {
    // Which door: door.hpp's rules, before each look and with its answer.
    layout::Way way = layout::receive_door(region.flags(), std::nullopt, waited);
    uint32_t length = 0;
    Region::Take taken = Region::Take::kEmpty;
    if (way.door == layout::Door::kRing) {
      taken = take(region, out, descriptor.slot, length);
      way = layout::receive_door(region.flags(), taken, waited);
    }
    if (way.door == layout::Door::kDone) {
      *result = received(length, len);
      return 1;
    }
    if (way.door == layout::Door::kFail) {
      *result = fail(way.error);
      return 1;
    }
    if (way.door == layout::Door::kServer) return 0;
    // The ring has nothing now: wait for it, unless the caller does not wait.
    if (nonblocking(fd)) {
      *result = fail(EAGAIN);
      return 1;
    }
    // Not empty when the oldest message is still being copied in: wait for it (its commit, or
    // its dead producer's repair), whatever the timeout; the bound covers a stopped producer.
    const bool pending = taken != Region::Take::kEmpty || region.front_pending();
    const uint32_t timeout_ms = descriptor.recv_timeout_ms.load();
    if (timeout_ms == 0 && !pending) {
      *result = 0;  // an empty group: nothing read, at once
      return 1;
    }
    const int64_t now = now_ns(CLOCK_MONOTONIC);
    if (deadline < 0) {
      deadline = timeout_ms == SYNCH_RECV_TIMEOUT_FOREVER
                     ? INT64_MAX
                     : now + static_cast<int64_t>(timeout_ms) * 1'000'000;
      if (pending) deadline = std::max(deadline, now + kPendingSendWaitNs);
    }
    if (now >= deadline) {
      *result = 0;  // the receive timeout passed
      return 1;
    }
    // Counted as a waiting reader before the last look (publishers bump avail_seq, then
    // read the count: one of the two sees the other).
    region.start_waiting_reader(descriptor.slot);
    const uint32_t seen = header.avail_seq.load();
    const Region::Take last = region.pop(out, descriptor.slot, length);
    if (last == Region::Take::kTaken) {
      region.stop_waiting_reader(descriptor.slot);
      *result = received(length, len);
      return 1;
    }
    const int64_t slice = deadline - now < kSliceNs ? deadline - now : kSliceNs;
    const auto woken = region.wait_avail(seen, std::chrono::nanoseconds(slice));
    region.stop_waiting_reader(descriptor.slot);
    waited = true;
    if (!woken) {
      *result = fail(EINTR);
      return 1;
    }
    if (const int error = wait_ended(descriptor, !*woken); error != 0) {
      *result = fail(error);
      return 1;
    }
  }
}

int synch_fp_sleep_on_barrier(int fd, int* result) {
  Use use(fd);
  if (!use) return 0;
  Descriptor& descriptor = *use;
  Region& region = descriptor.region;
  if (!server_alive(fd, descriptor) || closed(region)) return 0;
  const uint32_t generation = region.barrier_enter(descriptor.slot);
  for (;;) {
    if (region.barrier_passed(generation)) {
      region.barrier_left(descriptor.slot, generation);
      // A removal moves the generation on too: the sleeper was not woken by an awake.
      *result = closed(region) ? fail(EIDRM) : 0;
      return 1;
    }
    const auto woken = region.barrier_wait(generation, std::chrono::nanoseconds(kSliceNs));
    const int error = !woken ? EINTR : wait_ended(descriptor, !*woken);
    if (error == 0) continue;  // woken (look again) or a slice passed
    if (region.barrier_cancel(descriptor.slot, generation)) {
      *result = fail(error);  // no longer a sleeper
      return 1;
    }
    // An awake (or the removal) took this sleeper before the cancel: it was woken.
    region.barrier_left(descriptor.slot, generation);
    *result = closed(region) ? fail(EIDRM) : 0;
    return 1;
  }
}

int synch_fp_awake_barrier(int fd, int* result) {
  Use use(fd);
  if (!use) return 0;
  Descriptor& descriptor = *use;
  Region& region = descriptor.region;
  if (!server_alive(fd, descriptor) || closed(region)) return 0;
  const uint32_t woken = region.barrier_awake(descriptor.slot);
  *result = woken > static_cast<uint32_t>(INT_MAX) ? INT_MAX : static_cast<int>(woken);
  return 1;
}

void synch_fp_set_recv_timeout(int fd, uint32_t ms) {
  if (Descriptor* descriptor = descriptor_of(fd, false)) descriptor->recv_timeout_ms.store(ms);
}

void synch_fp_set_send_timeout(int fd, uint32_t ms) {
  if (Descriptor* descriptor = descriptor_of(fd, false)) descriptor->send_timeout_ms.store(ms);
}

}  // extern "C"
