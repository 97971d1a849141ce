// Groups: install, names, remove, permissions, many devices, the control device's listing,
// ioctl numbers that do not belong to a device.
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>

#include "support.hpp"

namespace synchmess::it {
namespace {

bool node_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Errors a still-open descriptor of a removed group may give (SPEC: ENODEV, or the kernel's own
// error once the node is gone: ENOTCONN/ECONNABORTED from FUSE, ...).
bool removed_group_error(int error) {
  return error == ENODEV || error == ENOTCONN || error == ECONNABORTED || error == EIDRM ||
         error == EIO || error == ENXIO;
}

}  // namespace

TEST_SUITE("groups") {
  TEST_CASE("install creates the device once, reports its path, and the node opens at once") {
    const std::string name = unique_name("install");
    synch_install reply{};
    const Sys first = install_group(name, &reply);
    INFO("first install -> " << first);
    REQUIRE(first.ok());
    CHECK(first.rc == 0);
    CHECK(reply.created == 1);
    CHECK(std::string(reply.path) == dev_path(name));
    CHECK(std::string(reply.group.name) == name);
    // When install returns, the node exists and opens: no polling for udev.
    CHECK(node_exists(dev_path(name)));
    {
      Fd fd = open_fd(dev_path(name), O_RDWR);
      CHECK_MESSAGE(static_cast<bool>(fd), "open right after install: " << errno_name(errno));
      if (cuse_nodes()) {
        struct stat st {};
        CHECK(::stat(dev_path(name).c_str(), &st) == 0);
        CHECK(S_ISCHR(st.st_mode));
      }
    }

    synch_install again{};
    const Sys second = install_group(name, &again);
    CHECK(second.ok());
    CHECK(again.created == 0);
    CHECK(std::string(again.path) == dev_path(name));

    CHECK_SYS_OK(remove_group(name).rc);
    CHECK(wait_until([&] { return !node_exists(dev_path(name)); }));

    // A removed name can be installed again: a fresh device.
    synch_install third{};
    CHECK(install_group(name, &third).ok());
    CHECK(third.created == 1);
    {
      Fd fd = open_fd(dev_path(name), O_RDWR);
      CHECK(static_cast<bool>(fd));
    }
    CHECK_SYS_OK(remove_group(name).rc);
  }

  TEST_CASE("an unprivileged user installs a group and opens it as soon as install returns") {
    if (needs_root("switching to uid 65534")) return;
    const std::string name = unique_name("nobody");
    // udev's MODE=0666 must already be applied when install returns, or this open fails EACCES.
    const std::string report = run_in_child(
        [name] {
          std::string problems;
          synch_install reply{};
          const Sys installed = install_group(name, &reply);
          problems += expect_ok("install as nobody", installed);
          if (!installed.ok()) return problems;
          if (reply.created != 1) problems += "created != 1; ";
          Fd fd = open_fd(dev_path(name), O_RDWR);
          if (!fd) return problems + "open right after install: " + errno_name(errno) + "; ";
          problems += expect_ok("write", send(fd.get(), "from nobody"));
          const Received r = receive(fd.get(), 64);
          if (r.data != "from nobody") problems += "read back: '" + r.data + "'; ";
          fd.reset();
          problems += expect_ok("remove own group", remove_group(name));
          return problems;
        },
        /*as_nobody=*/true);
    CHECK_MESSAGE(report.empty(), report);
    if (!report.empty()) (void)remove_group(name);

    // A group installed by root opens for nobody just as well.
    TestGroup group("rootgroup");
    if (cuse_nodes()) {
      struct stat st {};
      REQUIRE(::stat(group.path().c_str(), &st) == 0);
      CHECK((st.st_mode & 07777) == 0666);
    }
    const std::string path = group.path();
    const std::string other = run_in_child(
        [path] {
          Fd fd = open_fd(path, O_RDWR);
          if (!fd) return "open as nobody: " + errno_name(errno);
          return expect_ok("write as nobody", send(fd.get(), "hi"));
        },
        true);
    CHECK_MESSAGE(other.empty(), other);
  }

  TEST_CASE("bad group names are refused with EINVAL") {
    const std::string prefix = "it" + std::to_string(::getpid());
    const std::vector<std::string> bad = {"",
                                          ".",
                                          "..",
                                          ".hidden",
                                          "a/b",
                                          "../etc",
                                          "synchmess",
                                          "config",
                                          prefix + " space",
                                          prefix + "\ttab",
                                          prefix + "*",
                                          prefix + "?",
                                          prefix + "\xc3\xa9",
                                          prefix + ":x",
                                          prefix + "\n",
                                          prefix + "\\x"};
    for (const std::string& name : bad) {
      INFO("name '" << name << "'");
      CHECK_ERRNO(install_group(name).rc, EINVAL);
      if (!name.empty() && name != "." && name != ".." && name != "synchmess" && name != "config") {
        CHECK_FALSE(node_exists(dev_path(name)));
      }
    }
    // Allowed: 1..63 bytes of [A-Za-z0-9_.-], not starting with '.'.
    std::string longest = prefix + "-";
    longest.resize(63, 'x');
    for (const std::string& name : {prefix + "-A_z.0-9", prefix + ".", longest}) {
      INFO("name '" << name << "'");
      synch_install reply{};
      CHECK(install_group(name, &reply).ok());
      CHECK(reply.created == 1);
      CHECK(node_exists(dev_path(name)));
      CHECK_SYS_OK(remove_group(name).rc);
    }
    // The reserved names stay the control and config devices.
    CHECK(node_exists(control_path()));
    CHECK(node_exists(config_path()));
  }

  TEST_CASE("a name without its terminating NUL is refused with EINVAL") {
    Fd control = must_open(control_path(), O_RDWR);
    synch_install request{};
    std::memset(request.group.name, 'a', sizeof request.group.name);  // 64 bytes, no NUL
    CHECK_ERRNO(::ioctl(control.get(), SYNCH_IOC_INSTALL_GROUP, &request), EINVAL);
    group_t group{};
    std::memset(group.name, 'a', sizeof group.name);
    CHECK_ERRNO(::ioctl(control.get(), SYNCH_IOC_REMOVE_GROUP, &group), EINVAL);
    // The reserved field must be 0.
    synch_install reserved{};
    reserved.group = group_name(unique_name("reserved"));
    reserved.reserved = 1;
    CHECK_ERRNO(::ioctl(control.get(), SYNCH_IOC_INSTALL_GROUP, &reserved), EINVAL);
    CHECK_FALSE(node_exists(dev_path(reserved.group.name)));
  }

  TEST_CASE("remove: ENOENT for an unknown group, EPERM for another uid, ok for owner and root") {
    CHECK_ERRNO(remove_group(unique_name("never-installed")).rc, ENOENT);
    if (needs_root("the uid checks")) return;
    // Installed by root: nobody may not remove it.
    const std::string owned_by_root = unique_name("rootowned");
    REQUIRE(install_group(owned_by_root).ok());
    const std::string refused = run_in_child(
        [owned_by_root] {
          return expect_errno("remove root's group as nobody", remove_group(owned_by_root), EPERM);
        },
        true);
    CHECK_MESSAGE(refused.empty(), refused);
    CHECK(node_exists(dev_path(owned_by_root)));
    {
      Fd still_there = open_fd(dev_path(owned_by_root), O_RDWR);
      CHECK(static_cast<bool>(still_there));
    }
    CHECK_SYS_OK(remove_group(owned_by_root).rc);  // root: ok

    // Installed by nobody: nobody removes it.
    const std::string by_owner = unique_name("ownerremoves");
    const std::string owner_report = run_in_child(
        [by_owner] {
          std::string problems = expect_ok("install as nobody", install_group(by_owner));
          return problems + expect_ok("remove as its owner", remove_group(by_owner));
        },
        true);
    CHECK_MESSAGE(owner_report.empty(), owner_report);
    CHECK(wait_until([&] { return !node_exists(dev_path(by_owner)); }));

    // Installed by nobody: root removes it.
    const std::string by_root = unique_name("rootremoves");
    const std::string install_report = run_in_child(
        [by_root] { return expect_ok("install as nobody", install_group(by_root)); }, true);
    CHECK_MESSAGE(install_report.empty(), install_report);
    CHECK_SYS_OK(remove_group(by_root).rc);
    CHECK_ERRNO(remove_group(by_root).rc, ENOENT);
  }

  TEST_CASE("after remove, operations on a still-open descriptor fail and the node is gone") {
    TestGroup group("removed");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "left behind").ok());
    group.remove();

