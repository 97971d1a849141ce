// synchmess_echo_fs: the floor of synchmess_kernel_bench. A bare libfuse low-level file system
// with one regular file, `echo`: a write() stores its bytes in the open file, the next read()
// returns them (and empties it). Every round trip through the kernel's FUSE path that synchmess
// makes (write, then read, on an open file of a mount) is made here too, with nothing behind it:
// what synchmess_kernel_bench measures beyond this is synchmess's own work.
//
// It is set up exactly like synchmess-cuse --fuse-mount (server/fuse_transport.cpp), so that the
// two differ only in what happens inside a request:
//   - mount options: allow_other,default_permissions when run by root, else default_permissions;
//   - init: no splice (requests land in the reader's memory buffer), no writeback cache, atomic
//     O_TRUNC when the kernel offers it;
//   - open files: direct_io (every write() and read() is one request) and nonseekable;
//   - lookup replies with entry_timeout 0 and attr_timeout 1 s, getattr with attr_timeout 1 s;
//   - one thread reads the session fd with blocking reads (fuse_session_loop) and answers each
//     request before it reads the next.
//
// Usage: synchmess_echo_fs MOUNTDIR. Runs in the foreground; SIGINT, SIGTERM or SIGHUP unmounts
// and exits 0. Exit 1 when it cannot mount or the session fails.
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kEchoIno = 2;
constexpr const char* kEchoName = "echo";
// The same timeouts as synchmess's FUSE transport.
constexpr double kAttrTimeout = 1.0;
constexpr double kEntryTimeout = 0.0;

// What one open file holds: the bytes of the last write() not read back yet.
struct EchoFile {
  std::vector<char> bytes;
};

EchoFile& file_of(const fuse_file_info* fi) noexcept {
  return *reinterpret_cast<EchoFile*>(fi->fh);
}

// Attributes never change (as in synchmess): owner = the server's user, start time as times.
struct stat attributes(fuse_ino_t ino) noexcept {
  static const time_t started = time(nullptr);
  struct stat attr {};
  attr.st_ino = ino;
  attr.st_mode = ino == kRootIno ? (S_IFDIR | 0755) : (S_IFREG | 0666);
  attr.st_nlink = ino == kRootIno ? 2 : 1;
  attr.st_uid = geteuid();
  attr.st_gid = getegid();
  attr.st_atime = attr.st_mtime = attr.st_ctime = started;
  attr.st_blksize = 4096;
  return attr;
}

void echo_init(void*, fuse_conn_info* conn) {
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  if ((conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) != 0) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

void echo_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != kRootIno || std::strcmp(name, kEchoName) != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  fuse_entry_param entry{};
  entry.ino = kEchoIno;
  entry.attr = attributes(kEchoIno);
  entry.attr_timeout = kAttrTimeout;
  entry.entry_timeout = kEntryTimeout;
  fuse_reply_entry(req, &entry);
}

void echo_forget(fuse_req_t req, fuse_ino_t, uint64_t) {
  fuse_reply_none(req);  // two fixed inodes: nothing to count
}

void echo_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != kRootIno && ino != kEchoIno) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  const struct stat attr = attributes(ino);
  fuse_reply_attr(req, &attr, kAttrTimeout);
}

void echo_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kEchoIno) {
    fuse_reply_err(req, ino == kRootIno ? EISDIR : ENOENT);
    return;
  }
  auto* file = new EchoFile;
  file->bytes.reserve(4096);  // the usual message sizes never reallocate
  fi->fh = reinterpret_cast<uint64_t>(file);
  fi->direct_io = 1;
  fi->nonseekable = 1;
  if (fuse_reply_open(req, fi) != 0) delete file;  // the caller went away: no release will come
}

// Returns what the last write stored (up to `size` bytes) and empties the file.
void echo_read(fuse_req_t req, fuse_ino_t, size_t size, off_t, fuse_file_info* fi) {
  EchoFile& file = file_of(fi);
  const size_t count = size < file.bytes.size() ? size : file.bytes.size();
  fuse_reply_buf(req, file.bytes.data(), count);
  file.bytes.clear();
}

// Stores the written bytes in the open file (replacing what was there).
void echo_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t,
                fuse_file_info* fi) {
  file_of(fi).bytes.assign(data, data + size);
  fuse_reply_write(req, size);
}

// close() sends FLUSH: answered like synchmess does (it has nothing to flush here).
void echo_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  fuse_reply_err(req, 0);
}

void echo_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete &file_of(fi);
  fuse_reply_err(req, 0);
}

fuse_lowlevel_ops make_operations() noexcept {
  fuse_lowlevel_ops table{};
  table.init = &echo_init;
  table.lookup = &echo_lookup;
  table.forget = &echo_forget;
  table.getattr = &echo_getattr;
  table.open = &echo_open;
  table.read = &echo_read;
  table.write = &echo_write;
  table.flush = &echo_flush;
  table.release = &echo_release;
  return table;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || argv[1][0] == '-') {
    std::fprintf(stderr,
                 "Usage: %s MOUNTDIR\n"
                 "Serves one file, MOUNTDIR/echo, whose read() returns what the last write() "
                 "stored (the floor of synchmess_kernel_bench). SIGINT/SIGTERM unmount and exit.\n",
                 argv[0]);
    return 2;
  }
  const char* const mount_dir = argv[1];

  // The mount options of synchmess-cuse --fuse-mount (FuseTransport::start).
  std::vector<std::string> arguments{argv[0], "-o", "fsname=synchmess_echo,subtype=synchmess_echo"};
  if (geteuid() == 0) {
    arguments.insert(arguments.end(), {"-o", "allow_other,default_permissions"});
  } else {
    arguments.insert(arguments.end(), {"-o", "default_permissions"});
  }
  std::vector<char*> args_vector;
  for (auto& argument : arguments)
    args_vector.push_back(argument.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(args_vector.size()), args_vector.data());

  static const fuse_lowlevel_ops kOperations = make_operations();
  fuse_session* session = fuse_session_new(&args, &kOperations, sizeof kOperations, nullptr);
  fuse_opt_free_args(&args);
  if (session == nullptr) {
    std::fprintf(stderr, "%s: fuse_session_new failed\n", argv[0]);
    return 1;
  }
  // SIGINT/SIGTERM/SIGHUP end the loop: the handlers are installed without SA_RESTART, so the
  // blocked read of the session fd fails with EINTR and the loop sees the session exited.
  if (fuse_set_signal_handlers(session) != 0) {
    fuse_session_destroy(session);
    return 1;
  }
  if (fuse_session_mount(session, mount_dir) != 0) {
    std::fprintf(stderr, "%s: cannot mount FUSE at %s\n", argv[0], mount_dir);
    fuse_remove_signal_handlers(session);
    fuse_session_destroy(session);
    return 1;
  }
  std::fprintf(stderr, "%s: serving %s/%s\n", argv[0], mount_dir, kEchoName);

  // One thread, blocking reads of the session fd, one request at a time.
  const int result = fuse_session_loop(session);

  fuse_session_unmount(session);
  fuse_remove_signal_handlers(session);
  fuse_session_destroy(session);
  // libfuse 3.14 returns the number of the signal that ended the loop (> 0), or -errno when the
  // session failed; 0 when the file system was unmounted from outside.
  if (result < 0) {
    std::fprintf(stderr, "%s: the session failed: %s\n", argv[0], std::strerror(-result));
    return 1;
  }
  std::fprintf(stderr, "%s: unmounted %s\n", argv[0], mount_dir);
  return 0;
}
