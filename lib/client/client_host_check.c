/*
 * Host-side check of the client library: needs no server, no /dev/cuse, no root.
 *
 * 1. Paths: synch_dir() and synch_device_path() with SYNCHMESS_DIR unset, empty, set (with and
 *    without trailing '/'), and name validation.
 * 2. No server: SYNCHMESS_DIR is an empty temporary directory; every call fails cleanly with
 *    ENOENT, argument errors come before any system call (EINVAL, never ENOTTY), nothing is
 *    created in the directory, no descriptor leaks. Regular files named like the devices prove
 *    which path each call opens (ioctl on a regular file gives ENOTTY). The header is also used
 *    from C++ (client_cxx_check.cpp).
 * 3. Fake server: this program defines ioctl() itself, so the library (linked statically) calls
 *    it; for descriptors of the fake device files it plays the server. That checks what the
 *    library puts into each request (command, NUL-padded name, open mode, O_CLOEXEC) and what it
 *    makes of the answers (path copy, created, ERANGE, EPROTO, counts, errno pass-through).
 *
 * Prints "ok   <what>" / "FAIL <what>: <why>" per check and exits non-zero on any failure.
 */
#define _GNU_SOURCE /* mkdtemp, syscall */

#include <synchmess/client.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int synch_cxx_check(void); /* client_cxx_check.cpp */

/* ---- reporting ---- */

static int g_checks;
static int g_failures;

static void check(int passed, const char* what, const char* why_format, ...) {
  ++g_checks;
  if (passed) {
    printf("ok   %s\n", what);
    return;
  }
  ++g_failures;
  printf("FAIL %s: ", what);
  {
    va_list arguments;
    va_start(arguments, why_format);
    vprintf(why_format, arguments);
    va_end(arguments);
  }
  printf("\n");
}

/* A call that must fail with -1 and `expected` errno. */
static void check_error(long result, int error, int expected, const char* what) {
  check(result == -1 && error == expected, what, "returned %ld (%s), expected -1 (%s)", result,
        result == -1 ? strerror(error) : "no error", strerror(expected));
}

/* A call that must return `expected`. */
static void check_result(long result, int error, long expected, const char* what) {
  check(result == expected, what, "returned %ld (%s), expected %ld", result,
        result == -1 ? strerror(error) : "no error", expected);
}

/* The call is evaluated before errno is read (argument evaluation order is unspecified). */
#define CHECK_ERROR(call, expected, what)           \
  do {                                              \
    const long result_ = (long)(call);              \
    const int error_ = errno;                       \
    check_error(result_, error_, (expected), what); \
  } while (0)
#define CHECK_RESULT(call, expected, what)           \
  do {                                               \
    const long result_ = (long)(call);               \
    const int error_ = errno;                        \
    check_result(result_, error_, (expected), what); \
  } while (0)

/* The lowest free descriptor: unchanged across calls means none leaked. */
static int lowest_free_fd(void) {
  const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) close(fd);
  return fd;
}

/* ---- the fake server ---- */

enum fake_node { FAKE_NONE, FAKE_CONTROL, FAKE_CONFIG, FAKE_GROUP };

static struct {
  int on;
  dev_t device[4];
  ino_t inode[4];
  int requests;
  unsigned long last_command;
  int last_access_mode; /* O_RDONLY / O_WRONLY / O_RDWR of the descriptor */
  int last_cloexec;
  struct synch_install last_install;
  group_t last_remove;
  int installed;
  int fail_errno;   /* the next request fails with this errno */
  int bad_path;     /* the next install answers with an unterminated path */
  int bad_created;  /* the next install answers created = 2 */
  uint32_t delay;   /* SET/GET_SEND_DELAY */
  uint32_t timeout; /* SET_RECV_TIMEOUT */
  struct synch_params params;
} g_fake;

static void fake_register(enum fake_node node, const char* path) {
  struct stat status;
  if (stat(path, &status) != 0) {
    perror(path);
    exit(2);
  }
  g_fake.device[node] = status.st_dev;
  g_fake.inode[node] = status.st_ino;
}

