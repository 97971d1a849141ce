/*
 * Linked by the C compiler alone (no libstdc++): proves the client library, fast path
 * included, needs no C++ runtime. Every call below fails before reaching a server.
 */
#include <synchmess/client.h>

#include <errno.h>
#include <stdio.h>

int main(void) {
  char buffer[4] = {0};
  int failures = 0;
  if (synch_send(-1, buffer, sizeof buffer) != -1 || errno != EBADF) ++failures;
  if (synch_receive(-1, buffer, sizeof buffer) != -1 || errno != EBADF) ++failures;
  if (synch_sleep_on_barrier(-1) != -1 || errno != EBADF) ++failures;
  if (synch_close_group(-1) != -1 || errno != EBADF) ++failures;
  if (synch_fast_path_active(-1) != 0) ++failures;
  printf("%s: the client library links and runs as C\n", failures == 0 ? "ok" : "FAIL");
  return failures == 0 ? 0 : 1;
}