    const Sys wrote = send(fd.get(), "late");
    INFO("write after remove -> " << wrote);
    CHECK(wrote.rc == -1);
    CHECK(removed_group_error(wrote.err));
    const Received r = receive(fd.get(), 64);
    INFO("read after remove -> rc=" << r.rc << " " << errno_name(r.err));
    CHECK(r.rc == -1);
    CHECK(removed_group_error(r.err));
    synch_group_stats stats{};
    const Sys ioctl_result = sys([&] { return ::ioctl(fd.get(), SYNCH_IOC_GET_STATS, &stats); });
    INFO("GET_STATS after remove -> " << ioctl_result);
    CHECK(ioctl_result.rc == -1);
    CHECK(removed_group_error(ioctl_result.err));
    const int revents = poll_events(fd.get(), POLLIN | POLLOUT, 0ms);
    INFO("poll after remove -> revents " << revents);
    CHECK((revents > 0 && (revents & (POLLERR | POLLHUP | POLLNVAL)) != 0));
    CHECK(wait_until([&] { return !node_exists(group.path()); }));
    CHECK(fd.reset() == 0);

    // The name is free again; the old messages went with the old group.
    synch_install reply{};
    REQUIRE(install_group(group.name(), &reply).ok());
    CHECK(reply.created == 1);
    {
      Fd fresh = must_open(group.path(), O_RDWR);
      CHECK(receive(fresh.get(), 64).rc == 0);
    }
    CHECK_SYS_OK(remove_group(group.name()).rc);
  }

