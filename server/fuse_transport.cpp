#include "server/fuse_transport.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "server/log.hpp"

namespace synchmess::server {
namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kControlIno = 2;
constexpr fuse_ino_t kConfigIno = 3;
// Attributes never change; names may (groups come and go), so entries are not cached: every
// open looks the name up and a removed group is gone at once.
constexpr double kAttrTimeout = 1.0;
constexpr double kEntryTimeout = 0.0;

mode_t mode_of(DeviceKind kind) noexcept {
  switch (kind) {
    case DeviceKind::kControl:
      return S_IFREG | 0666;
    case DeviceKind::kConfig:
      return S_IFREG | 0644;
    case DeviceKind::kGroup:
      return S_IFREG | 0666;
  }
  return S_IFREG;
}

OpenFile& file_of(const fuse_file_info* fi) noexcept {
  return *reinterpret_cast<OpenFile*>(fi->fh);
}

// The mount points of this process's mount namespace, from /proc/self/mountinfo (field 5),
// with the octal escapes the kernel uses for spaces and the like.
std::vector<std::string> mount_points() {
  std::vector<std::string> points;
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, devnum, root, point;
    if (!(fields >> id >> parent >> devnum >> root >> point)) continue;
    std::string decoded;
    for (size_t i = 0; i < point.size(); ++i) {
      if (point[i] == '\\' && i + 3 < point.size()) {
        decoded += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        decoded += point[i];
      }
    }
    points.push_back(decoded);
  }
  return points;
}

// The name of one entry of `dir` other than "." and "..", or "" when it has none (or cannot
// be read: the mount then reports the real problem).
std::string first_entry(const std::string& dir) {
  DIR* stream = ::opendir(dir.c_str());
  if (stream == nullptr) return "";
  std::string found;
  while (const dirent* entry = ::readdir(stream)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") {
      found = name;
      break;
    }
  }
  ::closedir(stream);
  return found;
}

}  // namespace

// ---- operations ----

class FuseTransport::Operations {
 public:
  static FuseTransport& of(fuse_req_t req) noexcept {
    return *static_cast<FuseTransport*>(fuse_req_userdata(req));
  }

  static void init(void*, fuse_conn_info* conn) {
    // Requests land in the workers' memory buffers: no splicing.
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
    // O_TRUNC comes with open (echo > file), not as a separate truncate.
    if ((conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) != 0) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;  // messages must reach us write by write
  }

