// The client header used from C++, built with the project's C++ warnings (-Wold-style-cast,
// -Wshadow...): it must compile, and its functions must link with C linkage. Every call below
// fails before or at its first system call, so no server is needed. Called by
// client_host_check.c; returns 0 when every call behaved.
#include <synchmess/client.h>

#include <cerrno>
#include <cstdint>

extern "C" int synch_cxx_check(void);

namespace {

bool fails_with(long result, int expected) {
  return result == -1 && errno == expected;
}

}  // namespace

extern "C" int synch_cxx_check(void) {
  char path[SYNCH_PATH_MAX];
  char buffer[8] = {};
  std::uint32_t delay = 0;
  synch_group_stats stats{};
  synch_params params{};
  bool good = synch_dir() != nullptr;
  good = synch_device_path("cxx", path, sizeof path) > 0 && good;
  good = fails_with(synch_install_group(nullptr, path, sizeof path, nullptr), EINVAL) && good;
  good = fails_with(synch_remove_group("config"), EINVAL) && good;
  good = fails_with(synch_open_group("a/b", 0), EINVAL) && good;
  good = fails_with(synch_send(-1, buffer, sizeof buffer), EBADF) && good;
  good = fails_with(synch_receive(-1, buffer, sizeof buffer), EBADF) && good;
  good = fails_with(synch_sleep_on_barrier(-1), EBADF) && good;
  good = fails_with(synch_awake_barrier(-1), EBADF) && good;
  good = fails_with(synch_set_send_delay(-1, 1), EBADF) && good;
  good = fails_with(synch_get_send_delay(-1, &delay), EBADF) && good;
  good = fails_with(synch_revoke_delayed_messages(-1), EBADF) && good;
  good = fails_with(synch_flush(-1), EBADF) && good;
  good = fails_with(synch_set_recv_timeout(-1, SYNCH_RECV_TIMEOUT_FOREVER), EBADF) && good;
  good = fails_with(synch_set_send_timeout(-1, SYNCH_SEND_TIMEOUT_FOREVER), EBADF) && good;
  good = fails_with(synch_get_stats(-1, &stats), EBADF) && good;
  good = fails_with(synch_get_params(nullptr), EINVAL) && good;
  params.max_storage_size = SYNCH_MAX_STORAGE_SIZE_LIMIT + 1;
  good = fails_with(synch_set_params(&params), EINVAL) && good;
  return good ? 0 : -1;
}
