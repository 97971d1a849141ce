/*
 * synchmess client library: a small C API over the /dev/synch ABI (<synchmess/synchmess.h>).
 *
 * Link with -lsynchmess (or pkg-config synchmess; C99, usable from C++). Every function follows
 * the libc convention: on failure it returns -1 and sets errno; on success it returns 0 or a count,
 * as documented below. Errors that the library detects itself (a bad name, a NULL pointer, a
 * buffer too small) are reported before any system call; every other errno is the one the kernel
 * or the synchmess server gave, passed through unchanged.
 *
 * Where the devices are. By default the control device is /dev/synch/synchmess, the config
 * device /dev/synch/config and a group's device /dev/synch/<name>. The environment variable
 * SYNCHMESS_DIR, when set and not empty, replaces "/dev/synch" (for instance with the directory of
 * a FUSE mount that serves the same files): the library then opens SYNCHMESS_DIR/synchmess,
 * SYNCHMESS_DIR/config and SYNCHMESS_DIR/<name>. It is read at every call (with secure_getenv(),
 * so it is ignored in set-user-ID and set-group-ID programs).
 *
 * Names. A group name is 1..63 bytes of [A-Za-z0-9_.-] that does not start with '.'; "synchmess"
 * and "config" are reserved. The library checks this before any system call (EINVAL), so a name
 * can never make it open a file outside the device directory.
 *
 * Descriptors. Group calls take a descriptor from synch_open_group() (or any open() of a group
 * device). Errors common to all of them, not repeated below:
 *   EBADF   fd is not an open descriptor (or, for send/receive, not open for writing/reading);
 *   ENOTTY  fd is not a synchmess group device (ioctl calls);
 *   ENODEV  the group was removed while fd was open (or the server stopped); other errors of the
 *           kernel are possible once the device node is gone;
 *   EIO, ENOTCONN  the server that serves the device died (CUSE / FUSE transport errors).
 * Calls that open a device (install, remove, open, params) can also give every error of open(2)
 * for that path, most usefully:
 *   ENOENT  the device does not exist: the server is not running, SYNCHMESS_DIR points elsewhere,
 *           or (for a group) the group is not installed;
 *   EACCES  the device's mode does not allow the access (udev rules not installed, or
 *           synch_set_params() by a user who is not root);
 *   ENAMETOOLONG  SYNCHMESS_DIR/<name> is longer than PATH_MAX.
 *
 * The fast path. A group descriptor opened O_RDWR takes its group's queue in shared memory when
 * the server offers it (SPEC "Fast path"): one from synch_open_group() at once, any other (from
 * open(), inherited across fork(), received with SCM_RIGHTS) at the first library call on it;
 * synch_send(), synch_receive(), the barrier calls and the timeouts then work in that memory,
 * without a system call when nothing has to wait, and with futex waits when something does;
 * everything else (delays, flush, revoke, stats, removal, parameters) stays a device call. Device
 * users and library users of a group share one queue: one FIFO order, exactly once, one budget, one
 * barrier, the same errors. Whatever the shared memory cannot do (a send delay, a message larger
 * than a quarter of the server's --region-size, messages the server holds behind a full ring, a
 * send that waits for room) goes through the device, so no call fails because of the fast path. It
 * is off when the environment variable SYNCHMESS_FASTPATH is "0", or when the server runs with
 * --no-fast-path. Rules that come with it:
 *   - close every descriptor you used with these calls with synch_close_group(), not close(2)
 *     (as a FILE* is closed with fclose()): the library keeps its state per descriptor number,
 *     and a number closed with close() and reused for another group may reach the old group's
 *     memory until the library's next look at it (at most 10 ms later);
 *   - set its timeouts with synch_set_recv_timeout() and synch_set_send_timeout() (the library
 *     waits by what it was told; a raw ioctl reaches only the device path);
 *   - a buffer that is not readable (writable) makes the fast path fault, as memcpy() would,
 *     where the device path fails with EFAULT;
 *   - after fork(), a descriptor the parent had on the shared memory takes it in the child at
 *     the child's first call on it (a client slot of the child's own; the parent keeps its own);
 *     a descriptor received from another process waits by the timeouts its open file was given
 *     there.
 * When the server dies, waits end within 100 ms with ENOTCONN, and other calls go to the
 * (dead) device within 10 ms and fail with its errors.
 *
 * Thread safety: every function is thread-safe. The library keeps state only for descriptors
 * on the fast path (allocated once per 256 descriptor numbers, never freed); each call that
 * needs the control or config device opens and closes it. Changing the environment (setenv)
 * while other threads call into the library is unsafe, as for getenv().
 */
