// synchmess-cuse: serves /dev/synch through CUSE. See README.md and docs/DESIGN.md.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <variant>

#include "core/registry.hpp"
#include "core/timer_queue.hpp"
#include "server/cuse_transport.hpp"
#include "server/event_loop.hpp"
#include "server/fast_path.hpp"
#include "server/fuse_transport.hpp"
#include "server/log.hpp"
#include "server/memory.hpp"
#include "server/options.hpp"
#include "server/service.hpp"

namespace synchmess::server {
namespace {

// The core's timers (delays, receive timeouts, udev waits) fire on whichever worker sees the
// timerfd readable.
class TimerSource final : public EventSource {
 public:
  explicit TimerSource(core::TimerQueue& timers) noexcept : timers_(timers) {}
  void on_readable(const Event& event, Worker&) noexcept override {
    timers_.run_due();
    event.rearm();
  }

 private:
  core::TimerQueue& timers_;
};

// Prerequisites, checked before anything is created, each with what to do about it.
bool check_cuse_prerequisites() {
  if (geteuid() != 0) {
    log::error(
        "must run as root: it creates character devices through /dev/cuse "
        "(try: sudo synchmess-cuse), or serve a FUSE mount with --fuse-mount DIR");
    return false;
  }
  if (access("/dev/cuse", F_OK) != 0) {
    log::error(
        "/dev/cuse is missing: load the CUSE module with 'modprobe cuse' (the kernel "
        "needs CONFIG_CUSE); without CUSE, serve a FUSE mount with --fuse-mount DIR");
    return false;
  }
  if (access("/dev/cuse", R_OK | W_OK) != 0) {
    log::error("cannot open /dev/cuse for reading and writing: {}", std::strerror(errno));
    return false;
  }
  return true;
}

bool check_fuse_prerequisites() {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    log::error(
        "cannot use /dev/fuse: {} (load the module with 'modprobe fuse'; in a container, "
        "pass --device /dev/fuse)",
        std::strerror(errno));
    return false;
  }
  return true;
}

// The mount directory as an absolute path without links (how /proc/self/mountinfo names it).
bool resolve_mount_dir(const std::string& given, std::string& resolved) {
  char buffer[PATH_MAX];
  if (realpath(given.c_str(), buffer) == nullptr) {
    const int error = errno;
    log::error("cannot use {} as the mount point: {}{}", given, std::strerror(error),
               error == ENOTCONN ? " (a stale FUSE mount: run 'fusermount3 -u DIR' first)" : "");
    return false;
  }
  resolved = buffer;
  return true;
}

// Whether the control device is there for clients, waited for up to 5 s. CUSE: its node, a
// character device (the kernel makes it when the device is registered; the server itself does
// not open it: a sandboxed unit may deny it every device but /dev/cuse). FUSE: the file opens.
bool control_device_ready(const std::string& path, bool is_character_device) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (is_character_device) {
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode)) return true;
    } else if (const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC); fd >= 0) {
      ::close(fd);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  log::error("the control device {} is not there: {}", path, std::strerror(errno));
  return false;
}

// One descriptor per device: the default soft limit of 1024 would cap the groups.
void raise_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