  TEST_CASE("remove wakes a barrier sleeper and a waiting reader with EIDRM") {
    TestGroup group("eidrm");
    Fd sleeper_fd = group.open();
    Fd reader_fd = group.open();
    Fd watch = group.open();
    uint32_t forever = SYNCH_RECV_TIMEOUT_FOREVER;
    REQUIRE(::ioctl(reader_fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &forever) == 0);

    std::atomic<long> sleep_rc{1};
    std::atomic<int> sleep_err{0};
    std::atomic<long> read_rc{1};
    std::atomic<int> read_err{0};
    BoundedThread sleeper("barrier sleeper", [&] {
      const Sys s = sys([&] { return ::ioctl(sleeper_fd.get(), SYNCH_IOC_SLEEP_ON_BARRIER); });
      sleep_err = s.err;
      sleep_rc = s.rc;
    });
    BoundedThread reader("waiting reader", [&] {
      const Received r = receive(reader_fd.get(), 64);
      read_err = r.err;
      read_rc = r.rc;
    });
    synch_group_stats seen{};
    const bool parked = wait_for_stats(
        watch.get(), [](const auto& s) { return s.sleepers == 1 && s.readers_waiting == 1; },
        &seen);
    INFO("sleepers=" << seen.sleepers << " readers_waiting=" << seen.readers_waiting);
    REQUIRE(parked);
    group.remove();
    sleeper.join();
    reader.join();
    CHECK(sleep_rc.load() == -1);
    CHECK(errno_name(sleep_err.load()) == errno_name(EIDRM));
    CHECK(read_rc.load() == -1);
    CHECK(errno_name(read_err.load()) == errno_name(EIDRM));
  }