#ifndef SYNCHMESS_CLIENT_H
#define SYNCHMESS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* ssize_t */

#include <synchmess/synchmess.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Environment variable that overrides the device directory. */
#define SYNCH_DIR_ENV "SYNCHMESS_DIR"

/*
 * synch_dir: the directory that holds the devices.
 * Returns the value of SYNCHMESS_DIR when it is set and not empty, else SYNCH_DEV_DIR
 * ("/dev/synch"). Never fails, never returns NULL. The string belongs to the environment (or is
 * a literal): do not modify or free it; it is valid until the environment changes.
 */
const char* synch_dir(void);

/*
 * synch_device_path: builds the path of the device `node` in synch_dir(), i.e. "DIR/node" (no
 * doubled '/' when DIR ends with one). `node` is a group name or one of the reserved names
 * "synchmess" (control device) and "config" (config device).
 * Returns the length of the path (not counting the terminating NUL), which is stored in `path`.
 * Errors:
 *   EINVAL  node is NULL or not a valid name; path is NULL or path_size is 0;
 *   ERANGE  the path and its NUL do not fit in path_size bytes (path is set to "").
 */
int synch_device_path(const char* node, char* path, size_t path_size);

/*
 * synch_install_group: installs the group `name` (SYNCH_IOC_INSTALL_GROUP on the control device).
 * The device is created only if it does not exist yet; when the call returns, it exists and can
 * be opened. If `path` is not NULL, the device path reported by the server (e.g.
 * "/dev/synch/<name>") is copied there; a buffer of SYNCH_PATH_MAX bytes always suffices. If
 * `created` is not NULL, *created is set to 1 if this call created the device, 0 if it existed.
 * Returns 0.
 * Errors:
 *   EINVAL  name is NULL, empty, longer than 63 bytes, has a character outside [A-Za-z0-9_.-],
 *           starts with '.', or is reserved ("synchmess", "config"); or path is not NULL and
 *           path_size is 0. Detected before any system call: nothing is installed.
 *   ERANGE  the group WAS installed (and *created was set) but its path does not fit in
 *           path_size bytes (path is set to ""). Call again with a bigger buffer: it reports
 *           created = 0 and the path.
 *   ENOSPC  the server already serves its maximum number of groups.
 *   EPROTO  the server's answer is malformed (path not terminated, created not 0 or 1).
 *   ENOENT, EACCES, ...  opening the control device failed (see the top of this file).
 */
int synch_install_group(const char* name, char* path, size_t path_size, int* created);

/*
 * synch_remove_group: removes the group `name` (SYNCH_IOC_REMOVE_GROUP on the control device):
 * its device and its messages are destroyed; threads sleeping on its barrier or waiting in
 * read() return with EIDRM; later calls on descriptors still open on it fail (ENODEV).
 * Returns 0.
 * Errors:
 *   EINVAL  name is NULL or not a valid group name (as for synch_install_group).
 *   ENOENT  no such group is installed (or the control device does not exist).
 *   EPERM   the caller is neither root nor the user that installed the group.
 */
int synch_remove_group(const char* name);

