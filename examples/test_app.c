/*
 * synchmess test application: a functional check of a running synchmess-cuse, written the way a
 * user writes against the installed client library (the original assignment's test.c).
 *
 * Build by hand against an installed copy (cmake --install puts <synchmess/client.h>,
 * libsynchmess.so.0, libsynchmess.a and the pkg-config file synchmess.pc in place):
 *
 *   gcc test_app.c -o test_app $(pkg-config --cflags --libs synchmess) -lpthread
 *
 * Run it while synchmess-cuse runs: ./test_app [--dir DIR]. It installs a group named
 * synchmess-test-<pid> and checks device creation, messaging (FIFO, exactly once, short reads),
 * delayed messages, the receive timeout, revoke, flush (ioctl and close), the barrier, the fast
 * path beside a plain descriptor, stats and the parameters, then removes the group. One line per
 * check, "ok   <what>" or "FAIL <what>: <reason>", then a summary. Exit status: 0 when every check
 * passed, 1 when one failed (or the server cannot be reached), 2 for a bad command line.
 *
 * Robustness: every call is checked; every wait is bounded (poll timeouts, deadlines, and a
 * watchdog that ends the run after --timeout seconds, 90 by default); the group is removed at the
 * end whatever failed, and also on SIGINT/SIGTERM/SIGHUP and when the watchdog fires.
 */
#define _POSIX_C_SOURCE 200809L

#include <synchmess/client.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WATCHDOG_SECONDS 90 /* default of --timeout */
#define SLEEPERS 4
#define SEND_DELAY_MS 200
#define WAIT_MS 5000 /* generous bound of every wait for something that should happen */

static const char* g_program = "synchmess-test-app";
static char g_group[SYNCH_NAME_MAX];
static volatile sig_atomic_t g_installed; /* g_group exists and is ours to remove */
static long g_watchdog_seconds = WATCHDOG_SECONDS;
static int g_checks;
static int g_failures;

/* ---- reporting ---- */

static void ok(const char* what_format, ...) {
  va_list arguments;
  ++g_checks;
  printf("ok   ");
  va_start(arguments, what_format);
  vprintf(what_format, arguments);
  va_end(arguments);
  printf("\n");
}

static void fail(const char* what, const char* why_format, ...) {
  va_list arguments;
  ++g_checks;
  ++g_failures;
  printf("FAIL %s: ", what);
  va_start(arguments, why_format);
  vprintf(why_format, arguments);
  va_end(arguments);
  printf("\n");
}

/* `result` (of a call that failed with `error` when it is -1) must equal `expected`. */
static int expect(long result, int error, long expected, const char* what) {
  if (result == expected) {
    ok("%s", what);
    return 1;
  }
  if (result == -1) {
    fail(what, "%s", strerror(error));
  } else {
    fail(what, "returned %ld, expected %ld", result, expected);
  }
  return 0;
}

/* The call runs before errno is read (the order of argument evaluation is unspecified). */
#define EXPECT(call, expected, what)                 \
  do {                                               \
    const long result_ = (long)(call);               \
    const int error_ = errno;                        \
    (void)expect(result_, error_, (expected), what); \
  } while (0)

/* A call that must fail with errno `expected`. */
static void expect_error(long result, int error, int expected, const char* what) {
  if (result == -1 && error == expected) {
    ok("%s", what);
  } else if (result == -1) {
    fail(what, "%s, expected %s", strerror(error), strerror(expected));
  } else {
    fail(what, "returned %ld, expected -1 (%s)", result, strerror(expected));
  }
}

#define EXPECT_ERROR(call, expected, what)           \
  do {                                               \
    const long result_ = (long)(call);               \
    const int error_ = errno;                        \
    expect_error(result_, error_, (expected), what); \
  } while (0)

/* read() result `n` into `buffer` must be the message `expected`. */
static void expect_message(ssize_t n, int error, const char* buffer, const char* expected,
                           const char* what) {
  const size_t length = strlen(expected);
  if (n == (ssize_t)length && memcmp(buffer, expected, length) == 0) {
    ok("%s", what);
  } else if (n < 0) {
    fail(what, "%s", strerror(error));
  } else if (n == 0) {
    fail(what, "no message (read returned 0), expected \"%s\"", expected);
  } else {
    fail(what, "got %zd bytes \"%.*s\", expected \"%s\"", n, (int)n, buffer, expected);
  }
}

/* ---- time ---- */

static long long now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec duration;
  duration.tv_sec = ms / 1000;
  duration.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&duration, &duration) != 0 && errno == EINTR) {
  }
}

/* ---- helpers ---- */

/* Sends the string `message`; one check. */
static void send_text(int fd, const char* message, const char* what) {
  EXPECT(synch_send(fd, message, strlen(message)), (long)strlen(message), what);
}

/* Waits up to timeout_ms for a message and reads it: poll() for POLLIN, in slices, with a read
 * after each slice, so that a server whose poll() is late, or a flush that the kernel sends
 * asynchronously (release on close()), costs at most a slice. Returns what read() returned
 * last: > 0 a message, 0 none arrived in time, -1 an error. */
static ssize_t receive_within(int fd, void* buffer, size_t size, long timeout_ms) {
  const long long deadline = now_ms() + timeout_ms;
  for (;;) {
    long long remaining = deadline - now_ms();
    struct pollfd poller;
    int ready;
    ssize_t n;
    if (remaining < 0) remaining = 0;
    poller.fd = fd;
    poller.events = POLLIN;
    poller.revents = 0;
    ready = poll(&poller, 1, remaining > 50 ? 50 : (int)remaining);
    if (ready < 0 && errno != EINTR) return -1;
    n = synch_receive(fd, buffer, size);
    if (n != 0 || now_ms() >= deadline) return n;
    if (ready > 0) sleep_ms(10); /* poll said readable but nothing came: do not spin */
  }
}

