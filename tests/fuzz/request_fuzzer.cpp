// request_fuzzer: libFuzzer target for the request decoding of all three device kinds (control,
// config, group): ioctl numbers, argument sizes and contents, write sizes, names, opens, reads,
// polls, releases, interrupts, timeouts and callers' uids, through the real libfuse 3.14
// decoder and the server's own request handlers (Service, ParkedRequest, FuseTransport).
//
// How: one server (Params, Quotas, Registry, Service, FuseTransport) lives for the whole run.
// Its FUSE session is attached to one end of a socketpair (FuseTransport::attach); the harness
// writes FUSE requests the way the kernel would and reads every reply back from the other end.
// What the kernel guarantees is kept (well-formed structs, data lengths that match the sizes
// they announce, file handles the server gave out): everything else is the fuzzer's.
//
// Checks (a failure aborts, which libFuzzer reports): every reply answers a request that was
// sent and not yet answered (never twice, never an unknown one), with a sane header; after each
// input, releasing every open file and removing every group answers every request still
// waiting (parked reads, writes and barrier sleeps): nothing is left unanswered.
//
// Input: a sequence of operations, each an opcode byte and its arguments (see run_one()). The
// seed corpus (tests/fuzz/corpus/request) is written by make_seeds.py. SYNCHMESS_FUZZ_TRACE=1
// prints every request and reply, to see what an input (or a crash artifact) does.
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <synchmess/synchmess.h>

#include "core/params.hpp"
#include "core/quotas.hpp"
#include "core/registry.hpp"
#include "core/timer_queue.hpp"
#include "server/event_loop.hpp"
#include "server/fast_path.hpp"
#include "server/fuse_transport.hpp"
#include "server/log.hpp"
#include "server/service.hpp"