/*
 * synch_open_group: opens the device of the installed group `name`, SYNCHMESS_DIR/<name>, with
 * open(2) `flags` (O_RDONLY, O_WRONLY or O_RDWR, optionally O_NONBLOCK...). O_CLOEXEC is always
 * added. Close the descriptor with synch_close_group(): releasing an open file of a group
 * flushes the group (its delayed messages become available). Opened O_RDWR, the descriptor
 * takes the fast path when the server offers it (see the top of this file).
 * Returns the new file descriptor.
 * Errors:
 *   EINVAL  name is NULL or not a valid group name; or flags contain O_CREAT or O_DIRECTORY
 *           (O_TMPFILE): a device is never created by open.
 *   ENOENT  the group is not installed (or the server does not run);
 *   every other error of open(2).
 */
int synch_open_group(const char* name, int flags);

/*
 * synch_close_group: closes a descriptor of a group device (from synch_open_group() or any
 * open()): drops its fast-path state, if any, then close(2)s it. A thread still waiting in a
 * receive or on the barrier through this descriptor returns within 100 ms with EBADF.
 * Returns 0.
 * Errors: those of close(2) (EBADF: fd is not open).
 */
int synch_close_group(int fd);

/*
 * synch_fast_path_active: 1 when `fd` works in its group's shared memory now, 0 when it uses
 * the device only (not opened O_RDWR, not a group device, not offered, SYNCHMESS_FASTPATH=0).
 * Asking is a first call: a descriptor the library has not seen in this process (inherited,
 * received, from open()) takes the shared memory then.
 * Never fails.
 */
int synch_fast_path_active(int fd);

/*
 * synch_send: sends one message of `len` bytes (one write(2)): it is never split or merged with
 * another. With a send delay set on the group it lands after the delay; the caller never waits.
 * len == 0 sends nothing and returns 0.
 * Returns the number of bytes sent, which is `len`.
 * When the group has no room, the call waits for room as long as the send timeout of fd allows
 * (synch_set_send_timeout(); by default not at all).
 * Errors:
 *   EMSGSIZE  len is larger than max_message_size (see synch_get_params());
 *   ENOSPC    storing it would take the group over max_storage_size (available + delayed bytes)
 *             and the send timeout (if any) passed, or fd is O_NONBLOCK, or len is larger than
 *             max_storage_size; or the server's global bound on message memory is reached;
 *   EDQUOT    the caller's uid holds its whole share of the server's message memory (the
 *             server's --max-user-memory): its messages must be received first;
 *   ENOMEM    the server could not allocate the message;
 *   EFAULT    buf is not readable;
 *   EINTR     a signal arrived before the request was sent, or ended the wait for room;
 *   EIDRM     the group was removed while this call waited for room.
 */
ssize_t synch_send(int fd, const void* buf, size_t len);

/*
 * synch_receive: takes the oldest available message of the group (one read(2)): copies
 * min(len, message size) bytes into `buf` and consumes the whole message, even when `buf` was
 * shorter (exactly-once delivery).
 * Returns the number of bytes copied; 0 when the group has no available message (at once, or
 * after the receive timeout set by synch_set_recv_timeout() has expired).
 * Errors:
 *   EAGAIN  fd is O_NONBLOCK and the group has no available message;
 *   EINTR   a signal ended the wait for a message (receive timeout set);
 *   EIDRM   the group was removed while this call waited;
 *   EFAULT  buf is not writable.
 */
ssize_t synch_receive(int fd, void* buf, size_t len);

/*
 * synch_sleep_on_barrier: blocks the calling thread until the next synch_awake_barrier() on the
 * group (SYNCH_IOC_SLEEP_ON_BARRIER). An awake that happened before this call is not remembered.
 * Returns 0 once woken.
 * Errors:
 *   EINTR  a signal ended the sleep (the thread no longer counts as a sleeper); the library does
 *          not restart the call: call it again to keep sleeping;
 *   EIDRM  the group was removed while the thread slept.
 */
int synch_sleep_on_barrier(int fd);

/*
 * synch_awake_barrier: wakes every thread sleeping on the group's barrier at this moment
 * (SYNCH_IOC_AWAKE_BARRIER).
 * Returns the number of threads woken (0 if none slept).
 */
int synch_awake_barrier(int fd);

/*
 * synch_set_send_delay: sets the group's send delay (SYNCH_IOC_SET_SEND_DELAY): writes made after
 * it, through any descriptor of the group, land `ms` milliseconds later; 0 = immediate.
 * Returns 0.
 */
