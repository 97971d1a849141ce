// The config device (the /sys substitute): text and ioctl, validation, permissions.
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "support.hpp"

namespace synchmess::it {
namespace {

std::string expected_text(const synch_params& p) {
  return "max_message_size=" + std::to_string(p.max_message_size) +
         "\nmax_storage_size=" + std::to_string(p.max_storage_size) + "\n";
}

bool same(const synch_params& a, const synch_params& b) {
  return a.max_message_size == b.max_message_size && a.max_storage_size == b.max_storage_size;
}

}  // namespace

TEST_SUITE("config") {
  TEST_CASE("reading the config device prints one key=value line per parameter, like cat") {
    const synch_params p = get_params();
    Fd fd = must_open(config_path(), O_RDONLY);
    const std::string text = read_text(fd.get(), 5);
    CHECK(text == expected_text(p));
    CHECK(receive(fd.get(), 4096).rc == 0);  // EOF stays EOF
    Fd again = must_open(config_path(), O_RDONLY);
    CHECK(read_text(again.get(), 4096) == expected_text(p));
  }

  TEST_CASE(
      "echo key=value > config works: an open with O_TRUNC is accepted and truncates nothing") {
    if (needs_root("this check")) return;
    ParamsGuard restore;
    // What the shell does for "echo max_storage_size=123456 > config".
    Fd fd = must_open(config_path(), O_WRONLY | O_CREAT | O_TRUNC);
    const std::string line = "max_storage_size=123456\n";
    CHECK(send(fd.get(), line).rc == static_cast<long>(line.size()));
    CHECK(get_params().max_storage_size == 123456);
    // And for a group file: the truncation stores and removes nothing.
    TestGroup group("trunc");
    Fd writer = group.open();
    REQUIRE(send(writer.get(), "kept").ok());
    Fd truncating = must_open(group.path(), O_WRONLY | O_TRUNC);
    CHECK(receive(writer.get(), 64).data == "kept");
  }

  TEST_CASE("root sets parameters with key=value lines; one write may carry several") {
    if (needs_root("this check")) return;
    ParamsGuard restore;
    Fd fd = must_open(config_path(), O_WRONLY);
    const std::string both = "max_message_size=5000\nmax_storage_size=200000\n";
    CHECK(send(fd.get(), both).rc == static_cast<long>(both.size()));
    synch_params now = get_params();
    CHECK(now.max_message_size == 5000);
    CHECK(now.max_storage_size == 200000);
    Fd reader = must_open(config_path(), O_RDONLY);
    CHECK(read_text(reader.get(), 4096) == both);

    // One key alone leaves the other as it is.
    const std::string one = "max_message_size=4097";
    CHECK(send(fd.get(), one).rc == static_cast<long>(one.size()));
    now = get_params();
    CHECK(now.max_message_size == 4097);
    CHECK(now.max_storage_size == 200000);

    // The new limit applies to the next write at once.
    TestGroup group("cfgapply");
    Fd g = group.open();
    CHECK(send(g.get(), std::string(4097, 'm')).rc == 4097);
    CHECK_ERRNO(send(g.get(), std::string(4098, 'm')).rc, EMSGSIZE);

    // And through the ioctl; 0 leaves a field unchanged.
    CHECK_SYS_OK(set_params(0, 300000).rc);
    now = get_params();
    CHECK(now.max_message_size == 4097);
    CHECK(now.max_storage_size == 300000);
  }

  TEST_CASE("bad config text fails the whole write with EINVAL and applies nothing") {
    if (needs_root("this check")) return;
    ParamsGuard restore;
    const synch_params before = get_params();
    Fd fd = must_open(config_path(), O_WRONLY);
    const std::vector<std::string> bad = {
        "bogus=1\n",
        "max_message_size\n",
        "max_message_size=\n",
        "max_message_size=abc\n",
        "max_message_size=-1\n",
        "max_message_size=0x100\n",
        "max_message_size=0\n",
        "max_storage_size=0\n",
        "max_message_size=126977\n",
        "max_storage_size=1099511627777\n",
        "max_message_size=99999999999999999999999\n",
        "max_message_size=5000\nbogus=1\n",             // a good line before a bad one
        "max_message_size=5000\nmax_storage_size=0\n",  // nothing applied, not even the first
        "\n",
    };
    for (const std::string& text : bad) {
      INFO("text '" << text << "'");
      CHECK_ERRNO(send(fd.get(), text).rc, EINVAL);
      CHECK(same(get_params(), before));
    }
  }

  TEST_CASE("a config write longer than 4096 bytes is refused whole, whatever the kernel splits") {
    if (needs_root("this check")) return;
    ParamsGuard restore;
    const synch_params before = get_params();
    Fd fd = must_open(config_path(), O_WRONLY);
    // Valid settings first, then empty lines: a server that applied the first request of a
    // split write would change max_message_size.
    const std::string settings = "max_message_size=2000\nmax_storage_size=777777\n";
    for (const size_t size : {size_t{4097}, size_t{200000}, size_t{1} << 20}) {
      INFO("a write of " << size << " bytes");
      std::string text = settings + std::string(size - settings.size(), '\n');
      CHECK_ERRNO(send(fd.get(), text).rc, EINVAL);
      CHECK(same(get_params(), before));
    }
    // Exactly 4096 bytes is a normal write.
    const std::string limit = settings + std::string(4096 - settings.size(), '\n');
    CHECK(send(fd.get(), limit).rc == 4096);
    CHECK(get_params().max_message_size == 2000);
    CHECK(get_params().max_storage_size == 777777);
  }

  TEST_CASE("a config writev the kernel splits is refused whole: its first part is undone") {
    // More pieces than one request holds (32 on CUSE, 256 on FUSE): the kernel answers the
    // call with the first request's count once a continuation fails; the server must leave
    // nothing of it applied, whether the whole is under 4096 bytes or over.
    if (needs_root("this check")) return;
    ParamsGuard restore;
    const synch_params before = get_params();
    Fd fd = must_open(config_path(), O_WRONLY);
    std::string settings = "max_message_size=2000\nmax_storage_size=777777\n";
    for (const size_t piece_size : {size_t{1}, size_t{15}}) {
      const std::string filler(piece_size, '\n');
      std::vector<iovec> pieces{{settings.data(), settings.size()}};
      for (int i = 0; i < 299; ++i)
        pieces.push_back({const_cast<char*>(filler.data()), filler.size()});
      const size_t total = settings.size() + 299 * piece_size;
      INFO("a writev of 300 pieces, " << total << " bytes");
      const ssize_t rc = ::writev(fd.get(), pieces.data(), static_cast<int>(pieces.size()));
      CHECK(rc < static_cast<ssize_t>(total));
      CHECK(same(get_params(), before));
    }
  }

  TEST_CASE("SET_PARAMS refuses max_message_size 126977 with EINVAL; 126976 is allowed") {
    if (needs_root("this check")) return;
    ParamsGuard restore;
    const synch_params before = get_params();
    CHECK_ERRNO(set_params(SYNCH_MAX_MESSAGE_SIZE_LIMIT + 1, 0).rc, EINVAL);
    CHECK_ERRNO(set_params(SYNCH_MAX_MESSAGE_SIZE_LIMIT + 1, 5000).rc, EINVAL);
    CHECK_ERRNO(set_params(0, SYNCH_MAX_STORAGE_SIZE_LIMIT + 1).rc, EINVAL);
    CHECK(same(get_params(), before));
    CHECK_SYS_OK(set_params(SYNCH_MAX_MESSAGE_SIZE_LIMIT, 0).rc);
    CHECK(get_params().max_message_size == SYNCH_MAX_MESSAGE_SIZE_LIMIT);
    // Through the text interface as well.
    Fd fd = must_open(config_path(), O_WRONLY);
    CHECK_ERRNO(send(fd.get(), "max_message_size=126977\n").rc, EINVAL);
    CHECK(get_params().max_message_size == SYNCH_MAX_MESSAGE_SIZE_LIMIT);
  }

  TEST_CASE("an unprivileged user reads the config but cannot change it") {
    if (needs_root("this check")) return;
    const synch_params before = get_params();
    const std::string path = config_path();
    // Both transports show SPEC.md's mode: udev sets it on the CUSE node, the FUSE mount
    // reports it (and default_permissions has the kernel enforce it).
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0644);
    const std::string report = run_in_child(
        [path, before] {
          std::string problems;
          // The mode (0644) refuses the open for writing.
          problems += expect_errno("open config O_WRONLY",
                                   Sys{::open(path.c_str(), O_WRONLY), errno}, EACCES);
          Fd fd = open_fd(path, O_RDONLY);
          if (!fd) return problems + "open config O_RDONLY: " + errno_name(errno);
          synch_params seen{};
          problems += expect_ok(
              "GET_PARAMS", sys([&] { return ::ioctl(fd.get(), SYNCH_IOC_GET_PARAMS, &seen); }));
          if (!same(seen, before)) problems += "GET_PARAMS returned other values; ";
          // The server refuses SET_PARAMS from uid != 0, whatever the open mode.
          synch_params change{before.max_message_size + 1, 0};
          problems += expect_errno(
              "SET_PARAMS as nobody",
              sys([&] { return ::ioctl(fd.get(), SYNCH_IOC_SET_PARAMS, &change); }), EPERM);
          const Received text = receive(fd.get(), 4096);
          if (text.rc <= 0) problems += "read config as nobody failed; ";
          return problems;
        },
        /*as_nobody=*/true);
    CHECK_MESSAGE(report.empty(), report);
    CHECK(same(get_params(), before));
  }

  TEST_CASE("the server itself refuses config writes from uid != 0 (EPERM), whatever the mode") {
    if (needs_root("this check")) return;
    if (only_on_cuse("it changes the config node's mode with chmod(), as a udev rule could"))
      return;
    const synch_params before = get_params();
    const std::string path = config_path();
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    // Open the node's mode for the length of the check, as a misconfigured udev rule would.
    REQUIRE(::chmod(path.c_str(), 0666) == 0);
    struct RestoreMode {
      std::string path;
      mode_t mode;
      ~RestoreMode() { ::chmod(path.c_str(), mode); }
    } restore{path, static_cast<mode_t>(st.st_mode & 07777)};
    const std::string report = run_in_child(
        [path] {
          Fd fd = open_fd(path, O_WRONLY);
          if (!fd) return "open config O_WRONLY with mode 0666: " + errno_name(errno);
          return expect_errno("write config as nobody", send(fd.get(), "max_message_size=1000\n"),
                              EPERM);
        },
        true);
    CHECK_MESSAGE(report.empty(), report);
    CHECK(same(get_params(), before));
  }
}

}  // namespace synchmess::it