/* Puts the group back to a known state between sections, whatever the last one left: no delay,
 * no receive timeout on fd, nothing delayed, nothing queued. Not a check. */
static void reset_group(int fd) {
  char buffer[256];
  int i;
  (void)synch_set_send_delay(fd, 0);
  (void)synch_set_recv_timeout(fd, 0);
  (void)synch_set_send_timeout(fd, 0);
  (void)synch_revoke_delayed_messages(fd);
  for (i = 0; i < 10000 && synch_receive(fd, buffer, sizeof buffer) > 0; ++i) {
  }
}

/* Reads a whole text device (control listing, config) into buffer, NUL-terminated. */
static ssize_t read_text_device(const char* node, char* buffer, size_t size) {
  char path[4096];
  size_t used = 0;
  int fd;
  int i;
  if (synch_device_path(node, path, sizeof path) < 0) return -1;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  for (i = 0; i < 1024 && used + 1 < size; ++i) {
    const ssize_t n = read(fd, buffer + used, size - 1 - used);
    if (n < 0) {
      const int error = errno;
      close(fd);
      errno = error;
      return -1;
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  close(fd);
  buffer[used] = '\0';
  return (ssize_t)used;
}

/* ---- sections ---- */

/* Installs the group (twice) and opens it; returns the descriptor or -1. */
static int section_creation(void) {
  char path[SYNCH_PATH_MAX];
  char again[SYNCH_PATH_MAX];
  char what[256];
  const char* tail;
  int created = -1;
  int fd;

  printf("-- device creation\n");
  snprintf(what, sizeof what, "install group %s", g_group);
  if (synch_install_group(g_group, path, sizeof path, &created) != 0) {
    fail(what, "%s", strerror(errno));
    return -1;
  }
  g_installed = 1;
  if (created == 0) {
    printf("     group %s already existed (left over from an earlier run?): reinstalling it\n",
           g_group);
    if (synch_remove_group(g_group) != 0 ||
        synch_install_group(g_group, path, sizeof path, &created) != 0) {
      fail(what, "reinstall: %s", strerror(errno));
      return -1;
    }
  }
  if (created == 1) {
    ok("install group %s: path %s, created=%d", g_group, path, created);
  } else {
    fail(what, "path %s, created=%d, expected created=1", path, created);
  }
  tail = strrchr(path, '/');
  if (tail != NULL && strcmp(tail + 1, g_group) == 0) {
    ok("the device path ends with /%s", g_group);
  } else {
    fail("the device path ends with the group name", "path is \"%s\"", path);
  }
  created = -1;
  if (synch_install_group(g_group, again, sizeof again, &created) != 0) {
    fail("install the same group again", "%s", strerror(errno));
  } else if (created != 0 || strcmp(again, path) != 0) {
    fail("install the same group again", "created=%d path %s, expected created=0 path %s", created,
         again, path);
  } else {
    ok("install the same group again: created=0, same path");
  }
  fd = synch_open_group(g_group, O_RDWR);
  if (fd < 0) {
    fail("open the group device", "%s", strerror(errno));
    return -1;
  }
  ok("open the group device");
  return fd;
}

static void section_messaging(int fd) {
  char buffer[64];
  struct pollfd poller;
  ssize_t n;
  int flags;

  printf("-- messaging\n");
  reset_group(fd);
  poller.fd = fd;
  poller.events = POLLIN | POLLOUT;
  poller.revents = 0;
  if (poll(&poller, 1, 0) < 0) {
    fail("poll() on an empty group", "%s", strerror(errno));
  } else if ((poller.revents & POLLIN) != 0 || (poller.revents & POLLOUT) == 0) {
    fail("poll() on an empty group gives POLLOUT, not POLLIN", "revents %#x", poller.revents);
  } else {
    ok("poll() on an empty group gives POLLOUT, not POLLIN");
  }
  send_text(fd, "first message", "write the first message");
  send_text(fd, "second message", "write the second message");
  poller.revents = 0;
  if (poll(&poller, 1, WAIT_MS) < 0 || (poller.revents & POLLIN) == 0) {
    fail("poll() gives POLLIN with messages queued", "revents %#x (%s)", poller.revents,
         strerror(errno));
  } else {
    ok("poll() gives POLLIN with messages queued");
  }
  n = synch_receive(fd, buffer, sizeof buffer);
  expect_message(n, errno, buffer, "first message", "read the first message first (FIFO)");
  n = synch_receive(fd, buffer, 6);
  expect_message(n, errno, buffer, "second", "a 6-byte read of the second message copies 6 bytes");
  n = synch_receive(fd, buffer, sizeof buffer);
  EXPECT(n, 0, "a third read returns 0: each message once, a short read consumed it whole");
  EXPECT(synch_send(fd, "", 0), 0, "a zero-length write returns 0");
  n = synch_receive(fd, buffer, sizeof buffer);
  EXPECT(n, 0, "a zero-length write stores nothing");
  /* O_NONBLOCK set on this descriptor rather than on a new one: closing a descriptor flushes the
   * group, and the kernel sends that release asynchronously, into the next section. */
  flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    fail("set O_NONBLOCK on the descriptor", "%s", strerror(errno));
  } else {
    EXPECT_ERROR(synch_receive(fd, buffer, sizeof buffer), EAGAIN,
                 "a read on an empty group with O_NONBLOCK is EAGAIN");
    if (fcntl(fd, F_SETFL, flags) != 0) fail("clear O_NONBLOCK again", "%s", strerror(errno));
  }
}

static void section_delayed(int fd) {
  char buffer[64];
  uint32_t delay = 0;
  struct pollfd poller;
  long long start;
  long long elapsed;
  ssize_t n;
  int ready;

  printf("-- delayed messaging\n");
  reset_group(fd);
  EXPECT(synch_set_send_delay(fd, SEND_DELAY_MS), 0, "set a send delay of 200 ms");
  if (synch_get_send_delay(fd, &delay) != 0) {
    fail("read the send delay back", "%s", strerror(errno));
  } else if (delay != SEND_DELAY_MS) {
    fail("read the send delay back", "got %u ms, expected %u", delay, SEND_DELAY_MS);
  } else {
    ok("read the send delay back: %u ms", delay);
  }
  start = now_ms();
  send_text(fd, "delayed message", "write a delayed message (the writer does not wait)");
  elapsed = now_ms() - start;
  if (elapsed >= SEND_DELAY_MS) {
    fail("the delayed write returned at once", "it took %lld ms", elapsed);
  }
  n = synch_receive(fd, buffer, sizeof buffer);
  EXPECT(n, 0, "an immediate read finds nothing");
  poller.fd = fd;
  poller.events = POLLIN;
  poller.revents = 0;
  ready = poll(&poller, 1, WAIT_MS);
  if (ready < 0) {
    fail("poll() wakes up when the delayed message lands", "%s", strerror(errno));
  } else if (ready == 0) {
    fail("poll() wakes up when the delayed message lands", "no POLLIN in %d ms", WAIT_MS);
  } else {
    ok("poll() wakes up when the delayed message lands (after %lld ms)", now_ms() - start);
  }
  n = receive_within(fd, buffer, sizeof buffer, WAIT_MS);
  elapsed = now_ms() - start;
  expect_message(n, errno, buffer, "delayed message", "read the delayed message after the delay");
  /* 10 ms of slack for clocks of a coarser resolution than ours. */
  if (n > 0 && elapsed < SEND_DELAY_MS - 10) {
    fail("the delayed message did not land early", "it was readable after %lld ms", elapsed);
  } else if (n > 0) {
    ok("the delayed message landed after %lld ms (delay %d ms)", elapsed, SEND_DELAY_MS);
  }
  EXPECT(synch_set_send_delay(fd, 0), 0, "set the send delay back to 0");
}

static void section_recv_timeout(int fd) {
  char buffer[64];
  long long start;
  long long elapsed;
  ssize_t n;

  printf("-- receive timeout\n");
  reset_group(fd);
  EXPECT(synch_set_recv_timeout(fd, 150), 0, "set a receive timeout of 150 ms");
  start = now_ms();
  n = synch_receive(fd, buffer, sizeof buffer);
  elapsed = now_ms() - start;
  if (n != 0) {
    fail("a read on an empty group waits for the timeout, then returns 0", "returned %zd (%s)", n,
         n < 0 ? strerror(errno) : "a message");
  } else if (elapsed < 140) {
    fail("a read on an empty group waits for the timeout, then returns 0", "returned after %lld ms",
         elapsed);
  } else {
    ok("a read on an empty group waits for the timeout (%lld ms), then returns 0", elapsed);
  }
  EXPECT(synch_set_recv_timeout(fd, WAIT_MS), 0, "set a receive timeout of 5 s");
  EXPECT(synch_set_send_delay(fd, 100), 0, "set a send delay of 100 ms");
  start = now_ms();
  send_text(fd, "awaited", "write a message delayed by 100 ms");
  n = synch_receive(fd, buffer, sizeof buffer);
  elapsed = now_ms() - start;
  expect_message(n, errno, buffer, "awaited", "a waiting read receives it when it lands");
  if (n > 0) printf("     (after %lld ms)\n", elapsed);
  EXPECT(synch_set_recv_timeout(fd, 0), 0, "set the receive timeout back to 0");
  EXPECT(synch_set_send_delay(fd, 0), 0, "set the send delay back to 0");
}

static void section_send_timeout(int fd) {
  static char message[SYNCH_MAX_MESSAGE_SIZE_LIMIT];
  struct synch_params params;
  char buffer[64];
  long long start;
  long long elapsed;
  ssize_t n = 0;
  long sent = 0;

  printf("-- send timeout\n");
  reset_group(fd);
  if (synch_get_params(&params) != 0 || params.max_message_size > sizeof message ||
      params.max_storage_size / params.max_message_size > 10000) {
    fail("read the parameters to fill the group", "%s, or a budget of over 10000 messages",
         strerror(errno));
    return;
  }
  memset(message, 'f', sizeof message);
  while ((n = synch_send(fd, message, params.max_message_size)) > 0)
    ++sent;
  if (n < 0 && errno == ENOSPC) {
    ok("fill the group: %ld messages of %llu bytes, then ENOSPC", sent,
       (unsigned long long)params.max_message_size);
  } else {
    fail("fill the group until ENOSPC", "the last send returned %zd (%s)", n, strerror(errno));
  }
  EXPECT(synch_set_send_timeout(fd, 150), 0, "set a send timeout of 150 ms");
  start = now_ms();
  n = synch_send(fd, "x", 1);
  elapsed = now_ms() - start;
  if (n < 0 && errno == ENOSPC && elapsed >= 140) {
    ok("a send into the full group waits for the timeout (%lld ms), then fails with ENOSPC",
       elapsed);
  } else {
    fail("a send into the full group waits for the timeout, then fails with ENOSPC",
         "returned %zd (%s) after %lld ms", n, n < 0 ? strerror(errno) : "sent", elapsed);
  }
  n = synch_receive(fd, buffer, sizeof buffer);
  EXPECT(n > 0 ? 0 : -1, 0, "read one message: room for one more");
  start = now_ms();
  n = synch_send(fd, "x", 1);
  elapsed = now_ms() - start;
  if (n == 1) {
    ok("a send with a timeout into a group with room is sent at once (%lld ms)", elapsed);
  } else {
    fail("a send with a timeout into a group with room is sent", "returned %zd (%s)", n,
         n < 0 ? strerror(errno) : "short");
  }
  reset_group(fd);
}

static void section_revoke(int fd) {
  char buffer[64];
  struct synch_group_stats stats;
  struct pollfd poller;
  ssize_t n;

  printf("-- revoke\n");
  reset_group(fd);
  EXPECT(synch_set_send_delay(fd, 300), 0, "set a send delay of 300 ms");
  send_text(fd, "revoked 1", "write delayed message 1");
  send_text(fd, "revoked 2", "write delayed message 2");
  send_text(fd, "revoked 3", "write delayed message 3");
  EXPECT(synch_revoke_delayed_messages(fd), 3, "revoke returns 3");
  if (synch_get_stats(fd, &stats) != 0) {
    fail("revoked messages free their bytes at once", "%s", strerror(errno));
  } else if (stats.delayed_messages != 0 || stats.delayed_bytes != 0) {
    fail("revoked messages free their bytes at once", "delayed_messages=%llu delayed_bytes=%llu",
         (unsigned long long)stats.delayed_messages, (unsigned long long)stats.delayed_bytes);
  } else {
    ok("revoked messages free their bytes at once (delayed 0 messages, 0 bytes)");
  }
  poller.fd = fd;
  poller.events = POLLIN;
  poller.revents = 0;
  (void)poll(&poller, 1, 600); /* twice the delay: a revoked message must not show up */
  n = synch_receive(fd, buffer, sizeof buffer);
  EXPECT(n, 0, "nothing arrives after the delay has passed");
  EXPECT(synch_revoke_delayed_messages(fd), 0, "a second revoke returns 0");
  EXPECT(synch_set_send_delay(fd, 0), 0, "set the send delay back to 0");
}

static void section_flush(int fd) {
  char buffer[64];
  uint32_t delay = 0;
  int writer;
  ssize_t n;
  long long start;

  printf("-- flush\n");
  reset_group(fd);
  EXPECT(synch_set_send_delay(fd, 60000), 0, "set a send delay of 60 s");
  send_text(fd, "flushed 1", "write delayed message 1");
  send_text(fd, "flushed 2", "write delayed message 2");
  n = synch_receive(fd, buffer, sizeof buffer);
  EXPECT(n, 0, "nothing is readable before the flush");
  EXPECT(synch_flush(fd), 2, "SYNCH_IOC_FLUSH returns 2");
  n = synch_receive(fd, buffer, sizeof buffer);
  expect_message(n, errno, buffer, "flushed 1", "read flushed message 1 at once");
  n = synch_receive(fd, buffer, sizeof buffer);
  expect_message(n, errno, buffer, "flushed 2", "read flushed message 2 at once, in write order");
  n = synch_receive(fd, buffer, sizeof buffer);
  EXPECT(n, 0, "nothing else is readable");
  if (synch_get_send_delay(fd, &delay) != 0 || delay != 60000) {
    fail("the flush keeps the send delay", "delay %u (%s)", delay, strerror(errno));
  } else {
    ok("the flush keeps the send delay (60000 ms)");
  }

  writer = synch_open_group(g_group, O_WRONLY);
  if (writer < 0) {
    fail("open a second descriptor of the group", "%s", strerror(errno));
  } else {
    ok("open a second descriptor of the group");
    send_text(writer, "flushed on close", "write a delayed message through it");
    n = synch_receive(fd, buffer, sizeof buffer);
    EXPECT(n, 0, "it is not readable yet");
    start = now_ms();
    EXPECT(close(writer), 0, "close() the second descriptor");
    /* The kernel sends the release to the server asynchronously: wait a little for it. */
    n = receive_within(fd, buffer, sizeof buffer, WAIT_MS);
    expect_message(n, errno, buffer, "flushed on close", "the close() flushed it: readable");
    if (n > 0) printf("     (after %lld ms)\n", now_ms() - start);
  }
  EXPECT(synch_set_send_delay(fd, 0), 0, "set the send delay back to 0");
}

/* ---- barrier ---- */

/* A thread that sleeps on the barrier once. The sleepers of the barrier section and the one of
 * the removal section live here, for the whole run: one that a broken server never wakes is
 * released by the removal (EIDRM), or ends with the process. */
struct sleeper {
  pthread_t thread;
  int fd;
  int result;
  int error;
  int done;   /* guarded by g_sleepers_lock */
  int joined; /* main thread only */
};

static struct sleeper g_sleepers[SLEEPERS + 1];
static int g_sleepers_started; /* main thread only */
static pthread_mutex_t g_sleepers_lock = PTHREAD_MUTEX_INITIALIZER;

static void* sleeper_main(void* argument) {
  struct sleeper* sleeper = argument;
  const int result = synch_sleep_on_barrier(sleeper->fd);
  const int error = errno;
  pthread_mutex_lock(&g_sleepers_lock);
  sleeper->result = result;
  sleeper->error = error;
  sleeper->done = 1;
  pthread_mutex_unlock(&g_sleepers_lock);
  return NULL;
}

/* Starts sleepers until `count` more run; returns how many started. They leave
 * SIGINT/SIGTERM/SIGHUP to the main thread (clean-up, see main()). */
static int start_sleepers(int fd, int count) {
  sigset_t blocked;
  sigset_t previous;
  int started = 0;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &blocked, &previous);
  while (started < count && g_sleepers_started < SLEEPERS + 1) {
    struct sleeper* sleeper = &g_sleepers[g_sleepers_started];
    int error;
    sleeper->fd = fd;
    error = pthread_create(&sleeper->thread, NULL, sleeper_main, sleeper);
    if (error != 0) {
      fail("start a thread that sleeps on the barrier", "%s", strerror(error));
      break;
    }
    ++g_sleepers_started;
    ++started;
  }
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  return started;
}

