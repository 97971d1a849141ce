/*
 * synchmess: the user-space ABI of /dev/synch.
 *
 * The one source of every ioctl number, struct layout and limit shared by the server
 * (synchmess-cuse), the client library and applications. Usable from C99 and C++; every struct
 * is fixed-size and holds no pointers, so the kernel's restricted ioctl path (CUSE) copies each
 * argument whole by the size encoded in the command number.
 *
 * Names of the original assignment, for readers who come from it:
 *   INSTALL_GROUP            -> SYNCH_IOC_INSTALL_GROUP
 *   SLEEP_ON_BARRIER         -> SYNCH_IOC_SLEEP_ON_BARRIER
 *   AWAKE_BARRIER            -> SYNCH_IOC_AWAKE_BARRIER
 *   SET_SEND_DELAY           -> SYNCH_IOC_SET_SEND_DELAY
 *   REVOKE_DELAYED_MESSAGES  -> SYNCH_IOC_REVOKE_DELAYED_MESSAGES
 *   flush() / fsync()        -> SYNCH_IOC_FLUSH (CUSE forwards neither flush nor fsync; a group
 *                               is also flushed when its last descriptor of an open file closes)
 *   /sys max_message_size,
 *   /sys max_storage_size    -> /dev/synch/config, SYNCH_IOC_GET_PARAMS / SYNCH_IOC_SET_PARAMS
 */
#ifndef SYNCHMESS_SYNCHMESS_H
#define SYNCHMESS_SYNCHMESS_H

#include <linux/ioctl.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where the devices live. */
#define SYNCH_DEV_DIR "/dev/synch"
#define SYNCH_CONTROL_PATH SYNCH_DEV_DIR "/synchmess"
#define SYNCH_CONFIG_PATH SYNCH_DEV_DIR "/config"

#define SYNCH_IOC_MAGIC 0xBC

/* A group name is 1..63 bytes of [A-Za-z0-9_.-], not starting with '.', NUL-terminated. */
#define SYNCH_NAME_MAX 64 /* bytes, including the terminating NUL */
#define SYNCH_PATH_MAX 128

/* Parameter defaults and bounds (the /sys substitute, /dev/synch/config). */
#define SYNCH_DEFAULT_MAX_MESSAGE_SIZE 4096u
#define SYNCH_DEFAULT_MAX_STORAGE_SIZE 1048576u
/* CUSE moves at most 32 pages in one request and an unaligned buffer spans one page more. */
#define SYNCH_MAX_MESSAGE_SIZE_LIMIT 126976u
/* A sanity bound on the per-group storage budget (1 TiB): larger values are typos. */
#define SYNCH_MAX_STORAGE_SIZE_LIMIT 1099511627776ull
/* SYNCH_IOC_SET_RECV_TIMEOUT / SET_SEND_TIMEOUT value that waits forever. */
#define SYNCH_RECV_TIMEOUT_FOREVER UINT32_MAX
#define SYNCH_SEND_TIMEOUT_FOREVER UINT32_MAX

typedef struct group_t {
  char name[SYNCH_NAME_MAX];
} group_t;

struct synch_install {
  group_t group;             /* in: the group to install */
  char path[SYNCH_PATH_MAX]; /* out: "/dev/synch/<name>" */
  uint32_t created;          /* out: 1 if this call created the device, 0 if it existed */
  uint32_t reserved;         /* must be 0 */
};

struct synch_params {
  uint64_t max_message_size; /* bytes; 0 in SET_PARAMS = leave unchanged */
  uint64_t max_storage_size; /* bytes per group (available + delayed); 0 = leave unchanged */
};

#define SYNCH_FASTPATH_SECRET_BYTES 16
#define SYNCH_FASTPATH_SOCKET_MAX 96

struct synch_fastpath_offer {
  uint8_t secret[SYNCH_FASTPATH_SECRET_BYTES]; /* what the socket takes, once */
  char socket_name[SYNCH_FASTPATH_SOCKET_MAX]; /* abstract socket name, NUL-terminated, without
                                                  the leading NUL of the address */
  uint32_t version;                            /* the region's layout version */
  /* This open file's timeouts as the device was told them (SET_RECV/SEND_TIMEOUT): what a
   * process that did not set them (it received the descriptor) waits by. 0 from servers older
   * than these fields. */
  uint32_t recv_timeout_ms;
  uint32_t send_timeout_ms;
  uint32_t reserved; /* 0 */
};