int run(const Options& options) {
  log::set_level(options.verbose ? log::Level::kDebug : log::Level::kInfo);
  const bool use_fuse = !options.fuse_mount.empty();
  if (!(use_fuse ? check_fuse_prerequisites() : check_cuse_prerequisites())) return 1;
  std::string mount_dir;
  if (use_fuse && !resolve_mount_dir(options.fuse_mount, mount_dir)) return 1;
  raise_file_limit();

  // Every signal that users or the system commonly send and whose default action would end
  // the process (leaving a stale FUSE mount or half-removed devices) is a clean stop, taken by
  // sigwait() below: SIGINT, SIGTERM, SIGHUP (a terminal or ssh session that goes away),
  // SIGQUIT (Ctrl-\), SIGUSR1 and SIGALRM. (SIGUSR2 is the FUSE reader's wake-up, blocked
  // in every other thread: sent from outside it does nothing.) Every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (const int stop_signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGALRM})
    sigaddset(&stop_signals, stop_signal);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // The FUSE reader's wake-up signal reaches only that thread (it unblocks it for itself).
  sigset_t wake_signal;
  sigemptyset(&wake_signal);
  sigaddset(&wake_signal, FuseTransport::kWakeSignal);
  pthread_sigmask(SIG_BLOCK, &wake_signal, nullptr);
  signal(SIGPIPE, SIG_IGN);

  core::Params params;
  if (auto set = params.set({.max_message_size = options.max_message_size,
                             .max_storage_size = options.max_storage_size});
      !set) {
    log::error("invalid initial parameters");
    return 2;
  }
  auto timers = core::TimerQueue::create();
  if (!timers) {
    log::error("timerfd_create failed: {}", std::strerror(core::to_errno(timers.error())));
    return 1;
  }
  core::Quotas quotas({.max_memory = options.max_memory,
                       .max_user_memory = options.max_user_memory,
                       .max_user_groups = options.max_user_groups});
  core::Registry registry(params, *timers.value(), options.max_groups, quotas, options.region_size);
  Service service(params, registry, quotas);
  MemoryTrimmer trimmer(*timers.value(), quotas, registry);
  // CUSE: the pool serves every device session, the timers and the fast path. FUSE: the mount
  // has a reader thread of its own (FuseTransport), one worker serves the timers and the fast
  // path (its sockets and the groups' eventfds).
  const unsigned workers = use_fuse ? 1 : options.threads;
  auto loop = EventLoop::create(workers);
  if (!loop) {
    log::error("epoll setup failed: {}", std::strerror(core::to_errno(loop.error())));
    return 1;
  }
  if (auto added =
          loop.value()->add(timers.value()->fd(), std::make_shared<TimerSource>(*timers.value()));
      !added) {
    log::error("cannot watch the timerfd: {}", std::strerror(core::to_errno(added.error())));
    return 1;
  }

  // The fast path's socket and the groups' eventfds are served by the same pool.
  auto fast_path = FastPath::create(*loop.value(), *timers.value(),
                                    FastPath::Settings{.offers = options.fast_path});
  if (!fast_path) {
    log::error("cannot set up the fast path's socket: {} (or run with --no-fast-path)",
               std::strerror(core::to_errno(fast_path.error())));
    return 1;
  }
  service.set_fast_path(fast_path.value().get());
  // The service outlives the fast path: it forgets it first, whatever way run() ends.
  struct ForgetFastPath {
    Service& service;
    ~ForgetFastPath() { service.set_fast_path(nullptr); }
  } forget_fast_path{service};

  // One transport serves the devices: CUSE character devices, or the files of a FUSE mount.
  std::unique_ptr<CuseTransport> cuse;
  std::unique_ptr<FuseTransport> fuse;
  if (use_fuse) {
    fuse = std::make_unique<FuseTransport>(
        service,
        FuseTransport::Settings{.mount_dir = mount_dir, .allow_nonempty = options.allow_nonempty});
    service.set_directory(fuse.get());
  } else {
    cuse = std::make_unique<CuseTransport>(
        service, *loop.value(), *timers.value(),
        CuseTransport::Settings{.udev_timeout_ms = options.udev_timeout_ms,
                                .max_devices = options.max_groups + 2});
    service.set_directory(cuse.get());
  }
  const auto shut_down = [&] {
    service.stop();              // waiters and pending installs get their errors
    loop.value()->stop();        // workers finish their requests and leave
    if (cuse) cuse->shutdown();  // sessions closed: the kernel removes the nodes
    if (fuse) fuse->shutdown();  // unmounted
    loop.value()->remove_all();  // the timer source, and anything a transport left behind
  };
  loop.value()->start();
  if (auto started = cuse ? cuse->start() : fuse->start(); !started) {
    log::error("cannot serve the devices: {}", std::strerror(core::to_errno(started.error())));
    shut_down();
    return 1;
  }
  // Made once the workers, sessions and buffers exist: what they take is not message room.
  const auto memory_guard =
      ProcessMemoryGuard::create(quotas, registry, params, use_fuse ? workers + 1 : workers);
  if (memory_guard) {
    log::debug("resident-memory guard: {} KiB anonymous when serving started",
               memory_guard->start_bytes() >> 10);
  } else if (ProcessMemoryGuard::kAvailable) {
    log::warning("cannot read /proc/self/statm: the message count alone bounds memory");
  } else {
    log::debug("no resident-memory guard (a sanitizer build): the message count bounds memory");
  }
  const std::string where =
      cuse ? fmt::format("/dev/synch (major {}) with {} worker threads", cuse->major(), workers)
           : fmt::format("{} (FUSE) with one reader thread and one worker (timers, fast path)",
                         mount_dir);
  log::info(
      "serving {}; max_message_size={} max_storage_size={} max_groups={} max_memory={} "
      "max_user_memory={} max_user_groups={} fast path {} (ring {} bytes per group)",
      where, params.max_message_size(), params.max_storage_size(), options.max_groups,
      options.max_memory, options.max_user_memory, options.max_user_groups,
      options.fast_path ? "on" : "off", options.region_size);
  // Type=notify: units ordered after ours start once clients can open the control device.
  // (sd_notify does nothing without $NOTIFY_SOCKET.)
  const std::string control = cuse ? "/dev/synch/synchmess" : mount_dir + "/synchmess";
  if (!control_device_ready(control, cuse != nullptr)) {
    shut_down();
    return 1;
  }
  sd_notifyf(0, "READY=1\nSTATUS=serving %s", control.c_str());  // the sender is the main PID

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  log::info("SIG{} received: stopping", sigabbrev_np(signal_number));
  sd_notify(0, "STOPPING=1\nSTATUS=stopping");
  shut_down();
  log::info("stopped");
  return 0;
}

}  // namespace
}  // namespace synchmess::server

int main(int argc, char** argv) {
  using namespace synchmess::server;
  const auto parsed = parse_options(argc, argv);
  if (std::holds_alternative<ShowHelp>(parsed)) {
    std::fputs(usage_text(argv[0]).c_str(), stdout);
    return 0;
  }
  if (std::holds_alternative<ShowVersion>(parsed)) {
    std::fputs(version_text().c_str(), stdout);
    return 0;
  }
  if (const auto* error = std::get_if<UsageError>(&parsed)) {
    std::fprintf(stderr, "synchmess-cuse: %s\nTry '%s --help'.\n", error->message.c_str(), argv[0]);
    return 2;
  }
  return run(std::get<Options>(parsed));
}