/* Sleepers that have not returned yet. */
static int sleepers_asleep(void) {
  int asleep = 0;
  int i;
  pthread_mutex_lock(&g_sleepers_lock);
  for (i = 0; i < g_sleepers_started; ++i)
    asleep += !g_sleepers[i].done;
  pthread_mutex_unlock(&g_sleepers_lock);
  return asleep;
}

/* Waits up to WAIT_MS until no sleeper is asleep any more; joins the ones that returned. */
static void wait_for_sleepers_to_return(void) {
  const long long deadline = now_ms() + WAIT_MS;
  int i;
  while (sleepers_asleep() > 0 && now_ms() < deadline)
    sleep_ms(10);
  for (i = 0; i < g_sleepers_started; ++i) {
    int done;
    pthread_mutex_lock(&g_sleepers_lock);
    done = g_sleepers[i].done;
    pthread_mutex_unlock(&g_sleepers_lock);
    if (done && !g_sleepers[i].joined) {
      pthread_join(g_sleepers[i].thread, NULL);
      g_sleepers[i].joined = 1;
    }
  }
}

/* Polls the group's stats until stats.sleepers == wanted or WAIT_MS passed: 1 when reached, 0 on
 * time-out, -1 on error. */
static int wait_for_sleeper_count(int fd, uint64_t wanted, uint64_t* seen) {
  const long long deadline = now_ms() + WAIT_MS;
  struct synch_group_stats stats;
  for (;;) {
    if (synch_get_stats(fd, &stats) != 0) return -1;
    *seen = stats.sleepers;
    if (stats.sleepers == wanted) return 1;
    if (now_ms() >= deadline) return 0;
    sleep_ms(10);
  }
}