namespace synchmess::fuzz {
namespace {

using core::TimerQueue;

[[noreturn]] void broken(const char* what, uint64_t value = 0) {
  std::fprintf(stderr, "request_fuzzer: %s (%llu)\n", what, static_cast<unsigned long long>(value));
  std::abort();
}

// The fuzzer's bytes, consumed front to back; zeros once they run out.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return at_ >= size_; }
  uint8_t u8() { return at_ < size_ ? data_[at_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
  uint32_t u32() { return static_cast<uint32_t>(u16() | static_cast<uint32_t>(u16()) << 16); }
  std::string bytes(size_t count) {
    const size_t take = std::min(count, size_ - std::min(at_, size_));
    std::string out(reinterpret_cast<const char*>(data_ + at_), take);
    at_ += take;
    out.resize(count, '\0');
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

class Harness {
 public:
  Harness() {
    server::log::set_level(server::log::Level::kError);
    auto timers = TimerQueue::create([this] { return TimerQueue::Clock::time_point(now_); });
    if (!timers) broken("TimerQueue::create failed");
    timers_ = std::move(timers.value());
    registry_ = std::make_unique<core::Registry>(params_, *timers_, 16, quotas_);
    auto loop = server::EventLoop::create(1);  // never started: offers need no worker
    if (!loop) broken("EventLoop::create failed");
    loop_ = std::move(loop.value());
    auto fast_path = server::FastPath::create(*loop_, *timers_, {});
    if (!fast_path) broken("FastPath::create failed");
    fast_path_ = std::move(fast_path.value());
    service_ = std::make_unique<server::Service>(params_, *registry_, quotas_);
    service_->set_fast_path(fast_path_.get());
    transport_ = std::make_unique<server::FuseTransport>(
        *service_, server::FuseTransport::Settings{.mount_dir = "/fuzz"});
    service_->set_directory(transport_.get());
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) broken("socketpair");
    const int size = 1 << 20;  // the largest reply (a 124 KiB read) must fit at once
    ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ::setsockopt(fds[1], SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    ::setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    peer_ = fds[1];
    ::fcntl(peer_, F_SETFL, O_NONBLOCK);
    if (!transport_->attach(fds[0])) broken("attach");
    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = 31;
    init.max_readahead = 0;
    init.flags = FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES;
    send(FUSE_INIT, 0, &init, sizeof init);
  }

  void run_one(Input& in) {
    uid_ = 0;
    while (!in.empty()) {
      switch (in.u8() % 17) {
        case 0:
          lookup(name_of(in));
          break;
        case 1: {
          const uint64_t ino = inode(in.u8());
          static constexpr int kFlags[] = {O_RDWR,
                                           O_RDONLY,
                                           O_WRONLY,
                                           O_RDWR | O_NONBLOCK,
                                           O_WRONLY | O_TRUNC,
                                           O_RDONLY | O_NONBLOCK};
          fuse_open_in open{};
          open.flags = static_cast<uint32_t>(kFlags[in.u8() % 6]);
          send(FUSE_OPEN, ino, &open, sizeof open, Expect::kOpen);
          break;
        }
        case 2: {
          fuse_read_in read{};
          read.fh = handle(in.u8());
          read.size = static_cast<uint32_t>(in.u16()) * 2;
          read.offset = in.u8();
          send(FUSE_READ, ino_of(read.fh), &read, sizeof read);
          break;
        }
        case 3: {
          fuse_write_in write{};
          write.fh = handle(in.u8());
          const std::string data = in.bytes(std::min<size_t>(in.u16(), 8192));
          write.size = static_cast<uint32_t>(data.size());
          send(FUSE_WRITE, ino_of(write.fh), &write, sizeof write, Expect::kAny, data);
          break;
        }
        case 4:
          ioctl(in);
          break;
        case 5: {
          fuse_poll_in poll{};
          poll.fh = handle(in.u8());
          poll.kh = ++next_kh_;
          poll.flags = in.u8() & FUSE_POLL_SCHEDULE_NOTIFY;
          poll.events = POLLIN | POLLOUT;
          send(FUSE_POLL, ino_of(poll.fh), &poll, sizeof poll);
          break;
        }
        case 6:
          release(handle(in.u8()));
          break;
        case 7: {
          fuse_flush_in flush{};
          flush.fh = handle(in.u8());
          send(FUSE_FLUSH, ino_of(flush.fh), &flush, sizeof flush);
          break;
        }
        case 8: {
          fuse_fsync_in fsync{};
          fsync.fh = handle(in.u8());
          send(FUSE_FSYNC, ino_of(fsync.fh), &fsync, sizeof fsync);
          break;
        }
        case 9:
          interrupt(in.u8());
          break;
        case 10: {
          fuse_getattr_in getattr{};
          send(FUSE_GETATTR, inode(in.u8()), &getattr, sizeof getattr);
          break;
        }
        case 11: {
          fuse_setattr_in setattr{};
          const uint64_t ino = inode(in.u8());
          setattr.valid = in.u32() & (FATTR_SIZE | FATTR_ATIME | FATTR_MTIME | FATTR_MODE |
                                      FATTR_UID | FATTR_ATIME_NOW | FATTR_MTIME_NOW);
          setattr.size = in.u8();
          send(FUSE_SETATTR, ino, &setattr, sizeof setattr);
          break;
        }
        case 12: {
          fuse_read_in read{};
          read.offset = in.u8();
          read.size = std::max<uint32_t>(in.u16(), 64);
          send(FUSE_READDIR, FUSE_ROOT_ID, &read, sizeof read);
          break;
        }
        case 13:
          advance(in.u16());
          break;
        case 14: {
          static constexpr uid_t kUids[] = {0, 1000, 65534};
          uid_ = kUids[in.u8() % 3];
          break;
        }
        case 15: {
          fuse_forget_in forget{};
          forget.nlookup = 1;
          send(FUSE_FORGET, inode(in.u8()), &forget, sizeof forget, Expect::kNone);
          break;
        }
        case 16: {  // requests without a file handle: any opcode, any body
          const uint32_t opcode = in.u8();
          if (carries_handle(opcode)) break;
          // Zeros after the fuzzer's bytes: the kernel always sends whole structs and
          // terminated names, and libfuse reads them as such.
          const std::string body = in.bytes(in.u8()) + std::string(512, '\0');
          send(opcode, inode(in.u8()), body.data(), body.size(), raw_expect(opcode));
          break;
        }
      }
    }
    clean_up();
  }

 private:
  // kInterrupt: libfuse answers an INTERRUPT whose request it does not know with EAGAIN (the
  // kernel then sends it again), once, when a later request comes (in a later input, perhaps),
  // or never (when that request's unique is the one it names).
  enum class Expect { kAny, kOpen, kLookup, kNone, kInterrupt };
  struct Pending {
    uint32_t opcode;
    Expect expect;
    uint64_t ino;
  };

  // ---- building requests ----

  uint64_t send(uint32_t opcode, uint64_t ino, const void* arg, size_t arg_size,
                Expect expect = Expect::kAny, const std::string& data = {}) {
    std::string message(sizeof(fuse_in_header), '\0');
    message.append(static_cast<const char*>(arg), arg_size);
    message += data;
    fuse_in_header header{};
    header.len = static_cast<uint32_t>(message.size());
    header.opcode = opcode;
    header.unique = next_unique_ += 2;
    header.nodeid = ino;
    header.uid = uid_;
    header.gid = uid_;
    header.pid = static_cast<uint32_t>(::getpid());
    std::memcpy(message.data(), &header, sizeof header);
    if (expect == Expect::kInterrupt) {
      interrupts_.insert(header.unique);
    } else if (expect != Expect::kNone) {
      pending_[header.unique] = Pending{opcode, expect, ino};
    }
    if (trace_) {
      std::fprintf(stderr, "-> %llu opcode %u ino %llu uid %u, %zu bytes\n",
                   static_cast<unsigned long long>(header.unique), opcode,
                   static_cast<unsigned long long>(ino), uid_, message.size());
    }
    transport_->process(message.data(), message.size());
    drain();
    return header.unique;
  }

  void lookup(const std::string& name) {
    send(FUSE_LOOKUP, FUSE_ROOT_ID, name.c_str(), name.size() + 1, Expect::kLookup);
  }

  // A group name the fuzzer reaches often, or its own bytes.
  static std::string name_of(Input& in) {
    const uint8_t choice = in.u8();
    if (choice == 0) return "synchmess";
    if (choice == 1) return "config";
    if (choice < 128) return "g" + std::to_string(choice % 6);
    std::string raw = in.bytes(choice - 128);
    raw.erase(std::find(raw.begin(), raw.end(), '\0'), raw.end());
    return raw;
  }

  void ioctl(Input& in) {
    static constexpr uint32_t kCommands[] = {SYNCH_IOC_INSTALL_GROUP,
                                             SYNCH_IOC_REMOVE_GROUP,
                                             SYNCH_IOC_SLEEP_ON_BARRIER,
                                             SYNCH_IOC_AWAKE_BARRIER,
                                             SYNCH_IOC_SET_SEND_DELAY,
                                             SYNCH_IOC_GET_SEND_DELAY,
                                             SYNCH_IOC_REVOKE_DELAYED_MESSAGES,
                                             SYNCH_IOC_FLUSH,
                                             SYNCH_IOC_SET_RECV_TIMEOUT,
                                             SYNCH_IOC_GET_STATS,
                                             SYNCH_IOC_GET_PARAMS,
                                             SYNCH_IOC_SET_PARAMS,
                                             SYNCH_IOC_SET_SEND_TIMEOUT,
                                             SYNCH_IOC_FASTPATH_OFFER};
    constexpr size_t kCount = sizeof kCommands / sizeof kCommands[0];
    fuse_ioctl_in arg{};
    arg.fh = handle(in.u8());
    const uint8_t which = in.u8();
    arg.cmd = which < 2 * kCount ? kCommands[which % kCount] : in.u32();
    // Sizes: what the number encodes (as the kernel sends restricted ioctls), or the fuzzer's.
    const uint8_t sizes = in.u8();
    const uint32_t encoded = _IOC_SIZE(arg.cmd);
    arg.in_size = (sizes & 1) == 0 ? ((_IOC_DIR(arg.cmd) & _IOC_WRITE) ? encoded : 0) : in.u8();
    arg.out_size = (sizes & 2) == 0 ? ((_IOC_DIR(arg.cmd) & _IOC_READ) ? encoded : 0) : in.u8();
    arg.flags = (sizes & 4) != 0 ? FUSE_IOCTL_UNRESTRICTED : 0;
    std::string data = in.bytes(arg.in_size);
    if ((sizes & 8) == 0 && data.size() >= SYNCH_NAME_MAX) {  // a valid, NUL-padded name
      const std::string name = name_of(in);
      std::memset(data.data(), 0, SYNCH_NAME_MAX);
      std::memcpy(data.data(), name.data(), std::min<size_t>(name.size(), SYNCH_NAME_MAX - 1));
      if (data.size() >= sizeof(synch_install)) {
        std::memset(data.data() + offsetof(synch_install, reserved), 0, sizeof(uint32_t));
      }
    }
    if ((sizes & 16) == 0 && arg.cmd == SYNCH_IOC_SET_PARAMS && data.size() == 16) {
      const synch_params params{in.u32() % 200000u, in.u32() % 300000u};  // mostly in range
      std::memcpy(data.data(), &params, sizeof params);
    }
    send(FUSE_IOCTL, ino_of(arg.fh), &arg, sizeof arg, Expect::kAny, data);
  }

  void release(uint64_t fh) {
    auto it = std::find(handles_.begin(), handles_.end(), fh);
    if (it == handles_.end()) return;  // the kernel releases a handle once
    handles_.erase(it);
    fuse_release_in release{};
    release.fh = fh;
    send(FUSE_RELEASE, handle_inodes_[fh], &release, sizeof release);
    handle_inodes_.erase(fh);
  }

  void interrupt(uint8_t back) {
    if (pending_.empty()) return;
    auto it = pending_.end();
    std::advance(it, -1 - static_cast<long>(back % pending_.size()));
    fuse_interrupt_in arg{};
    arg.unique = it->first;
    // Its request waits, so libfuse finds it: the answer (if any) is the request's own.
    send(FUSE_INTERRUPT, 0, &arg, sizeof arg, Expect::kNone);
  }

  void advance(uint16_t milliseconds) {
    now_ += std::chrono::milliseconds(milliseconds);
    timers_->run_due();
    drain();
  }

  // The inodes the fuzzer may name: the root, the control and config files, what lookups found.
  uint64_t inode(uint8_t choice) const {
    if (choice < 3 || inodes_.empty()) return 1 + choice % 3;
    return inodes_[choice % inodes_.size()];
  }
  // A handle the server gave out (0 when it gave none: a request the kernel would not send is
  // then made on the control file's first handle, or not at all).
  uint64_t handle(uint8_t choice) {
    if (handles_.empty()) {
      fuse_open_in open{};
      open.flags = O_RDWR;
      send(FUSE_OPEN, 2, &open, sizeof open, Expect::kOpen);
      if (handles_.empty()) broken("the control file does not open");
    }
    return handles_[choice % handles_.size()];
  }
  uint64_t ino_of(uint64_t fh) const {
    auto it = handle_inodes_.find(fh);
    return it == handle_inodes_.end() ? 2 : it->second;
  }

  static bool carries_handle(uint32_t opcode) {
    switch (opcode) {
      case FUSE_READ:
      case FUSE_WRITE:
      case FUSE_IOCTL:
      case FUSE_POLL:
      case FUSE_RELEASE:
      case FUSE_FLUSH:
      case FUSE_FSYNC:
      case FUSE_GETATTR:  // may carry one (FUSE_GETATTR_FH)
      case FUSE_SETATTR:  // likewise (FATTR_FH)
      case FUSE_READDIR:  // the directory's handle
      case FUSE_RELEASEDIR:
      case FUSE_FSYNCDIR:
      case FUSE_LSEEK:
      case FUSE_FALLOCATE:
      case FUSE_COPY_FILE_RANGE:
      case FUSE_READDIRPLUS:
      case FUSE_GETLK:
      case FUSE_SETLK:
      case FUSE_SETLKW:
      case FUSE_INIT:          // once per session
      case FUSE_DESTROY:       // ends the session
      case FUSE_BATCH_FORGET:  // variable-length body
      case FUSE_NOTIFY_REPLY:
      case CUSE_INIT:
        return true;
      default:
        return false;
    }
  }
  static Expect raw_expect(uint32_t opcode) {
    if (opcode == FUSE_INTERRUPT) return Expect::kInterrupt;
    return opcode == FUSE_FORGET ? Expect::kNone : Expect::kAny;
  }

  // ---- replies ----

  void drain() {
    std::vector<char>& buffer = reply_buffer_;
    for (;;) {
      const ssize_t n = ::recv(peer_, buffer.data(), buffer.size(), MSG_DONTWAIT);
      if (n < 0) return;
      if (static_cast<size_t>(n) < sizeof(fuse_out_header)) broken("short reply", n);
      fuse_out_header header{};
      std::memcpy(&header, buffer.data(), sizeof header);
      if (header.len != static_cast<uint32_t>(n)) broken("reply length", header.len);
      if (header.unique == 0) continue;  // a notification (poll)
      if (interrupts_.erase(header.unique) != 0) {
        if (header.error != -EAGAIN) broken("an INTERRUPT answered with", -header.error);
        continue;
      }
      auto it = pending_.find(header.unique);
      if (it == pending_.end()) broken("a reply to no request, or a second reply", header.unique);
      if (header.error > 0 || header.error < -4095) broken("reply error", header.error);
      const Pending pending = it->second;
      pending_.erase(it);
      if (trace_) {
        std::fprintf(stderr, "<- %llu (opcode %u): %s, %zd bytes\n",
                     static_cast<unsigned long long>(header.unique), pending.opcode,
                     header.error == 0 ? "ok" : std::strerror(-header.error), n);
      }
      const char* payload = buffer.data() + sizeof header;
      const size_t payload_size = static_cast<size_t>(n) - sizeof header;
      if (header.error == 0 && pending.expect == Expect::kOpen) {
        if (payload_size < sizeof(fuse_open_out)) broken("short open reply", payload_size);
        fuse_open_out out{};
        std::memcpy(&out, payload, sizeof out);
        handles_.push_back(out.fh);
        handle_inodes_[out.fh] = pending.ino;
      }
      if (header.error == 0 && pending.expect == Expect::kLookup) {
        if (payload_size < sizeof(fuse_entry_out)) broken("short lookup reply", payload_size);
        fuse_entry_out out{};
        std::memcpy(&out, payload, sizeof out);
        if (std::find(inodes_.begin(), inodes_.end(), out.nodeid) == inodes_.end()) {
          inodes_.push_back(out.nodeid);
          if (inodes_.size() > 64) inodes_.erase(inodes_.begin());
        }
      }
    }
  }

  // After an input: every handle released, every group removed (by root), the parameters back
  // to their defaults. Whatever still waited must have been answered by then.
  void clean_up() {
    uid_ = 0;
    while (!handles_.empty())
      release(handles_.back());
    fuse_open_in open{};
    open.flags = O_RDWR;
    send(FUSE_OPEN, 2, &open, sizeof open, Expect::kOpen);
    if (handles_.empty()) broken("the control file does not open");
    const uint64_t control = handles_.back();
    for (const auto& group : registry_->groups()) {
      fuse_ioctl_in arg{};
      arg.fh = control;
      arg.cmd = SYNCH_IOC_REMOVE_GROUP;
      arg.in_size = sizeof(group_t);
      std::string name(sizeof(group_t), '\0');
      std::memcpy(name.data(), group->name().data(), group->name().size());
      send(FUSE_IOCTL, 2, &arg, sizeof arg, Expect::kAny, name);
    }
    release(control);
    advance(60000);
    if (!registry_->groups().empty()) broken("groups left after removing them all");
    if (!pending_.empty()) broken("requests never answered", pending_.begin()->second.opcode);
    if (quotas_.memory_used() != 0) broken("message memory still charged", quotas_.memory_used());
    inodes_.clear();  // the next input starts from the same view (inode numbers grow, though)
    if (!params_.set({SYNCH_DEFAULT_MAX_MESSAGE_SIZE, SYNCH_DEFAULT_MAX_STORAGE_SIZE})) {
      broken("the default parameters are refused");
    }
  }

  TimerQueue::Clock::duration now_{std::chrono::hours(1)};
  core::Params params_;
  core::Quotas quotas_{{.max_memory = 4 << 20, .max_user_memory = 1 << 20, .max_user_groups = 4}};
  std::unique_ptr<TimerQueue> timers_;
  std::unique_ptr<core::Registry> registry_;
  std::unique_ptr<server::EventLoop> loop_;  // outlive the service, which uses them
  std::unique_ptr<server::FastPath> fast_path_;
  std::unique_ptr<server::Service> service_;
  std::unique_ptr<server::FuseTransport> transport_;
  int peer_ = -1;
  // SYNCHMESS_FUZZ_TRACE=1: every request and reply on stderr (to read what an input does).
  const bool trace_ = std::getenv("SYNCHMESS_FUZZ_TRACE") != nullptr;
  uint64_t next_unique_ = 0;
  uint64_t next_kh_ = 0;
  uid_t uid_ = 0;
  std::map<uint64_t, Pending> pending_;  // by unique, in sending order
  std::set<uint64_t> interrupts_;        // INTERRUPTs libfuse may still answer, in any input
  std::vector<uint64_t> handles_;
  std::map<uint64_t, uint64_t> handle_inodes_;
  std::vector<uint64_t> inodes_;
  std::vector<char> reply_buffer_ = std::vector<char>(1 << 18);  // more than the largest reply
};

}  // namespace
}  // namespace synchmess::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Never destroyed: the session and its server live for the whole run.
  static auto* harness = new synchmess::fuzz::Harness();
  synchmess::fuzz::Input input(data, size);
  harness->run_one(input);
  return 0;
}