int synch_set_send_delay(int fd, uint32_t ms);

/*
 * synch_get_send_delay: stores the group's send delay in milliseconds in *ms
 * (SYNCH_IOC_GET_SEND_DELAY).
 * Returns 0.
 * Errors: EINVAL  ms is NULL (before any system call).
 */
int synch_get_send_delay(int fd, uint32_t* ms);

/*
 * synch_revoke_delayed_messages: discards every delayed message of the group whose delay has not
 * expired yet; their bytes are freed at once (SYNCH_IOC_REVOKE_DELAYED_MESSAGES). The send delay
 * setting is unchanged.
 * Returns the number of messages discarded.
 */
int synch_revoke_delayed_messages(int fd);

/*
 * synch_flush: makes every delayed message of the group available at once, in write order
 * (SYNCH_IOC_FLUSH). The send delay setting is unchanged. This is the original assignment's
 * flush(): CUSE forwards neither flush nor fsync, so fsync(2) on a group device fails with EINVAL;
 * closing the last descriptor of an open file of the group flushes it as well.
 * Returns the number of messages made available.
 */
int synch_flush(int fd);

/*
 * synch_set_recv_timeout: sets how long a read on an empty group waits for a message, for this
 * open file only (SYNCH_IOC_SET_RECV_TIMEOUT): `ms` milliseconds; SYNCH_RECV_TIMEOUT_FOREVER
 * waits forever; 0 (the default) does not wait. O_NONBLOCK wins: EAGAIN at once.
 * Returns 0.
 */
int synch_set_recv_timeout(int fd, uint32_t ms);

/*
 * synch_set_send_timeout: sets how long a send that does not fit in the group waits for room,
 * for this open file only (SYNCH_IOC_SET_SEND_TIMEOUT): `ms` milliseconds;
 * SYNCH_SEND_TIMEOUT_FOREVER waits forever; 0 (the default) does not wait. Waiting senders are
 * served in arrival order, as receives, revokes, removals or a raised max_storage_size free
 * room; none costs a server thread. O_NONBLOCK wins: ENOSPC at once. A send refused by a quota
 * (EDQUOT, or the server's global bound) fails at once whatever the timeout.
 * Returns 0.
 */
int synch_set_send_timeout(int fd, uint32_t ms);

/*
 * synch_get_stats: stores the group's counters in *stats (SYNCH_IOC_GET_STATS): available and
 * delayed messages and bytes, barrier sleepers, reads waiting for a message.
 * Returns 0.
 * Errors: EINVAL  stats is NULL (before any system call).
 */
int synch_get_stats(int fd, struct synch_group_stats* stats);

/*
 * synch_get_params: stores the run-time parameters (max_message_size, max_storage_size) in
 * *params (SYNCH_IOC_GET_PARAMS on SYNCHMESS_DIR/config, opened read-only).
 * Returns 0.
 * Errors:
 *   EINVAL  params is NULL (before any system call);
 *   ENOENT, EACCES, ...  opening the config device failed (see the top of this file).
 */
int synch_get_params(struct synch_params* params);

/*
 * synch_set_params: sets the run-time parameters (SYNCH_IOC_SET_PARAMS on SYNCHMESS_DIR/config,
 * opened write-only); a field that is 0 is left unchanged. Both are applied or neither is.
 * Lowering a limit never drops stored messages: it applies to later writes. Needs root.
 * Returns 0.
 * Errors:
 *   EINVAL  params is NULL, or a value is out of range: max_message_size above
 *           SYNCH_MAX_MESSAGE_SIZE_LIMIT, max_storage_size above SYNCH_MAX_STORAGE_SIZE_LIMIT
 *           (both checked before any system call), or a value the server refuses;
 *   EACCES  the config device cannot be opened for writing (mode 0644: the caller is not root);
 *   EPERM   the server refused: the caller is not root.
 */
int synch_set_params(const struct synch_params* params);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SYNCHMESS_CLIENT_H */
