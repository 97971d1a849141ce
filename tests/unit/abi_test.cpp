// The ioctl ABI of <synchmess/synchmess.h> (SPEC "ABI"): magic, numbers, directions and sizes
// are encoded so that the kernel's restricted ioctl path (CUSE) copies each argument whole.
#include <doctest/doctest.h>
#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

#include <synchmess/synchmess.h>

namespace {

struct Expected {
  const char* name;
  unsigned long command;
  unsigned number;
  unsigned direction;
  std::size_t size;
};

}  // namespace

TEST_CASE("ABI: every ioctl has magic 0xBC, its number, direction and argument size") {
  const Expected commands[] = {
      {"INSTALL_GROUP", SYNCH_IOC_INSTALL_GROUP, 1, _IOC_READ | _IOC_WRITE,
       sizeof(struct synch_install)},
      {"REMOVE_GROUP", SYNCH_IOC_REMOVE_GROUP, 2, _IOC_WRITE, sizeof(group_t)},
      {"SLEEP_ON_BARRIER", SYNCH_IOC_SLEEP_ON_BARRIER, 3, _IOC_NONE, 0},
      {"AWAKE_BARRIER", SYNCH_IOC_AWAKE_BARRIER, 4, _IOC_NONE, 0},
      {"SET_SEND_DELAY", SYNCH_IOC_SET_SEND_DELAY, 5, _IOC_WRITE, sizeof(uint32_t)},
      {"GET_SEND_DELAY", SYNCH_IOC_GET_SEND_DELAY, 6, _IOC_READ, sizeof(uint32_t)},
      {"REVOKE_DELAYED_MESSAGES", SYNCH_IOC_REVOKE_DELAYED_MESSAGES, 7, _IOC_NONE, 0},
      {"FLUSH", SYNCH_IOC_FLUSH, 8, _IOC_NONE, 0},
      {"SET_RECV_TIMEOUT", SYNCH_IOC_SET_RECV_TIMEOUT, 9, _IOC_WRITE, sizeof(uint32_t)},
      {"SET_SEND_TIMEOUT", SYNCH_IOC_SET_SEND_TIMEOUT, 13, _IOC_WRITE, sizeof(uint32_t)},
      {"FASTPATH_OFFER", SYNCH_IOC_FASTPATH_OFFER, 14, _IOC_READ,
       sizeof(struct synch_fastpath_offer)},
      {"GET_STATS", SYNCH_IOC_GET_STATS, 10, _IOC_READ, sizeof(struct synch_group_stats)},
      {"GET_PARAMS", SYNCH_IOC_GET_PARAMS, 11, _IOC_READ, sizeof(struct synch_params)},
      {"SET_PARAMS", SYNCH_IOC_SET_PARAMS, 12, _IOC_WRITE, sizeof(struct synch_params)},
  };
  for (const Expected& expected : commands) {
    CAPTURE(expected.name);
    CHECK(_IOC_TYPE(expected.command) == 0xBC);
    CHECK(_IOC_NR(expected.command) == expected.number);
    CHECK(_IOC_DIR(expected.command) == expected.direction);
    CHECK(_IOC_SIZE(expected.command) == expected.size);
  }
}

TEST_CASE("ABI: struct sizes, limits and defaults") {
  CHECK(SYNCH_NAME_MAX == 64);
  CHECK(SYNCH_PATH_MAX == 128);
  CHECK(sizeof(group_t) == 64);
  CHECK(sizeof(struct synch_install) == 200);
  CHECK(sizeof(struct synch_params) == 16);
  CHECK(sizeof(struct synch_group_stats) == 48);
  CHECK(offsetof(struct synch_install, path) == 64);
  CHECK(offsetof(struct synch_install, created) == 192);
  CHECK(SYNCH_DEFAULT_MAX_MESSAGE_SIZE == 4096);
  CHECK(SYNCH_DEFAULT_MAX_STORAGE_SIZE == 1048576);
  CHECK(SYNCH_MAX_MESSAGE_SIZE_LIMIT == 126976);  // 31 pages of 4 KiB
  CHECK(SYNCH_RECV_TIMEOUT_FOREVER == UINT32_MAX);
  CHECK(SYNCH_SEND_TIMEOUT_FOREVER == UINT32_MAX);
}