static enum fake_node fake_node_of(int fd) {
  struct stat status;
  int node;
  if (fstat(fd, &status) != 0) return FAKE_NONE;
  for (node = FAKE_CONTROL; node <= FAKE_GROUP; ++node) {
    if (g_fake.inode[node] != 0 && status.st_dev == g_fake.device[node] &&
        status.st_ino == g_fake.inode[node]) {
      return (enum fake_node)node;
    }
  }
  return FAKE_NONE;
}

static int fake_fail(int error) {
  errno = error;
  return -1;
}

static int fake_control(unsigned long request, void* argument) {
  if (request == SYNCH_IOC_INSTALL_GROUP) {
    struct synch_install* install = argument;
    g_fake.last_install = *install;
    memset(install->path, 0, sizeof install->path);
    snprintf(install->path, sizeof install->path, "/dev/synch/%s", install->group.name);
    if (g_fake.bad_path) memset(install->path, 'x', sizeof install->path);
    install->created = g_fake.bad_created ? 2u : (g_fake.installed ? 0u : 1u);
    g_fake.bad_path = g_fake.bad_created = 0;
    g_fake.installed = 1;
    return 0;
  }
  if (request == SYNCH_IOC_REMOVE_GROUP) {
    g_fake.last_remove = *(group_t*)argument;
    if (!g_fake.installed) return fake_fail(ENOENT);
    g_fake.installed = 0;
    return 0;
  }
  return fake_fail(ENOTTY);
}

static int fake_group(unsigned long request, void* argument) {
  switch (request) {
    case SYNCH_IOC_SLEEP_ON_BARRIER:
      return 0;
    case SYNCH_IOC_AWAKE_BARRIER:
      return 4;
    case SYNCH_IOC_SET_SEND_DELAY:
      g_fake.delay = *(const uint32_t*)argument;
      return 0;
    case SYNCH_IOC_GET_SEND_DELAY:
      *(uint32_t*)argument = g_fake.delay;
      return 0;
    case SYNCH_IOC_REVOKE_DELAYED_MESSAGES:
      return 3;
    case SYNCH_IOC_FLUSH:
      return 2;
    case SYNCH_IOC_SET_RECV_TIMEOUT:
    case SYNCH_IOC_SET_SEND_TIMEOUT:
      g_fake.timeout = *(const uint32_t*)argument;
      return 0;
    case SYNCH_IOC_GET_STATS: {
      struct synch_group_stats* stats = argument;
      stats->queued_messages = 1;
      stats->queued_bytes = 2;
      stats->delayed_messages = 3;
      stats->delayed_bytes = 4;
      stats->sleepers = 5;
      stats->readers_waiting = 6;
      return 0;
    }
    default:
      return fake_fail(ENOTTY);
  }
}

static int fake_config(unsigned long request, void* argument) {
  if (request == SYNCH_IOC_GET_PARAMS) {
    *(struct synch_params*)argument = g_fake.params;
    return 0;
  }
  if (request == SYNCH_IOC_SET_PARAMS) {
    const struct synch_params* params = argument;
    if (params->max_message_size != 0) g_fake.params.max_message_size = params->max_message_size;
    if (params->max_storage_size != 0) g_fake.params.max_storage_size = params->max_storage_size;
    return 0;
  }
  return fake_fail(ENOTTY);
}

/* Replaces libc's ioctl() for this program (and the static client library linked into it). Like
 * libc's, it takes the optional third argument as a pointer. */
int ioctl(int fd, unsigned long request, ...) {
  void* argument;
  enum fake_node node;
  int flags;
  va_list arguments;
  va_start(arguments, request);
  argument = va_arg(arguments, void*);
  va_end(arguments);
  node = g_fake.on ? fake_node_of(fd) : FAKE_NONE;
  if (node == FAKE_NONE) return (int)syscall(SYS_ioctl, fd, request, argument);
  ++g_fake.requests;
  g_fake.last_command = request;
  flags = fcntl(fd, F_GETFL);
  g_fake.last_access_mode = flags < 0 ? -1 : (flags & O_ACCMODE);
  g_fake.last_cloexec = (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
  if (g_fake.fail_errno != 0) {
    const int error = g_fake.fail_errno;
    g_fake.fail_errno = 0;
    return fake_fail(error);
  }
  switch (node) {
    case FAKE_CONTROL:
      return fake_control(request, argument);
    case FAKE_CONFIG:
      return fake_config(request, argument);
    default:
      return fake_group(request, argument);
  }
}

/* ---- helpers ---- */

static char g_dir[256];

static void path_in_dir(char* path, size_t size, const char* node) {
  const int length = snprintf(path, size, "%s/%s", g_dir, node);
  if (length < 0 || (size_t)length >= size) {
    fprintf(stderr, "path too long: %s/%s\n", g_dir, node);
    exit(2);
  }
}

static void create_file(const char* node) {
  char path[512];
  int fd;
  path_in_dir(path, sizeof path, node);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror(path);
    exit(2);
  }
  close(fd);
}