static void section_barrier(int fd) {
  uint64_t seen = 0;
  int started;
  int found;
  int first = g_sleepers_started;
  int all_zero = 1;
  int i;

  printf("-- barrier\n");
  reset_group(fd);
  EXPECT(synch_awake_barrier(fd), 0, "awake with no sleepers returns 0");
  started = start_sleepers(fd, SLEEPERS);
  if (started == 0) return;
  ok("start %d threads that sleep on the barrier", started);

  found = wait_for_sleeper_count(fd, (uint64_t)started, &seen);
  if (found < 0) {
    fail("stats.sleepers counts the sleeping threads", "%s", strerror(errno));
  } else if (found == 0) {
    fail("stats.sleepers counts the sleeping threads", "%llu after %d ms, expected %d",
         (unsigned long long)seen, WAIT_MS, started);
  } else {
    ok("stats.sleepers == %d", started);
  }
  i = started - sleepers_asleep();
  if (i != 0) {
    fail("the sleepers sleep until the awake (an earlier awake is not remembered)",
         "%d returned early", i);
  } else {
    ok("the sleepers sleep until the awake (an earlier awake is not remembered)");
  }
  EXPECT(synch_awake_barrier(fd), started, "awake returns the number of sleepers woken");
  wait_for_sleepers_to_return();

  pthread_mutex_lock(&g_sleepers_lock);
  for (i = first; i < first + started; ++i) {
    if (!g_sleepers[i].done) {
      all_zero = 0;
      printf("     sleeper %d still sleeps after %d ms\n", i - first, WAIT_MS);
    } else if (g_sleepers[i].result != 0) {
      all_zero = 0;
      printf("     sleeper %d returned %d: %s\n", i - first, g_sleepers[i].result,
             strerror(g_sleepers[i].error));
    }
  }
  pthread_mutex_unlock(&g_sleepers_lock);
  if (all_zero) {
    ok("all %d sleepers returned 0", started);
  } else {
    fail("all sleepers returned 0", "see above");
  }
  found = wait_for_sleeper_count(fd, (uint64_t)sleepers_asleep(), &seen);
  if (found == 1) {
    ok("stats.sleepers == %d after the awake", sleepers_asleep());
  } else {
    fail("stats.sleepers counts only the threads still asleep after the awake",
         "%llu, expected %d (%s)", (unsigned long long)seen, sleepers_asleep(),
         found < 0 ? strerror(errno) : "timed out");
  }
}

