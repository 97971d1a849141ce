/* A program of a synchmess user, built against an installed copy of the library (with
 * pkg-config, or with CMake's find_package): it must compile with the installed header, link
 * against libsynchmess and run. Without a server it checks what the library answers on its own:
 * a group in a directory that does not exist is ENOENT, a descriptor that is no group is EBADF.
 * Exit status 0 and "consumer: ok" when every answer is right. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <synchmess/client.h>

static int failures;

static void expect_errno(const char* what, long rc, int expected) {
  if (rc == -1 && errno == expected) return;
  fprintf(stderr, "consumer: %s gave %ld (errno %s), wanted -1 with %s\n", what, rc,
          strerror(errno), strerror(expected));
  ++failures;
}

int main(void) {
  setenv("SYNCHMESS_DIR", "/nonexistent/synchmess-consumer", 1);
  errno = 0;
  expect_errno("synch_open_group", synch_open_group("consumer", O_RDWR), ENOENT);
  char byte = 0;
  errno = 0;
  expect_errno("synch_send on -1", synch_send(-1, &byte, 1), EBADF);
  if (failures != 0) return 1;
  puts("consumer: ok");
  return 0;
}