  TEST_CASE("concurrent installs of one name create one device") {
    const std::string name = unique_name("race");
    constexpr int kThreads = 8;
    constexpr int kChildren = 2;
    std::atomic<bool> go{false};
    std::atomic<int> created{0};
    std::atomic<int> failed{0};
    std::vector<std::unique_ptr<Child>> children;
    for (int i = 0; i < kChildren; ++i) {
      children.push_back(std::make_unique<Child>([name] {
        synch_install reply{};
        const Sys s = install_group(name, &reply);
        if (!s.ok()) return "install failed: " + errno_name(s.err);
        return std::string(reply.created == 1 ? "created" : "existed");
      }));
    }
    std::vector<std::unique_ptr<BoundedThread>> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.push_back(std::make_unique<BoundedThread>("installer", [&] {
        while (!go.load())
          std::this_thread::yield();
        synch_install reply{};
        const Sys s = install_group(name, &reply);
        if (!s.ok() || std::string(reply.path) != dev_path(name)) {
          ++failed;
        } else if (reply.created == 1) {
          ++created;
        }
      }));
    }
    go = true;
    for (auto& thread : threads)
      thread->join();
    int children_created = 0;
    for (auto& child : children) {
      CHECK(child->finish());
      CHECK_MESSAGE((child->report() == "created" || child->report() == "existed"),
                    child->report());
      if (child->report() == "created") ++children_created;
    }
    CHECK(failed.load() == 0);
    CHECK(created.load() + children_created == 1);
    CHECK(node_exists(dev_path(name)));
    CHECK_SYS_OK(remove_group(name).rc);
  }

  TEST_CASE("200 groups: one major, distinct minors, every node opens; then all removed") {
    if (needs_root("200 groups (more than one user may install)")) return;
    constexpr int kGroups = 200;
    std::vector<std::string> names;
    struct Cleanup {
      std::vector<std::string>& names;
      ~Cleanup() {
        for (const auto& n : names)
          (void)remove_group(n);
      }
    } cleanup{names};
    const int threads_before = server_thread_count();
    const auto start = Clock::now();
    for (int i = 0; i < kGroups; ++i) {
      const std::string name = unique_name("many" + std::to_string(i));
      synch_install reply{};
      const Sys s = install_group(name, &reply);
      INFO("install #" << i << " " << name << " -> " << s);
      REQUIRE(s.ok());
      REQUIRE(reply.created == 1);
      names.push_back(name);
    }
    MESSAGE("installed " << kGroups << " groups in " << static_cast<long>(ms_since(start))
                         << " ms");
    struct stat control_st {};
    REQUIRE(::stat(control_path().c_str(), &control_st) == 0);
    struct stat config_st {};
    REQUIRE(::stat(config_path().c_str(), &config_st) == 0);
    std::set<unsigned> minors;
    if (cuse_nodes()) {
      minors.insert(minor(control_st.st_rdev));
      minors.insert(minor(config_st.st_rdev));
      CHECK(major(config_st.st_rdev) == major(control_st.st_rdev));
    }
    int not_openable = 0;
    for (const std::string& name : names) {
      struct stat st {};
      INFO("group " << name);
      REQUIRE(::stat(dev_path(name).c_str(), &st) == 0);
      if (cuse_nodes()) {
        CHECK(S_ISCHR(st.st_mode));
        CHECK(major(st.st_rdev) == major(control_st.st_rdev));
        CHECK(minors.insert(minor(st.st_rdev)).second);  // distinct
      }
      Fd fd = open_fd(dev_path(name), O_RDWR);
      if (!fd) ++not_openable;
    }
    CHECK(not_openable == 0);
    if (cuse_nodes()) CHECK(minors.size() == kGroups + 2);
    // One fixed pool of threads serves every device.
    if (threads_before > 0) CHECK(server_thread_count() == threads_before);
    // The listing of 200 groups spans many reads.
    {
      Fd control = must_open(control_path(), O_RDONLY);
      const std::string listing = read_text(control.get(), 4096);
      int listed = 0;
      for (const std::string& name : names) {
        if (listing.find("\n" + name + " ") != std::string::npos ||
            listing.compare(0, name.size() + 1, name + " ") == 0) {
          ++listed;
        }
      }
      CHECK(listed == kGroups);
    }
    for (const std::string& name : names) {
      INFO("remove " << name);
      CHECK_SYS_OK(remove_group(name).rc);
    }
    CHECK(wait_until([&] {
      return std::none_of(names.begin(), names.end(),
                          [](const std::string& n) { return node_exists(dev_path(n)); });
    }));
    names.clear();
  }

  TEST_CASE("the control device lists every group with its counters, like cat") {
    const std::string owner = " owner=" + std::to_string(::geteuid());  // who installs them
    // Names that sort in a known order.
    const std::string a_name = unique_name("list-a");
    const std::string b_name = unique_name("list-b");
    REQUIRE(install_group(a_name).ok());
    REQUIRE(install_group(b_name).ok());
    struct Cleanup {
      std::string a, b;
      ~Cleanup() {
        (void)remove_group(a);
        (void)remove_group(b);
      }
    } cleanup{a_name, b_name};
    Fd a = must_open(dev_path(a_name), O_RDWR);
    Fd b = must_open(dev_path(b_name), O_RDWR);
    REQUIRE(send(a.get(), "abc").ok());
    REQUIRE(send(a.get(), "defg").ok());
    uint32_t delay = 60000;
    REQUIRE(::ioctl(b.get(), SYNCH_IOC_SET_SEND_DELAY, &delay) == 0);
    REQUIRE(send(b.get(), "later").ok());

    Fd control = must_open(control_path(), O_RDONLY);
    const std::string text = read_text(control.get(), 37);  // small reads: sequential like cat
    CHECK(receive(control.get(), 4096).rc == 0);            // EOF stays EOF
    INFO("listing:\n" << text);
    REQUIRE(!text.empty());
    CHECK(text.back() == '\n');
    std::istringstream lines(text);
    std::string line;
    std::string a_line;
    std::string b_line;
    std::vector<std::string> names_in_order;
    while (std::getline(lines, line)) {
      const std::string first = line.substr(0, line.find(' '));
      names_in_order.push_back(first);
      if (first == a_name) a_line = line;
      if (first == b_name) b_line = line;
    }
    CHECK(a_line == a_name + owner +
                        " queued_messages=2 queued_bytes=7 delayed_messages=0 "
                        "delayed_bytes=0 sleepers=0 readers_waiting=0 writers_waiting=0");
    CHECK(b_line == b_name + owner +
                        " queued_messages=0 queued_bytes=0 delayed_messages=1 "
                        "delayed_bytes=5 sleepers=0 readers_waiting=0 writers_waiting=0");
    CHECK(std::is_sorted(names_in_order.begin(), names_in_order.end()));

    // A new open takes a new snapshot.
    REQUIRE(receive(a.get(), 64).data == "abc");
    Fd again = must_open(control_path(), O_RDONLY);
    const std::string text2 = read_text(again.get(), 4096);
    CHECK(text2.find(a_name + owner + " queued_messages=1 queued_bytes=4 ") != std::string::npos);
    (void)::ioctl(b.get(), SYNCH_IOC_REVOKE_DELAYED_MESSAGES);
  }

  TEST_CASE("unknown ioctl numbers and ioctls of another device get ENOTTY") {
    TestGroup group("enotty");
    Fd g = group.open();
    Fd control = must_open(control_path(), O_RDWR);
    Fd config = must_open(config_path(), O_RDONLY);
    for (const int fd : {g.get(), control.get(), config.get()}) {
      INFO("fd " << fd);
      CHECK_ERRNO(::ioctl(fd, _IO(SYNCH_IOC_MAGIC, 99)), ENOTTY);
      CHECK_ERRNO(::ioctl(fd, _IO(SYNCH_IOC_MAGIC, 0)), ENOTTY);
      uint64_t word = 0;
      CHECK_ERRNO(::ioctl(fd, _IOR(SYNCH_IOC_MAGIC, 200, uint64_t), &word), ENOTTY);
    }
    // Group ioctls on the control and config devices.
    for (const int fd : {control.get(), config.get()}) {
      INFO("fd " << fd);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_SLEEP_ON_BARRIER), ENOTTY);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_AWAKE_BARRIER), ENOTTY);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_FLUSH), ENOTTY);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_REVOKE_DELAYED_MESSAGES), ENOTTY);
      synch_group_stats stats{};
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_GET_STATS, &stats), ENOTTY);
      uint32_t value = 5;
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_SET_SEND_DELAY, &value), ENOTTY);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_SET_RECV_TIMEOUT, &value), ENOTTY);
    }
    // Control ioctls on a group and on config; config ioctls on a group and on control.
    synch_install install{};
    install.group = group_name(unique_name("wrongdev"));
    group_t removal = group_name(group.name());
    synch_params params{};
    for (const int fd : {g.get(), config.get()}) {
      INFO("fd " << fd);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_INSTALL_GROUP, &install), ENOTTY);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_REMOVE_GROUP, &removal), ENOTTY);
    }
    for (const int fd : {g.get(), control.get()}) {
      INFO("fd " << fd);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_GET_PARAMS, &params), ENOTTY);
      CHECK_ERRNO(::ioctl(fd, SYNCH_IOC_SET_PARAMS, &params), ENOTTY);
    }
    CHECK_FALSE(node_exists(dev_path(install.group.name)));
    CHECK(node_exists(group.path()));  // the misdirected REMOVE did nothing
  }
}

}  // namespace synchmess::it