/* The fast path: the library's descriptor works in the group's shared memory (when the server
 * offers it), and a plain descriptor of the same device shares the queue with it. */
static void section_fast_path(int fd) {
  char path[SYNCH_PATH_MAX];
  char buffer[64];
  ssize_t n;
  int raw;
  printf("-- fast path\n");
  if (synch_fast_path_active(fd) == 1) {
    ok("the library's descriptor works in the group's shared memory");
  } else {
    printf(
        "     no fast path on this descriptor (SYNCHMESS_FASTPATH=0, or a server run with "
        "--no-fast-path): the device serves it\n");
  }
  if (synch_device_path(g_group, path, sizeof path) < 0) {
    fail("the group's device path", "%s", strerror(errno));
    return;
  }
  raw = open(path, O_RDWR | O_CLOEXEC);
  if (raw < 0) {
    fail("open the device with open(2)", "%s", strerror(errno));
    return;
  }
  reset_group(fd);
  EXPECT(write(raw, "by write()", 10), 10, "write() on a plain descriptor");
  send_text(fd, "by the library", "synch_send() on the library's descriptor");
  n = synch_receive(fd, buffer, sizeof buffer - 1);
  expect_message(n, errno, buffer, "by write()", "the library reads the plain write first");
  n = read(raw, buffer, sizeof buffer - 1);
  expect_message(n, errno, buffer, "by the library", "read() takes the library's message next");
  EXPECT(close(raw), 0, "close() the plain descriptor");
}