  static void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    FuseTransport& transport = of(req);
    if (parent != kRootIno) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    fuse_ino_t ino = 0;
    Node node;
    {
      std::lock_guard lock(transport.mu_);
      auto found = transport.by_name_.find(std::string_view(name));
      if (found == transport.by_name_.end()) {
        fuse_reply_err(req, ENOENT);
        return;
      }
      ino = found->second;
      node = transport.nodes_.at(ino);
    }
    fuse_entry_param entry{};
    entry.ino = ino;
    entry.attr = transport.attributes(ino, node);
    entry.attr_timeout = kAttrTimeout;
    entry.entry_timeout = kEntryTimeout;
    fuse_reply_entry(req, &entry);
  }

  static void forget(fuse_req_t req, fuse_ino_t, uint64_t) {
    fuse_reply_none(req);  // inode numbers are never reused: nothing to keep or free
  }

  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    FuseTransport& transport = of(req);
    Node node;
    if (ino != kRootIno && !transport.find(ino, node)) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    const struct stat attr = transport.attributes(ino, node);
    fuse_reply_attr(req, &attr, kAttrTimeout);
  }

  // Only truncation to 0 (echo > file without atomic O_TRUNC) and time updates are accepted,
  // as on a character device: they change nothing.
  static void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                      fuse_file_info*) {
    FuseTransport& transport = of(req);
    Node node;
    if (ino == kRootIno || !transport.find(ino, node)) {
      fuse_reply_err(req, ino == kRootIno ? EPERM : ENOENT);
      return;
    }
    constexpr int kAllowed = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                             FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
                             FUSE_SET_ATTR_CTIME;
    if ((to_set & ~kAllowed) != 0 || ((to_set & FUSE_SET_ATTR_SIZE) != 0 && attr->st_size != 0)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    const struct stat current = transport.attributes(ino, node);
    fuse_reply_attr(req, &current, kAttrTimeout);
  }

  static void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    FuseTransport& transport = of(req);
    Node node;
    if (ino == kRootIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (!transport.find(ino, node)) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    transport.service_.open(req, node.kind, node.group, transport.files_, fi,
                            node.kind == DeviceKind::kGroup
                                ? Service::OpenFlags::kFuseStreamParallelWrites
                                : Service::OpenFlags::kFuseStream);
  }

  // Every file is opened FOPEN_STREAM: offsets restart at 0 for every read()/write(), so
  // > 0 continues one the kernel split (a readv()/writev() of more pieces than a request holds).
  static void read(fuse_req_t req, fuse_ino_t, size_t size, off_t offset, fuse_file_info* fi) {
    of(req).service_.read(req, file_of(fi), size, offset > 0, fi->flags, nullptr);
  }

  static void write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t offset,
                    fuse_file_info* fi) {
    of(req).service_.write(req, file_of(fi), data, size, offset > 0, fi->flags, nullptr);
  }

  // FUSE sends flush at every close() and fsync at fsync(): both flush delayed messages, as the
  // original module's fsync did (CUSE cannot: its kernel side forwards neither).
  static void flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    of(req).service_.flush(req, file_of(fi));
  }
  static void fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
    of(req).service_.flush(req, file_of(fi));
  }

  static void release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    of(req).service_.release(req, &file_of(fi));
  }

  static void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    if (ino != kRootIno) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    fuse_reply_open(req, fi);
  }

  static void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info*) {
    FuseTransport& transport = of(req);
    if (ino != kRootIno) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    // The listing as of this call; the offset of an entry is its index + 1.
    std::vector<std::pair<std::string, struct stat>> entries;
    struct stat dir {};
    dir.st_ino = kRootIno;
    dir.st_mode = S_IFDIR;
    entries.emplace_back(".", dir);
    entries.emplace_back("..", dir);
    {
      std::lock_guard lock(transport.mu_);
      for (const auto& [name, node_ino] : transport.by_name_) {
        struct stat attr {};
        attr.st_ino = node_ino;
        attr.st_mode = mode_of(transport.nodes_.at(node_ino).kind);
        entries.emplace_back(name, attr);
      }
    }
    std::vector<char> buffer(size);
    size_t used = 0;
    for (size_t index = static_cast<size_t>(offset); index < entries.size(); ++index) {
      const auto& [name, attr] = entries[index];
      const size_t needed = fuse_add_direntry(req, buffer.data() + used, size - used, name.c_str(),
                                              &attr, static_cast<off_t>(index + 1));
      if (needed > size - used) break;
      used += needed;
    }
    fuse_reply_buf(req, buffer.data(), used);
  }

  static void ioctl(fuse_req_t req, fuse_ino_t, unsigned cmd, void*, fuse_file_info* fi,
                    unsigned flags, const void* in, size_t in_size, size_t out_size) {
    if ((flags & FUSE_IOCTL_DIR) != 0) {
      fuse_reply_err(req, ENOTTY);
      return;
    }
    of(req).service_.ioctl(req, file_of(fi), cmd, in, in_size, out_size, nullptr);
  }

  static void poll(fuse_req_t req, fuse_ino_t, fuse_file_info* fi, fuse_pollhandle* handle) {
    of(req).service_.poll(req, file_of(fi), handle);
  }

  // Only what a directory of device files needs; libfuse answers ENOSYS to the rest (mkdir,
  // unlink, xattrs, ...), which the kernel reports as "Function not implemented".
  static constexpr fuse_lowlevel_ops make_table() noexcept {
    fuse_lowlevel_ops table{};
    table.init = &Operations::init;
    table.lookup = &Operations::lookup;
    table.forget = &Operations::forget;
    table.getattr = &Operations::getattr;
    table.setattr = &Operations::setattr;
    table.open = &Operations::open;
    table.read = &Operations::read;
    table.write = &Operations::write;
    table.flush = &Operations::flush;
    table.release = &Operations::release;
    table.fsync = &Operations::fsync;
    table.opendir = &Operations::opendir;
    table.readdir = &Operations::readdir;
    table.ioctl = &Operations::ioctl;
    table.poll = &Operations::poll;
    return table;
  }
  static const fuse_lowlevel_ops kTable;
};

const fuse_lowlevel_ops FuseTransport::Operations::kTable = FuseTransport::Operations::make_table();

// ---- FuseTransport ----

FuseTransport::FuseTransport(Service& service, Settings settings)
    : service_(service),
      settings_(std::move(settings)),
      owner_uid_(geteuid()),
      owner_gid_(getegid()),
      started_(time(nullptr)) {
  nodes_.emplace(kControlIno, Node{DeviceKind::kControl, "synchmess", nullptr});
  nodes_.emplace(kConfigIno, Node{DeviceKind::kConfig, "config", nullptr});
  by_name_.emplace("synchmess", kControlIno);
  by_name_.emplace("config", kConfigIno);
}

