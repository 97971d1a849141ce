/*
 * synchmess client library (see <synchmess/client.h> for the contract of every function).
 *
 * Thin on purpose: each call is one open/ioctl/read/write (plus close for the control and config
 * devices), with the argument checks that must happen before any system call; or, on a
 * descriptor attached to its group's shared region, what fast_path.cpp does there instead
 * (docs/DESIGN.md, "The client library"). Whatever the fast path does not take, the device does.
 */
#define _GNU_SOURCE /* secure_getenv, O_CLOEXEC, PATH_MAX */

#include <synchmess/client.h>

#include "fast_path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const char kControlNode[] = "synchmess";
static const char kConfigNode[] = "config";

const char* synch_dir(void) {
#if defined(__GLIBC__)
  const char* dir = secure_getenv(SYNCH_DIR_ENV);
#else
  const char* dir = getenv(SYNCH_DIR_ENV);
#endif
  return (dir != NULL && dir[0] != '\0') ? dir : SYNCH_DEV_DIR;
}

/* 1..63 bytes of [A-Za-z0-9_.-], not starting with '.' (SPEC "Groups"). */
static int is_valid_node_name(const char* name) {
  size_t length = 0;
  if (name == NULL || name[0] == '.') return 0;
  for (; name[length] != '\0'; ++length) {
    const char c = name[length];
    if (length >= SYNCH_NAME_MAX - 1) return 0;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-')) {
      return 0;
    }
  }
  return length > 0;
}

static int is_valid_group_name(const char* name) {
  return is_valid_node_name(name) && strcmp(name, kControlNode) != 0 &&
         strcmp(name, kConfigNode) != 0;
}

/* "dir/node" into path; -1 with ERANGE when it does not fit. No stdio: memcpy only. */
static int build_path(const char* dir, const char* node, char* path, size_t path_size) {
  size_t dir_length = strlen(dir);
  const size_t node_length = strlen(node);
  size_t separator;
  size_t total;
  while (dir_length > 1 && dir[dir_length - 1] == '/')
    --dir_length;
  separator = (dir_length > 0 && dir[dir_length - 1] == '/') ? 0 : 1;
  total = dir_length + separator + node_length;
  if (total >= path_size || total > INT_MAX) {
    path[0] = '\0';
    errno = ERANGE;
    return -1;
  }
  memcpy(path, dir, dir_length);
  if (separator) path[dir_length] = '/';
  memcpy(path + dir_length + separator, node, node_length);
  path[total] = '\0';
  return (int)total;
}

int synch_device_path(const char* node, char* path, size_t path_size) {
  if (!is_valid_node_name(node) || path == NULL || path_size == 0) {
    errno = EINVAL;
    return -1;
  }
  return build_path(synch_dir(), node, path, path_size);
}

/* open(DIR/node); the caller has validated node. */
static int open_node(const char* node, int flags) {
  char path[PATH_MAX];
  if (build_path(synch_dir(), node, path, sizeof path) < 0) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return open(path, flags | O_CLOEXEC);
}

/* One ioctl on a device opened for this call only (control, config). */
static int node_ioctl(const char* node, int flags, unsigned long command, void* argument) {
  int result;
  int saved_errno;
  const int fd = open_node(node, flags);
  if (fd < 0) return -1;
  result = ioctl(fd, command, argument);
  saved_errno = errno;
  (void)close(fd); /* the answer is in; a close error cannot change it */
  errno = saved_errno;
  return result;
}

int synch_install_group(const char* name, char* path, size_t path_size, int* created) {
  struct synch_install request;
  size_t path_length;
  if (!is_valid_group_name(name) || (path != NULL && path_size == 0)) {
    errno = EINVAL;
    return -1;
  }
  memset(&request, 0, sizeof request);
  memcpy(request.group.name, name, strlen(name)); /* NUL-padded by the memset */
  if (node_ioctl(kControlNode, O_RDWR, SYNCH_IOC_INSTALL_GROUP, &request) < 0) return -1;
  if (memchr(request.path, '\0', sizeof request.path) == NULL || request.created > 1) {
    errno = EPROTO;
    return -1;
  }
  if (created != NULL) *created = (int)request.created;
  if (path != NULL) {
    path_length = strlen(request.path);
    if (path_length >= path_size) {
      path[0] = '\0';
      errno = ERANGE;
      return -1;
    }
    memcpy(path, request.path, path_length + 1);
  }
  return 0;
}