static int files_in_dir(void) {
  int count = 0;
  struct dirent* entry;
  DIR* dir = opendir(g_dir);
  if (dir == NULL) return -1;
  while ((entry = readdir(dir)) != NULL) {
    if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) ++count;
  }
  closedir(dir);
  return count;
}

static void remove_dir(void) {
  static const char* const nodes[] = {"synchmess", "config", "grp"};
  char path[512];
  size_t i;
  for (i = 0; i < sizeof nodes / sizeof nodes[0]; ++i) {
    path_in_dir(path, sizeof path, nodes[i]);
    unlink(path);
  }
  rmdir(g_dir);
}

/* synch_device_path(node) must give `expected`. */
static void check_path(const char* node, const char* expected, const char* what) {
  char path[512];
  const int length = synch_device_path(node, path, sizeof path);
  const int error = errno;
  check(length >= 0 && strcmp(path, expected) == 0 && (size_t)length == strlen(expected), what,
        "got %d \"%s\" (%s), expected \"%s\"", length, length >= 0 ? path : "",
        length >= 0 ? "no error" : strerror(error), expected);
}

/* ---- 1. paths ---- */

static void check_paths(void) {
  char path[512];
  char expected[512];
  char name[SYNCH_NAME_MAX + 1];
  int result;
  int error;

  unsetenv(SYNCH_DIR_ENV);
  check(strcmp(synch_dir(), "/dev/synch") == 0, "synch_dir() without SYNCHMESS_DIR is /dev/synch",
        "got \"%s\"", synch_dir());
  check_path("synchmess", "/dev/synch/synchmess", "control device path by default");
  check_path("config", "/dev/synch/config", "config device path by default");
  check_path("grp", "/dev/synch/grp", "group device path by default");
  setenv(SYNCH_DIR_ENV, "", 1);
  check(strcmp(synch_dir(), "/dev/synch") == 0, "an empty SYNCHMESS_DIR means /dev/synch",
        "got \"%s\"", synch_dir());

  setenv(SYNCH_DIR_ENV, g_dir, 1);
  check(strcmp(synch_dir(), g_dir) == 0, "synch_dir() follows SYNCHMESS_DIR", "got \"%s\"",
        synch_dir());
  path_in_dir(expected, sizeof expected, "synchmess");
  check_path("synchmess", expected, "control device path is SYNCHMESS_DIR/synchmess");
  path_in_dir(expected, sizeof expected, "config");
  check_path("config", expected, "config device path is SYNCHMESS_DIR/config");
  path_in_dir(expected, sizeof expected, "grp");
  check_path("grp", expected, "group device path is SYNCHMESS_DIR/<name>");
  snprintf(path, sizeof path, "%s//", g_dir);
  setenv(SYNCH_DIR_ENV, path, 1);
  check_path("grp", expected, "trailing '/' in SYNCHMESS_DIR is not doubled");
  setenv(SYNCH_DIR_ENV, "/", 1);
  check_path("grp", "/grp", "SYNCHMESS_DIR=/ gives /<name>");
  setenv(SYNCH_DIR_ENV, "rel/dir", 1);
  check_path("grp", "rel/dir/grp", "a relative SYNCHMESS_DIR is kept relative");
  setenv(SYNCH_DIR_ENV, g_dir, 1);

  memset(name, 'n', sizeof name);
  name[SYNCH_NAME_MAX - 1] = '\0'; /* 63 bytes: the longest valid name */
  result = synch_device_path(name, path, sizeof path);
  CHECK_RESULT(result, (long)(strlen(g_dir) + 1 + 63), "a 63-byte name is accepted");
  name[SYNCH_NAME_MAX - 1] = 'n';
  name[SYNCH_NAME_MAX] = '\0'; /* 64 bytes */
  result = synch_device_path(name, path, sizeof path);
  CHECK_ERROR(result, EINVAL, "a 64-byte name is EINVAL");
  {
    static const char* const bad[] = {"",       ".hidden", "..",          "a/b",
                                      "../etc", "sp ace",  "caf\xc3\xa9", "tab\t"};
    size_t i;
    int all = 1;
    for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
      errno = 0;
      if (synch_device_path(bad[i], path, sizeof path) != -1 || errno != EINVAL) {
        all = 0;
        printf("     accepted bad name \"%s\"\n", bad[i]);
      }
    }
    check(all, "invalid names (empty, leading '.', '/', space, non-ASCII) are EINVAL", "see above");
  }
  result = synch_device_path("a-b_c.9Z", path, sizeof path);
  check(result > 0, "[A-Za-z0-9_.-] names are accepted", "%s", strerror(errno));
  result = synch_device_path(NULL, path, sizeof path);
  CHECK_ERROR(result, EINVAL, "synch_device_path(NULL name) is EINVAL");
  result = synch_device_path("grp", NULL, 10);
  CHECK_ERROR(result, EINVAL, "synch_device_path(NULL buffer) is EINVAL");
  result = synch_device_path("grp", path, 0);
  CHECK_ERROR(result, EINVAL, "synch_device_path(size 0) is EINVAL");
  path_in_dir(expected, sizeof expected, "grp");
  strcpy(path, "sentinel");
  result = synch_device_path("grp", path, strlen(expected));
  error = errno;
  check(result == -1 && error == ERANGE && path[0] == '\0', "a buffer one byte short is ERANGE",
        "returned %d (%s), path \"%s\"", result, strerror(error), path);
  result = synch_device_path("grp", path, strlen(expected) + 1);
  CHECK_RESULT(result, (long)strlen(expected), "a buffer of exactly the right size fits");
}