FuseTransport::~FuseTransport() {
  shutdown();
}

core::Status FuseTransport::check_mount_dir() const {
  const std::string& dir = settings_.mount_dir;
  struct stat st {};
  const auto stale = [&dir] {
    log::error(
        "{} is a stale FUSE mount (a previous server ended without unmounting): run "
        "'fusermount3 -u {}' (or 'umount -l {}' as root), then start again",
        dir, dir, dir);
    return core::make_error(std::errc::not_connected);
  };
  if (stat(dir.c_str(), &st) != 0) {
    const int error = errno;
    if (error == ENOTCONN) return stale();
    log::error("cannot use {} as the mount point: {}", dir, std::strerror(error));
    return core::make_error(static_cast<std::errc>(error));
  }
  if (!S_ISDIR(st.st_mode)) {
    log::error("{} is not a directory: --fuse-mount takes an empty directory", dir);
    return core::make_error(std::errc::not_a_directory);
  }
  if (dir.size() > kMaxMountDirLength) {
    log::error(
        "{} is {} bytes long: a group's path (DIR/<name of up to 63 bytes>) would not fit the "
        "{} bytes install answers with; use a directory of at most {} bytes (e.g. /run/synch)",
        dir, dir.size(), SYNCH_PATH_MAX, kMaxMountDirLength);
    return core::make_error(std::errc::filename_too_long);
  }
  const auto points = mount_points();
  if (std::find(points.begin(), points.end(), dir) != points.end()) {
    // stat() may have answered from the kernel's attribute cache; statfs always asks the server.
    struct statfs fs {};
    if (statfs(dir.c_str(), &fs) != 0 && errno == ENOTCONN) return stale();
    log::error(
        "{} is already a mount point (another synchmess-cuse?): unmount it first with "
        "'fusermount3 -u {}'",
        dir, dir);
    return core::make_error(std::errc::device_or_resource_busy);
  }
  if (!settings_.allow_nonempty) {
    if (const std::string entry = first_entry(dir); !entry.empty()) {
      log::error(
          "{} is not empty (it holds '{}'): the mount would hide its files while the server "
          "runs; use an empty directory, or --allow-nonempty to mount over them",
          dir, entry);
      return core::make_error(std::errc::directory_not_empty);
    }
  }
  return {};
}