int synch_remove_group(const char* name) {
  group_t group;
  if (!is_valid_group_name(name)) {
    errno = EINVAL;
    return -1;
  }
  memset(&group, 0, sizeof group);
  memcpy(group.name, name, strlen(name));
  return node_ioctl(kControlNode, O_RDWR, SYNCH_IOC_REMOVE_GROUP, &group) < 0 ? -1 : 0;
}

int synch_open_group(const char* name, int flags) {
  int fd;
  if (!is_valid_group_name(name) || (flags & (O_CREAT | O_DIRECTORY)) != 0) {
    errno = EINVAL;
    return -1;
  }
  fd = open_node(name, flags);
  /* Only a descriptor the kernel let read and write may hold the region (SPEC "Fast path"). */
  if (fd >= 0 && (flags & O_ACCMODE) == O_RDWR) synch_fp_attach(fd);
  return fd;
}

int synch_close_group(int fd) {
  synch_fp_detach(fd);
  return close(fd);
}

int synch_fast_path_active(int fd) {
  return synch_fp_attached(fd);
}

ssize_t synch_send(int fd, const void* buf, size_t len) {
  ssize_t result;
  if (synch_fp_send(fd, buf, len, &result)) return result;
  return write(fd, buf, len);
}

ssize_t synch_receive(int fd, void* buf, size_t len) {
  ssize_t result;
  if (synch_fp_receive(fd, buf, len, &result)) return result;
  return read(fd, buf, len);
}

int synch_sleep_on_barrier(int fd) {
  int result;
  if (synch_fp_sleep_on_barrier(fd, &result)) return result;
  return ioctl(fd, SYNCH_IOC_SLEEP_ON_BARRIER) < 0 ? -1 : 0;
}

int synch_awake_barrier(int fd) {
  int result;
  if (synch_fp_awake_barrier(fd, &result)) return result;
  return ioctl(fd, SYNCH_IOC_AWAKE_BARRIER);
}

int synch_set_send_delay(int fd, uint32_t ms) {
  return ioctl(fd, SYNCH_IOC_SET_SEND_DELAY, &ms) < 0 ? -1 : 0;
}

int synch_get_send_delay(int fd, uint32_t* ms) {
  if (ms == NULL) {
    errno = EINVAL;
    return -1;
  }
  return ioctl(fd, SYNCH_IOC_GET_SEND_DELAY, ms) < 0 ? -1 : 0;
}

int synch_revoke_delayed_messages(int fd) {
  return ioctl(fd, SYNCH_IOC_REVOKE_DELAYED_MESSAGES);
}

int synch_flush(int fd) {
  return ioctl(fd, SYNCH_IOC_FLUSH);
}

int synch_set_recv_timeout(int fd, uint32_t ms) {
  if (ioctl(fd, SYNCH_IOC_SET_RECV_TIMEOUT, &ms) < 0) return -1;
  synch_fp_set_recv_timeout(fd, ms); /* the fast path waits as the device would */
  return 0;
}

int synch_set_send_timeout(int fd, uint32_t ms) {
  if (ioctl(fd, SYNCH_IOC_SET_SEND_TIMEOUT, &ms) < 0) return -1;
  synch_fp_set_send_timeout(fd, ms);
  return 0;
}

int synch_get_stats(int fd, struct synch_group_stats* stats) {
  if (stats == NULL) {
    errno = EINVAL;
    return -1;
  }
  return ioctl(fd, SYNCH_IOC_GET_STATS, stats) < 0 ? -1 : 0;
}

int synch_get_params(struct synch_params* params) {
  if (params == NULL) {
    errno = EINVAL;
    return -1;
  }
  return node_ioctl(kConfigNode, O_RDONLY, SYNCH_IOC_GET_PARAMS, params) < 0 ? -1 : 0;
}

int synch_set_params(const struct synch_params* params) {
  struct synch_params copy;
  if (params == NULL || params->max_message_size > SYNCH_MAX_MESSAGE_SIZE_LIMIT ||
      params->max_storage_size > SYNCH_MAX_STORAGE_SIZE_LIMIT) {
    errno = EINVAL;
    return -1;
  }
  copy = *params; /* ioctl takes a non-const pointer; the server only reads it */
  return node_ioctl(kConfigNode, O_WRONLY, SYNCH_IOC_SET_PARAMS, &copy) < 0 ? -1 : 0;
}