/* ---- 2. no server ---- */

static void check_no_server(void) {
  char path[SYNCH_PATH_MAX];
  struct synch_params params = {0, 0};
  struct synch_group_stats stats;
  uint32_t delay;
  int created = -1;
  int fd;
  int result;
  const int free_fd = lowest_free_fd();

  setenv(SYNCH_DIR_ENV, g_dir, 1);
  result = synch_install_group("grp", path, sizeof path, &created);
  CHECK_ERROR(result, ENOENT, "install without a server is ENOENT");
  check(created == -1, "a failed install leaves *created alone", "created = %d", created);
  CHECK_ERROR(synch_remove_group("grp"), ENOENT, "remove without a server is ENOENT");
  CHECK_ERROR(synch_open_group("grp", O_RDWR), ENOENT, "open without a server is ENOENT");
  CHECK_ERROR(synch_get_params(&params), ENOENT, "get_params without a server is ENOENT");
  params.max_message_size = 100;
  CHECK_ERROR(synch_set_params(&params), ENOENT, "set_params without a server is ENOENT");

  CHECK_ERROR(synch_install_group(NULL, path, sizeof path, NULL), EINVAL,
              "install(NULL) is EINVAL");
  CHECK_ERROR(synch_install_group("synchmess", NULL, 0, NULL), EINVAL,
              "install(\"synchmess\") (reserved) is EINVAL");
  CHECK_ERROR(synch_install_group("config", NULL, 0, NULL), EINVAL,
              "install(\"config\") (reserved) is EINVAL");
  CHECK_ERROR(synch_install_group("grp", path, 0, NULL), EINVAL,
              "install with a buffer of size 0 is EINVAL");
  CHECK_ERROR(synch_remove_group("../grp"), EINVAL, "remove(\"../grp\") is EINVAL");
  CHECK_ERROR(synch_open_group("config", O_RDWR), EINVAL,
              "open_group(\"config\") (reserved) is EINVAL");
  CHECK_ERROR(synch_open_group("grp", O_RDWR | O_CREAT), EINVAL,
              "open_group with O_CREAT is EINVAL");
  CHECK_ERROR(synch_get_stats(0, NULL), EINVAL, "get_stats(NULL) is EINVAL");
  CHECK_ERROR(synch_get_send_delay(0, NULL), EINVAL, "get_send_delay(NULL) is EINVAL");
  CHECK_ERROR(synch_get_params(NULL), EINVAL, "get_params(NULL) is EINVAL");
  CHECK_ERROR(synch_set_params(NULL), EINVAL, "set_params(NULL) is EINVAL");
  params.max_message_size = SYNCH_MAX_MESSAGE_SIZE_LIMIT + 1;
  CHECK_ERROR(synch_set_params(&params), EINVAL,
              "set_params(max_message_size over the CUSE limit) is EINVAL");
  check(files_in_dir() == 0, "nothing was created in SYNCHMESS_DIR", "%d files", files_in_dir());

  /* Regular files in place of the devices: an ioctl that reaches one gives ENOTTY. */
  create_file("synchmess");
  create_file("config");
  CHECK_ERROR(synch_install_group("grp", path, sizeof path, NULL), ENOTTY,
              "install opens SYNCHMESS_DIR/synchmess (ENOTTY from a regular file)");
  CHECK_ERROR(synch_remove_group("grp"), ENOTTY,
              "remove opens SYNCHMESS_DIR/synchmess (ENOTTY from a regular file)");
  CHECK_ERROR(synch_install_group("a/b", path, sizeof path, NULL), EINVAL,
              "a bad name is EINVAL before the control device is touched");
  CHECK_ERROR(synch_get_params(&params), ENOTTY,
              "get_params opens SYNCHMESS_DIR/config (ENOTTY from a regular file)");
  params.max_message_size = 100;
  CHECK_ERROR(synch_set_params(&params), ENOTTY,
              "set_params opens SYNCHMESS_DIR/config (ENOTTY from a regular file)");
  create_file("grp");
  fd = synch_open_group("grp", O_RDWR);
  check(fd >= 0, "open_group opens SYNCHMESS_DIR/<name>", "%s", strerror(errno));
  if (fd >= 0) {
    check((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, "open_group sets O_CLOEXEC", "flag not set");
    CHECK_RESULT(synch_send(fd, "abc", 3), 3, "synch_send is one write()");
    CHECK_ERROR(synch_get_stats(fd, &stats), ENOTTY, "get_stats on a non-device is ENOTTY");
    CHECK_ERROR(synch_get_send_delay(fd, &delay), ENOTTY,
                "get_send_delay on a non-device is ENOTTY");
    CHECK_ERROR(synch_awake_barrier(fd), ENOTTY, "awake on a non-device is ENOTTY");
    close(fd);
  }
  CHECK_ERROR(synch_send(-1, "x", 1), EBADF, "send on a bad descriptor is EBADF");
  CHECK_ERROR(synch_receive(-1, path, sizeof path), EBADF, "receive on a bad descriptor is EBADF");
  CHECK_ERROR(synch_flush(-1), EBADF, "flush on a bad descriptor is EBADF");
  CHECK_ERROR(synch_sleep_on_barrier(-1), EBADF, "sleep on a bad descriptor is EBADF");
  check(synch_cxx_check() == 0, "the header compiles and links from C++ (extern \"C\")",
        "see client_cxx_check.cpp");
  check(lowest_free_fd() == free_fd, "no descriptor leaked (no server)",
        "lowest free fd %d, was %d", lowest_free_fd(), free_fd);
}

/* ---- 3. fake server ---- */

static void check_fake_server(void) {
  char file[512];
  char path[SYNCH_PATH_MAX];
  char small[5];
  char expected_name[SYNCH_NAME_MAX];
  struct synch_group_stats stats;
  struct synch_params params;
  uint32_t delay = 0;
  int created = -1;
  int requests;
  int result;
  int error;
  int fd;
  const int free_fd = lowest_free_fd();

  setenv(SYNCH_DIR_ENV, g_dir, 1);
  path_in_dir(file, sizeof file, "synchmess");
  fake_register(FAKE_CONTROL, file);
  path_in_dir(file, sizeof file, "config");
  fake_register(FAKE_CONFIG, file);
  path_in_dir(file, sizeof file, "grp");
  fake_register(FAKE_GROUP, file);
  g_fake.params.max_message_size = SYNCH_DEFAULT_MAX_MESSAGE_SIZE;
  g_fake.params.max_storage_size = SYNCH_DEFAULT_MAX_STORAGE_SIZE;
  g_fake.on = 1;

  memset(expected_name, 0, sizeof expected_name);
  strcpy(expected_name, "grp");
  result = synch_install_group("grp", path, sizeof path, &created);
  CHECK_RESULT(result, 0, "install returns 0");
  check(g_fake.last_command == SYNCH_IOC_INSTALL_GROUP, "install sends SYNCH_IOC_INSTALL_GROUP",
        "command %#lx", g_fake.last_command);
  check(memcmp(g_fake.last_install.group.name, expected_name, SYNCH_NAME_MAX) == 0 &&
            g_fake.last_install.reserved == 0,
        "install sends the name NUL-padded and reserved = 0", "request differs");
  check(g_fake.last_access_mode == O_RDWR && g_fake.last_cloexec,
        "the control device is opened O_RDWR | O_CLOEXEC", "access mode %d, cloexec %d",
        g_fake.last_access_mode, g_fake.last_cloexec);
  check(strcmp(path, "/dev/synch/grp") == 0 && created == 1,
        "install copies the server's path and created = 1", "path \"%s\", created %d", path,
        created);
  result = synch_install_group("grp", path, sizeof path, &created);
  check(result == 0 && created == 0, "a second install reports created = 0",
        "returned %d, created %d", result, created);
  result = synch_install_group("grp", NULL, 0, NULL);
  CHECK_RESULT(result, 0, "install with path and created NULL");
  created = -1;
  strcpy(small, "xxxx");
  result = synch_install_group("grp", small, sizeof small, &created);
  error = errno;
  check(result == -1 && error == ERANGE && small[0] == '\0' && created == 0,
        "a path buffer too small is ERANGE (created still reported, path \"\")",
        "returned %d (%s), created %d, path \"%s\"", result, strerror(error), created, small);
  {
    char exact[sizeof "/dev/synch/grp"];
    result = synch_install_group("grp", exact, sizeof exact - 1, NULL);
    CHECK_ERROR(result, ERANGE, "a path buffer one byte short is ERANGE");
    result = synch_install_group("grp", exact, sizeof exact, NULL);
    error = errno;
    check(result == 0 && strcmp(exact, "/dev/synch/grp") == 0,
          "a path buffer of exactly the path's size fits", "returned %d (%s), path \"%s\"", result,
          result == 0 ? "no error" : strerror(error), exact);
  }
  g_fake.bad_path = 1;
  CHECK_ERROR(synch_install_group("grp", path, sizeof path, NULL), EPROTO,
              "an unterminated path from the server is EPROTO");
  g_fake.bad_created = 1;
  CHECK_ERROR(synch_install_group("grp", path, sizeof path, NULL), EPROTO,
              "created = 2 from the server is EPROTO");
  g_fake.fail_errno = ENOSPC;
  CHECK_ERROR(synch_install_group("grp", path, sizeof path, NULL), ENOSPC,
              "the server's ENOSPC is passed through");
  requests = g_fake.requests;
  CHECK_ERROR(synch_install_group(".grp", path, sizeof path, NULL), EINVAL,
              "install(\".grp\") is EINVAL");
  check(g_fake.requests == requests, "an invalid name sends no request", "%d requests sent",
        g_fake.requests - requests);

  result = synch_remove_group("grp");
  CHECK_RESULT(result, 0, "remove returns 0");
  check(g_fake.last_command == SYNCH_IOC_REMOVE_GROUP &&
            memcmp(g_fake.last_remove.name, expected_name, SYNCH_NAME_MAX) == 0,
        "remove sends SYNCH_IOC_REMOVE_GROUP with the NUL-padded name", "request differs");
  CHECK_ERROR(synch_remove_group("grp"), ENOENT, "the server's ENOENT is passed through");
  g_fake.fail_errno = EPERM;
  CHECK_ERROR(synch_remove_group("grp"), EPERM, "the server's EPERM is passed through");

  fd = synch_open_group("grp", O_RDWR | O_NONBLOCK);
  check(fd >= 0, "open_group with O_NONBLOCK", "%s", strerror(errno));
  if (fd >= 0) {
    check((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0, "open_group keeps the caller's flags",
          "O_NONBLOCK lost");
    CHECK_RESULT(synch_awake_barrier(fd), 4, "awake returns the number woken");
    CHECK_RESULT(synch_sleep_on_barrier(fd), 0, "sleep returns 0 when woken");
    g_fake.fail_errno = EIDRM;
    CHECK_ERROR(synch_sleep_on_barrier(fd), EIDRM, "sleep passes EIDRM through");
    g_fake.fail_errno = EINTR;
    CHECK_ERROR(synch_sleep_on_barrier(fd), EINTR, "sleep passes EINTR through");
    result = synch_set_send_delay(fd, 200);
    check(result == 0 && g_fake.delay == 200 && g_fake.last_command == SYNCH_IOC_SET_SEND_DELAY,
          "set_send_delay sends the milliseconds", "returned %d, server got %u", result,
          g_fake.delay);
    result = synch_get_send_delay(fd, &delay);
    check(result == 0 && delay == 200, "get_send_delay reads them back", "returned %d, delay %u",
          result, delay);
    CHECK_RESULT(synch_revoke_delayed_messages(fd), 3, "revoke returns the count");
    CHECK_RESULT(synch_flush(fd), 2, "flush returns the count");
    result = synch_set_recv_timeout(fd, SYNCH_RECV_TIMEOUT_FOREVER);
    check(result == 0 && g_fake.timeout == UINT32_MAX &&
              g_fake.last_command == SYNCH_IOC_SET_RECV_TIMEOUT,
          "set_recv_timeout sends the milliseconds", "returned %d, server got %u", result,
          g_fake.timeout);
    result = synch_set_send_timeout(fd, 750);
    check(result == 0 && g_fake.timeout == 750 && g_fake.last_command == SYNCH_IOC_SET_SEND_TIMEOUT,
          "set_send_timeout sends the milliseconds", "returned %d, server got %u", result,
          g_fake.timeout);
    memset(&stats, 0, sizeof stats);
    result = synch_get_stats(fd, &stats);
    check(result == 0 && stats.queued_messages == 1 && stats.queued_bytes == 2 &&
              stats.delayed_messages == 3 && stats.delayed_bytes == 4 && stats.sleepers == 5 &&
              stats.readers_waiting == 6,
          "get_stats fills every counter", "returned %d", result);
    close(fd);
  }

  memset(&params, 0, sizeof params);
  result = synch_get_params(&params);
  check(result == 0 && params.max_message_size == SYNCH_DEFAULT_MAX_MESSAGE_SIZE &&
            params.max_storage_size == SYNCH_DEFAULT_MAX_STORAGE_SIZE,
        "get_params reads both parameters", "returned %d", result);
  check(g_fake.last_access_mode == O_RDONLY && g_fake.last_cloexec,
        "get_params opens the config device O_RDONLY | O_CLOEXEC", "access mode %d, cloexec %d",
        g_fake.last_access_mode, g_fake.last_cloexec);
  params.max_message_size = 8192;
  params.max_storage_size = 0;
  result = synch_set_params(&params);
  check(result == 0 && g_fake.params.max_message_size == 8192 &&
            g_fake.params.max_storage_size == SYNCH_DEFAULT_MAX_STORAGE_SIZE,
        "set_params sends both fields (0 = unchanged)", "returned %d", result);
  check(g_fake.last_access_mode == O_WRONLY && g_fake.last_cloexec,
        "set_params opens the config device O_WRONLY | O_CLOEXEC", "access mode %d, cloexec %d",
        g_fake.last_access_mode, g_fake.last_cloexec);
  g_fake.fail_errno = EPERM;
  CHECK_ERROR(synch_set_params(&params), EPERM, "set_params passes EPERM through");
  check(lowest_free_fd() == free_fd, "no descriptor leaked (fake server)",
        "lowest free fd %d, was %d", lowest_free_fd(), free_fd);
  g_fake.on = 0;
}

int main(void) {
  const char* tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/synchmess-client-check.XXXXXX",
           (tmp != NULL && tmp[0] != '\0') ? tmp : "/tmp");
  if (mkdtemp(g_dir) == NULL) {
    perror("mkdtemp");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("synchmess client host check, SYNCHMESS_DIR=%s\n", g_dir);
  check_paths();
  check_no_server();
  check_fake_server();
  remove_dir();
  printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