static void section_stats(int fd) {
  struct synch_group_stats stats;

  printf("-- stats\n");
  reset_group(fd);
  EXPECT(synch_set_send_delay(fd, 60000), 0, "set a send delay of 60 s");
  send_text(fd, "delay", "write a 5-byte delayed message");
  EXPECT(synch_set_send_delay(fd, 0), 0, "set the send delay to 0");
  send_text(fd, "now", "write a 3-byte message");
  if (synch_get_stats(fd, &stats) != 0) {
    fail("read the group's stats", "%s", strerror(errno));
  } else {
    printf(
        "     queued_messages=%llu queued_bytes=%llu delayed_messages=%llu delayed_bytes=%llu "
        "sleepers=%llu readers_waiting=%llu\n",
        (unsigned long long)stats.queued_messages, (unsigned long long)stats.queued_bytes,
        (unsigned long long)stats.delayed_messages, (unsigned long long)stats.delayed_bytes,
        (unsigned long long)stats.sleepers, (unsigned long long)stats.readers_waiting);
    if (stats.queued_messages == 1 && stats.queued_bytes == 3 && stats.delayed_messages == 1 &&
        stats.delayed_bytes == 5 && stats.sleepers == (uint64_t)sleepers_asleep() &&
        stats.readers_waiting == 0) {
      ok("stats count 1 queued message (3 bytes) and 1 delayed (5 bytes)");
    } else {
      fail("stats count 1 queued message (3 bytes) and 1 delayed (5 bytes)", "see above");
    }
  }
  EXPECT(synch_revoke_delayed_messages(fd), 1, "revoke the delayed one");
  reset_group(fd);
}

static void section_listing(void) {
  static char listing[256 * 1024];
  char prefix[SYNCH_NAME_MAX + 2];
  const char* line;
  ssize_t n;

  printf("-- control device listing\n");
  n = read_text_device("synchmess", listing, sizeof listing);
  if (n < 0) {
    fail("read the control device's group list", "%s", strerror(errno));
    return;
  }
  snprintf(prefix, sizeof prefix, "%s ", g_group);
  for (line = listing; line != NULL && *line != '\0';) {
    const char* end = strchr(line, '\n');
    if (strncmp(line, prefix, strlen(prefix)) == 0) {
      ok("the control device lists the group: %.*s", end ? (int)(end - line) : (int)strlen(line),
         line);
      return;
    }
    line = end ? end + 1 : NULL;
  }
  fail("the control device lists the group", "no line starts with \"%s\" in %zd bytes", g_group, n);
}

static void section_params(int fd) {
  struct synch_params params;
  char text[4096];
  char expected[128];
  void* aligned = NULL;
  unsigned char* message;
  size_t page;
  ssize_t n;
  int result;

  printf("-- parameters\n");
  reset_group(fd);
  if (synch_get_params(&params) != 0) {
    fail("read the parameters (config device)", "%s", strerror(errno));
    return;
  }
  if (params.max_message_size == 0 || params.max_message_size > SYNCH_MAX_MESSAGE_SIZE_LIMIT ||
      params.max_storage_size == 0 || params.max_storage_size > SYNCH_MAX_STORAGE_SIZE_LIMIT) {
    fail("read the parameters (config device)",
         "out of range: max_message_size=%llu "
         "max_storage_size=%llu",
         (unsigned long long)params.max_message_size, (unsigned long long)params.max_storage_size);
    return;
  }
  ok("read the parameters: max_message_size=%llu max_storage_size=%llu",
     (unsigned long long)params.max_message_size, (unsigned long long)params.max_storage_size);

  if (read_text_device("config", text, sizeof text) < 0) {
    fail("read the config device as text", "%s", strerror(errno));
  } else {
    snprintf(expected, sizeof expected, "max_message_size=%llu\n",
             (unsigned long long)params.max_message_size);
    result = strstr(text, expected) != NULL;
    snprintf(expected, sizeof expected, "max_storage_size=%llu\n",
             (unsigned long long)params.max_storage_size);
    result = result && strstr(text, expected) != NULL;
    if (result) {
      ok("the config text shows the same values");
    } else {
      fail("the config text shows the same values", "got \"%s\"", text);
    }
  }

  /* A page-aligned buffer: the kernel moves it in one request (see SPEC, CUSE's 32 pages). */
  page = (size_t)sysconf(_SC_PAGESIZE);
  if (posix_memalign(&aligned, page, (size_t)params.max_message_size + 1) != 0) {
    fail("allocate a message of max_message_size + 1 bytes", "out of memory");
  } else {
    size_t i;
    message = aligned;
    for (i = 0; i <= params.max_message_size; ++i)
      message[i] = (unsigned char)(i * 7 + 1);
    EXPECT_ERROR(synch_send(fd, message, (size_t)params.max_message_size + 1), EMSGSIZE,
                 "a message of max_message_size + 1 bytes is EMSGSIZE");
    if (params.max_message_size <= params.max_storage_size) {
      unsigned char* back = malloc((size_t)params.max_message_size);
      EXPECT(synch_send(fd, message, (size_t)params.max_message_size),
             (long)params.max_message_size, "a message of max_message_size bytes is sent whole");
      if (back == NULL) {
        fail("read it back", "out of memory");
      } else {
        n = synch_receive(fd, back, (size_t)params.max_message_size);
        if (n == (ssize_t)params.max_message_size &&
            memcmp(back, message, (size_t)params.max_message_size) == 0) {
          ok("it is read back whole and intact");
        } else {
          fail("it is read back whole and intact", "read returned %zd (%s)", n,
               n < 0 ? strerror(errno) : "short or different");
        }
        free(back);
      }
    }
    free(message);
  }

  /* Setting the values it already has changes nothing; only root may do it. */
  result = synch_set_params(&params);
  if (geteuid() == 0) {
    expect(result, errno, 0, "set the parameters (same values, as root)");
  } else if (result == -1 && (errno == EACCES || errno == EPERM)) {
    ok("setting the parameters is refused to a user who is not root (%s)", strerror(errno));
  } else {
    fail("setting the parameters is refused to a user who is not root", "returned %d (%s)", result,
         result < 0 ? strerror(errno) : "accepted");
  }
}

