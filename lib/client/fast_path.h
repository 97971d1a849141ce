/*
 * The client library's fast path (docs/DESIGN.md, "The client library"): internal to the
 * library, shared by client.c (the C API) and fast_path.cpp (the region, in C++).
 *
 * A descriptor from synch_open_group(name, O_RDWR) is attached to its group's shared region
 * when the server offers it; the calls below then serve what the region allows and answer
 * "use the device" (0) for everything else, so that a call never fails because of the fast
 * path. Each returns 1 when it handled the call, with the result in *result (and errno set
 * when the result is -1).
 */
#ifndef SYNCHMESS_CLIENT_FAST_PATH_H
#define SYNCHMESS_CLIENT_FAST_PATH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Environment variable: "0" keeps every descriptor on the device. */
#define SYNCH_FASTPATH_ENV "SYNCHMESS_FASTPATH"

/* Tries the handshake on `fd` (a group device opened O_RDWR). Never fails, keeps errno. */
void synch_fp_attach(int fd);
/* Forgets `fd`'s region (waits for calls in flight on it to end). Keeps errno. */
void synch_fp_detach(int fd);
/* 1 when `fd` is attached to its region now. */
int synch_fp_attached(int fd);

int synch_fp_send(int fd, const void* buf, size_t len, ssize_t* result);
int synch_fp_receive(int fd, void* buf, size_t len, ssize_t* result);
int synch_fp_sleep_on_barrier(int fd, int* result);
int synch_fp_awake_barrier(int fd, int* result);
/* The descriptor's timeouts, as the device was told them (the fast path waits by them). */
void synch_fp_set_recv_timeout(int fd, uint32_t ms);
void synch_fp_set_send_timeout(int fd, uint32_t ms);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SYNCHMESS_CLIENT_FAST_PATH_H */