core::Status FuseTransport::new_session() {
  // A root server lets every user in and has the kernel check the files' modes; otherwise the
  // mount is the server user's own (FUSE's default).
  std::vector<std::string> arguments{"synchmess-cuse", "-o", "fsname=synchmess,subtype=synchmess"};
  if (owner_uid_ == 0) {
    arguments.insert(arguments.end(), {"-o", "allow_other,default_permissions"});
  } else {
    arguments.insert(arguments.end(), {"-o", "default_permissions"});
  }
  std::vector<char*> argv;
  for (auto& argument : arguments)
    argv.push_back(argument.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  session_ = fuse_session_new(&args, &Operations::kTable, sizeof Operations::kTable, this);
  fuse_opt_free_args(&args);
  if (session_ == nullptr) {
    log::error("fuse_session_new failed");
    return core::make_error(std::errc::io_error);
  }
  return {};
}

core::Status FuseTransport::attach(int fd) {
  if (auto created = new_session(); !created) return created;
  // "/dev/fd/N" makes libfuse adopt the descriptor without mounting anything.
  const std::string adopt = "/dev/fd/" + std::to_string(fd);
  if (fuse_session_mount(session_, adopt.c_str()) != 0) {
    log::error("fuse_session_mount({}) failed", adopt);
    fuse_session_destroy(session_);
    session_ = nullptr;
    return core::make_error(std::errc::io_error);
  }
  return {};
}

void FuseTransport::process(const void* request, size_t size) noexcept {
  fuse_buf buffer{};
  buffer.size = size;
  buffer.mem = const_cast<void*>(request);
  fuse_session_process_buf(session_, &buffer);
}

core::Status FuseTransport::start() {
  if (auto usable = check_mount_dir(); !usable) return usable;
  if (auto created = new_session(); !created) return created;
  if (fuse_session_mount(session_, settings_.mount_dir.c_str()) != 0) {
    log::error(
        "cannot mount FUSE at {} (is /dev/fuse there? for a user, is fusermount3 "
        "installed?)",
        settings_.mount_dir);
    fuse_session_destroy(session_);
    session_ = nullptr;
    return core::make_error(std::errc::io_error);
  }
  mounted_ = true;
  struct sigaction wake {};
  wake.sa_handler = [](int) {};  // only interrupts the read: no SA_RESTART
  sigemptyset(&wake.sa_mask);
  sigaction(kWakeSignal, &wake, nullptr);
  reader_ = std::thread([this] { serve(); });
  log::info("serving the devices as files of {} (FUSE{})", settings_.mount_dir,
            owner_uid_ == 0 ? ", allow_other,default_permissions" : "");
  return {};
}

void FuseTransport::shutdown() noexcept {
  if (session_ == nullptr) return;
  // The reader leaves first, then the unmount closes the session fd (closing it under a running
  // read would race with the fd's reuse). The signal makes its blocked read fail with EINTR; it
  // is sent again until the reader is gone, as it may land just before the read starts. Requests
  // still queued are aborted by the kernel when the session fd closes: their callers get
  // ENOTCONN, none waits.
  unmounting_.store(true);
  if (reader_.joinable()) {
    while (!reader_done_.load()) {
      pthread_kill(reader_.native_handle(), kWakeSignal);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    reader_.join();
  }
  if (mounted_) fuse_session_unmount(session_);
  mounted_ = false;
  files_.close_all();  // before the session: no poll notification may follow it
  fuse_session_destroy(session_);
  session_ = nullptr;
  log::info("unmounted {}", settings_.mount_dir);
}

void FuseTransport::serve() noexcept {
  sigset_t wake;
  sigemptyset(&wake);
  sigaddset(&wake, kWakeSignal);
  pthread_sigmask(SIG_UNBLOCK, &wake, nullptr);
  Worker worker;  // the same buffer the event loop's workers use
  worker.buffer.mem = std::malloc(EventLoop::kRequestBufferSize);
  if (worker.buffer.mem == nullptr) {
    log::error("FUSE reader: cannot allocate its request buffer");
    reader_done_.store(true);
    return;
  }
  while (!unmounting_.load()) {
    const int received = fuse_session_receive_buf(session_, &worker.buffer);
    if (received == -EINTR) continue;
    if (received <= 0) break;  // unmounted from outside (ENODEV)
    fuse_session_process_buf(session_, &worker.buffer);
  }
  if (!unmounting_.load()) {
    log::warning("the FUSE mount at {} was unmounted from outside; stop the server with SIGTERM",
                 settings_.mount_dir);
  }
  std::free(worker.buffer.mem);
  reader_done_.store(true);
}

std::string FuseTransport::path_of(std::string_view group) const {
  return settings_.mount_dir + "/" + std::string(group);
}

void FuseTransport::create_group_device(std::shared_ptr<core::Group> group,
                                        std::function<void(core::Status)> done) {
  {
    std::lock_guard lock(mu_);
    if (group->closed()) {  // removed before its file was made
      done(core::make_error(std::errc::identifier_removed));
      return;
    }
    const fuse_ino_t ino = next_ino_++;
    if (auto old = by_name_.find(group->name()); old != by_name_.end()) {
      nodes_.erase(old->second);  // a removed group whose removal has not reached us yet
    }
    by_name_[group->name()] = ino;
    nodes_.emplace(ino, Node{DeviceKind::kGroup, group->name(), group});
  }
  done({});  // the file exists as soon as it is in the table
}

void FuseTransport::remove_group_device(std::shared_ptr<core::Group> group,
                                        std::function<void()> done) {
  {
    std::lock_guard lock(mu_);
    if (auto found = by_name_.find(group->name());
        found != by_name_.end() && nodes_.at(found->second).group == group) {
      nodes_.erase(found->second);
      by_name_.erase(found);
    }
  }
  done();  // files still open on it get ENODEV from the closed group
}

bool FuseTransport::find(fuse_ino_t ino, Node& out) const {
  std::lock_guard lock(mu_);
  auto found = nodes_.find(ino);
  if (found == nodes_.end()) return false;
  out = found->second;
  return true;
}

struct stat FuseTransport::attributes(fuse_ino_t ino, const Node& node) const noexcept {
  struct stat attr {};
  attr.st_ino = ino;
  attr.st_mode = ino == kRootIno ? (S_IFDIR | 0755) : mode_of(node.kind);
  attr.st_nlink = ino == kRootIno ? 2 : 1;
  attr.st_uid = owner_uid_;
  attr.st_gid = owner_gid_;
  attr.st_atime = attr.st_mtime = attr.st_ctime = started_;
  attr.st_blksize = 4096;
  // A group file's size is the largest message: the kernel runs writes of one file in parallel
  // only when they do not pass its size (see Service::OpenFlags::kFuseStreamParallelWrites).
  if (node.kind == DeviceKind::kGroup && ino != kRootIno)
    attr.st_size = SYNCH_MAX_MESSAGE_SIZE_LIMIT;
  return attr;
}

}  // namespace synchmess::server