static void section_remove(int fd) {
  struct synch_group_stats stats;
  char what[256];
  int asleep[SLEEPERS + 1];
  uint64_t seen = 0;
  long long deadline;
  int opened;
  int error = 0;
  int sleeping = 0;
  int released = 0;
  int i;

  printf("-- removal\n");
  /* A thread asleep on the barrier when the group goes must return with EIDRM. */
  if (fd >= 0 && start_sleepers(fd, 1) == 1) {
    if (wait_for_sleeper_count(fd, (uint64_t)sleepers_asleep(), &seen) != 1) {
      fail("a thread sleeps on the barrier before the removal", "stats.sleepers %llu, expected %d",
           (unsigned long long)seen, sleepers_asleep());
    }
  }
  pthread_mutex_lock(&g_sleepers_lock);
  for (i = 0; i < g_sleepers_started; ++i)
    asleep[i] = !g_sleepers[i].done;
  pthread_mutex_unlock(&g_sleepers_lock);

  snprintf(what, sizeof what, "remove group %s", g_group);
  if (synch_remove_group(g_group) != 0) {
    fail(what, "%s", strerror(errno));
    return;
  }
  g_installed = 0;
  ok("%s", what);
  wait_for_sleepers_to_return();
  pthread_mutex_lock(&g_sleepers_lock);
  for (i = 0; i < g_sleepers_started; ++i) {
    const struct sleeper* sleeper = &g_sleepers[i];
    if (!asleep[i]) continue;
    ++sleeping;
    if (!sleeper->done) {
      printf("     sleeper %d still asleep after %d ms\n", i, WAIT_MS);
    } else if (sleeper->result != -1 || sleeper->error != EIDRM) {
      printf("     sleeper %d returned %d (%s)\n", i, sleeper->result,
             sleeper->result == -1 ? strerror(sleeper->error) : "woken");
    } else {
      ++released;
    }
  }
  pthread_mutex_unlock(&g_sleepers_lock);
  if (sleeping > 0 && released == sleeping) {
    ok("the %d thread(s) asleep on the barrier returned with EIDRM", sleeping);
  } else if (sleeping > 0) {
    fail("the threads asleep on the barrier return with EIDRM", "%d of %d did, see above", released,
         sleeping);
  }
  EXPECT_ERROR(synch_remove_group(g_group), ENOENT, "removing it again is ENOENT");
  if (fd >= 0) {
    if (synch_get_stats(fd, &stats) == 0) {
      fail("a call on a descriptor still open on the removed group fails", "it succeeded");
    } else {
      ok("a call on a descriptor still open on the removed group fails: %s", strerror(errno));
    }
  }
  /* The node goes with the device; allow the device manager a moment. */
  deadline = now_ms() + WAIT_MS;
  for (;;) {
    opened = synch_open_group(g_group, O_RDWR);
    error = errno;
    if (opened >= 0) close(opened);
    if (opened < 0 || now_ms() >= deadline) break;
    sleep_ms(20);
  }
  if (opened < 0 && error == ENOENT) {
    ok("the device node is gone (open is ENOENT)");
  } else if (opened < 0) {
    fail("the device node is gone", "open failed with %s, expected ENOENT", strerror(error));
  } else {
    fail("the device node is gone", "it still opens after %d ms", WAIT_MS);
  }
}

/* ---- clean-up on signals and the watchdog ---- */

static void write_text(int fd, const char* text) {
  ssize_t ignored = write(fd, text, strlen(text));
  (void)ignored;
}

/* Removes the group and exits; async-signal-safe (the client library only calls open, ioctl and
 * close). alarm() bounds the clean-up: SIGALRM keeps its default action, ending the process. */
static void remove_group_and_exit(int status) {
  alarm(5);
  if (g_installed && synch_remove_group(g_group) == 0) {
    write_text(STDERR_FILENO, "removed the test group\n");
  }
  _exit(status);
}