struct synch_group_stats {
  uint64_t queued_messages; /* available to read() */
  uint64_t queued_bytes;
  uint64_t delayed_messages; /* sent with a delay that has not expired */
  uint64_t delayed_bytes;
  uint64_t sleepers;        /* threads in SLEEP_ON_BARRIER */
  uint64_t readers_waiting; /* read()s waiting for a message (receive timeout) */
};

/* Control device, /dev/synch/synchmess. */
#define SYNCH_IOC_INSTALL_GROUP _IOWR(SYNCH_IOC_MAGIC, 1, struct synch_install)
#define SYNCH_IOC_REMOVE_GROUP _IOW(SYNCH_IOC_MAGIC, 2, group_t)
/* Group devices, /dev/synch/<name>. */
#define SYNCH_IOC_SLEEP_ON_BARRIER _IO(SYNCH_IOC_MAGIC, 3)
#define SYNCH_IOC_AWAKE_BARRIER _IO(SYNCH_IOC_MAGIC, 4)             /* returns the number woken */
#define SYNCH_IOC_SET_SEND_DELAY _IOW(SYNCH_IOC_MAGIC, 5, uint32_t) /* milliseconds, 0 = none */
#define SYNCH_IOC_GET_SEND_DELAY _IOR(SYNCH_IOC_MAGIC, 6, uint32_t)
#define SYNCH_IOC_REVOKE_DELAYED_MESSAGES _IO(SYNCH_IOC_MAGIC, 7)     /* returns the count */
#define SYNCH_IOC_FLUSH _IO(SYNCH_IOC_MAGIC, 8)                       /* returns the count */
#define SYNCH_IOC_SET_RECV_TIMEOUT _IOW(SYNCH_IOC_MAGIC, 9, uint32_t) /* per open file, ms */
#define SYNCH_IOC_GET_STATS _IOR(SYNCH_IOC_MAGIC, 10, struct synch_group_stats)
/* Per open file, ms: how long a write() that does not fit waits for space (0: not at all). */
#define SYNCH_IOC_SET_SEND_TIMEOUT _IOW(SYNCH_IOC_MAGIC, 13, uint32_t)
/* The fast path (the client library's; docs/DESIGN.md "The fast path"): on a group descriptor
 * opened O_RDWR (else EACCES), a one-time secret, valid for a few seconds, and the name of the
 * server's abstract Unix socket, where a client trades the secret for the group's shared
 * region. (SYNCH_IOC_MAGIC, 15) stays reserved. */
#define SYNCH_IOC_FASTPATH_OFFER _IOR(SYNCH_IOC_MAGIC, 14, struct synch_fastpath_offer)
/* Config device, /dev/synch/config. */
#define SYNCH_IOC_GET_PARAMS _IOR(SYNCH_IOC_MAGIC, 11, struct synch_params)
#define SYNCH_IOC_SET_PARAMS _IOW(SYNCH_IOC_MAGIC, 12, struct synch_params)

/* The layouts are ABI: they must never change size. C99 has no _Static_assert, hence the
 * negative-array-size form there. */
#if defined(__cplusplus)
static_assert(sizeof(group_t) == 64, "group_t is ABI");
static_assert(sizeof(struct synch_install) == 200, "struct synch_install is ABI");
static_assert(sizeof(struct synch_params) == 16, "struct synch_params is ABI");
static_assert(sizeof(struct synch_group_stats) == 48, "struct synch_group_stats is ABI");
static_assert(sizeof(struct synch_fastpath_offer) == 128, "struct synch_fastpath_offer is ABI");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(group_t) == 64, "group_t is ABI");
_Static_assert(sizeof(struct synch_install) == 200, "struct synch_install is ABI");
_Static_assert(sizeof(struct synch_params) == 16, "struct synch_params is ABI");
_Static_assert(sizeof(struct synch_group_stats) == 48, "struct synch_group_stats is ABI");
_Static_assert(sizeof(struct synch_fastpath_offer) == 128, "struct synch_fastpath_offer is ABI");
#else
typedef char synch_abi_group_t_size[sizeof(group_t) == 64 ? 1 : -1];
typedef char synch_abi_install_size[sizeof(struct synch_install) == 200 ? 1 : -1];
typedef char synch_abi_params_size[sizeof(struct synch_params) == 16 ? 1 : -1];
typedef char synch_abi_offer_size[sizeof(struct synch_fastpath_offer) == 128 ? 1 : -1];
typedef char synch_abi_stats_size[sizeof(struct synch_group_stats) == 48 ? 1 : -1];
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SYNCHMESS_SYNCHMESS_H */