static void on_signal(int signal_number) {
  write_text(STDERR_FILENO, "interrupted: removing the test group\n");
  remove_group_and_exit(128 + signal_number);
}

static void* watchdog_main(void* argument) {
  const long long deadline = now_ms() + g_watchdog_seconds * 1000LL;
  (void)argument;
  while (now_ms() < deadline)
    sleep_ms(100);
  write_text(STDOUT_FILENO, "FAIL watchdog: the test did not finish in time (a call blocked?)\n");
  remove_group_and_exit(1);
  return NULL;
}

/* ---- main ---- */

static void usage(FILE* out) {
  fprintf(out,
          "Usage: %s [--dir DIR] [--timeout SECONDS]\n"
          "Functional test of a running synchmess-cuse: installs the group synchmess-test-<pid>,\n"
          "checks messaging, delayed messages, the receive timeout, revoke, flush, the barrier,\n"
          "stats and the parameters, and removes the group again.\n"
          "\n"
          "  -d, --dir DIR          the directory of the devices (default: $SYNCHMESS_DIR,\n"
          "                         else %s)\n"
          "  -t, --timeout SECONDS  end the run as failed after SECONDS (default %d)\n"
          "  -h, --help             print this help and exit\n"
          "\n"
          "Prints \"ok   <check>\" or \"FAIL <check>: <reason>\" per check, then a summary.\n"
          "Exit status: 0 every check passed; 1 a check failed or the server cannot be reached;\n"
          "2 bad command line.\n",
          g_program, SYNCH_DEV_DIR, WATCHDOG_SECONDS);
}

/* A whole number of seconds, 1..86400. */
static int parse_seconds(const char* text, long* seconds) {
  char* end = NULL;
  long value;
  errno = 0;
  value = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < 1 || value > 86400) return 0;
  *seconds = value;
  return 1;
}

/* The control device must open; otherwise say what is wrong. */
static int server_reachable(void) {
  char path[4096];
  int fd;
  if (synch_device_path("synchmess", path, sizeof path) < 0) {
    fprintf(stderr, "%s: bad device directory \"%s\": %s\n", g_program, synch_dir(),
            strerror(errno));
    return 0;
  }
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    close(fd);
    return 1;
  }
  if (errno == EACCES || errno == EPERM) {
    fprintf(stderr, "%s: cannot open %s: %s -- are synchmess's udev rules installed (mode 0666)?\n",
            g_program, path, strerror(errno));
  } else {
    fprintf(stderr,
            "%s: cannot open %s: %s -- is synchmess-cuse running?\n"
            "%s: (start it as root; it needs /dev/cuse: modprobe cuse. If the devices live "
            "elsewhere, use --dir DIR or SYNCHMESS_DIR=DIR.)\n",
            g_program, path, strerror(errno), g_program);
  }
  return 0;
}

int main(int argc, char** argv) {
  struct sigaction action;
  pthread_t watchdog;
  sigset_t blocked;
  sigset_t previous;
  int fd;
  int i;

  if (argc > 0 && argv[0] != NULL && argv[0][0] != '\0') {
    const char* slash = strrchr(argv[0], '/');
    g_program = slash != NULL ? slash + 1 : argv[0];
  }
  for (i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if ((strcmp(argv[i], "-d") == 0 || strcmp(argv[i], "--dir") == 0) && i + 1 < argc) {
      setenv(SYNCH_DIR_ENV, argv[++i], 1);
    } else if (strncmp(argv[i], "--dir=", 6) == 0) {
      setenv(SYNCH_DIR_ENV, argv[i] + 6, 1);
    } else if ((strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--timeout") == 0) && i + 1 < argc &&
               parse_seconds(argv[i + 1], &g_watchdog_seconds)) {
      ++i;
    } else if (strncmp(argv[i], "--timeout=", 10) == 0 &&
               parse_seconds(argv[i] + 10, &g_watchdog_seconds)) {
    } else {
      fprintf(stderr, "%s: bad argument \"%s\" (see --help)\n", g_program, argv[i]);
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  snprintf(g_group, sizeof g_group, "synchmess-test-%ld", (long)getpid());
  printf("%s: devices in %s, test group %s\n", g_program, synch_dir(), g_group);
  if (!server_reachable()) return 1;

  memset(&action, 0, sizeof action);
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGINT);
  sigaddset(&action.sa_mask, SIGTERM);
  sigaddset(&action.sa_mask, SIGHUP);
  sigaction(SIGINT, &action, NULL);
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGHUP, &action, NULL);
  signal(SIGALRM, SIG_DFL);
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &blocked, &previous);
  i = pthread_create(&watchdog, NULL, watchdog_main, NULL);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  if (i != 0) {
    fprintf(stderr, "%s: cannot start the watchdog thread: %s\n", g_program, strerror(i));
    return 1;
  }
  pthread_detach(watchdog);

  fd = section_creation();
  if (fd >= 0) {
    section_messaging(fd);
    section_delayed(fd);
    section_recv_timeout(fd);
    section_send_timeout(fd);
    section_revoke(fd);
    section_flush(fd);
    section_barrier(fd);
    section_fast_path(fd);
    section_stats(fd);
    section_listing();
    section_params(fd);
  }
  if (g_installed) section_remove(fd);
  if (fd >= 0) synch_close_group(fd);

  printf("%s: %d checks, %d failed: %s\n", g_program, g_checks, g_failures,
         g_failures == 0 ? "PASS" : "FAIL");
  return g_failures == 0 ? 0 : 1;
}
