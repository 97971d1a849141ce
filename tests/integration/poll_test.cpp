// poll(), select() and epoll on group devices.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <unistd.h>

#include "support.hpp"

namespace synchmess::it {

TEST_SUITE("poll") {
  TEST_CASE("POLLIN while a message is available, POLLOUT while a max-size message fits") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(4096, 8192).rc);
    TestGroup group("pollbits");
    Fd fd = group.open();
    CHECK(poll_events(fd.get(), POLLIN | POLLOUT, 0ms) == POLLOUT);
    REQUIRE(send(fd.get(), std::string(4096, 'a')).ok());
    CHECK(poll_events(fd.get(), POLLIN | POLLOUT, 0ms) == (POLLIN | POLLOUT));  // 4096 left
    REQUIRE(send(fd.get(), "b").ok());
    CHECK(poll_events(fd.get(), POLLIN | POLLOUT, 0ms) == POLLIN);  // 4095 left: no max message
    CHECK(poll_events(fd.get(), POLLOUT, 0ms) == 0);
    // Raising the limit makes room without a read.
    REQUIRE_SYS_OK(set_params(0, 8193).rc);
    CHECK(poll_events(fd.get(), POLLIN | POLLOUT, 0ms) == (POLLIN | POLLOUT));
    REQUIRE_SYS_OK(set_params(0, 8192).rc);
    CHECK(poll_events(fd.get(), POLLIN | POLLOUT, 0ms) == POLLIN);
    CHECK(receive(fd.get(), 8192).rc == 4096);
    CHECK(poll_events(fd.get(), POLLIN | POLLOUT, 0ms) == (POLLIN | POLLOUT));
    CHECK(receive(fd.get(), 8192).rc == 1);
    CHECK(poll_events(fd.get(), POLLIN | POLLOUT, 0ms) == POLLOUT);
  }

  TEST_CASE("a poll() blocked in another thread wakes up when a message is written") {
    TestGroup group("pollwake");
    Fd poller_fd = group.open();
    Fd writer_fd = group.open();
    std::atomic<int> revents{-2};
    BoundedThread poller("poller",
                         [&] { revents = poll_events(poller_fd.get(), POLLIN, patience()); });
    // The case this test is after: the poller blocked in poll() before the write.
    REQUIRE_EVENTUALLY(poller.blocked(), "the poller thread sleeps in poll()");
    CHECK_FALSE(poller.done());
    const auto sent_at = Clock::now();
    REQUIRE(send(writer_fd.get(), "ping").ok());
    poller.join();
    CHECK(revents.load() == POLLIN);
    CHECK(ms_since(sent_at) < static_cast<double>(patience().count()));
    CHECK(receive(poller_fd.get(), 64).data == "ping");
  }

  TEST_CASE("a poll() for POLLOUT blocked in another thread wakes up when a read frees room") {
    if (needs_root("changing the parameters")) return;
    ParamsGuard restore;
    REQUIRE_SYS_OK(set_params(4096, 4096).rc);
    TestGroup group("pollout");
    Fd fd = group.open();
    REQUIRE(send(fd.get(), "x").ok());  // 4095 left: no room for a max-size message
    std::atomic<int> revents{-2};
    BoundedThread poller("POLLOUT poller",
                         [&] { revents = poll_events(fd.get(), POLLOUT, patience()); });
    REQUIRE_EVENTUALLY(poller.blocked(), "the POLLOUT poller thread sleeps in poll()");
    CHECK_FALSE(poller.done());
    REQUIRE(receive(fd.get(), 64).rc == 1);
    poller.join();
    CHECK(revents.load() == POLLOUT);
  }

  TEST_CASE("select() reports a readable group") {
    TestGroup group("select");
    Fd fd = group.open();
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(fd.get(), &readable);
    timeval zero{0, 0};
    CHECK(::select(fd.get() + 1, &readable, nullptr, nullptr, &zero) == 0);
    REQUIRE(send(fd.get(), "s").ok());
    FD_ZERO(&readable);
    FD_SET(fd.get(), &readable);
    fd_set writable;
    FD_ZERO(&writable);
    FD_SET(fd.get(), &writable);
    timeval wait{static_cast<time_t>(patience().count() / 1000), 0};
    CHECK(::select(fd.get() + 1, &readable, &writable, nullptr, &wait) == 2);
    CHECK(FD_ISSET(fd.get(), &readable));
    CHECK(FD_ISSET(fd.get(), &writable));
  }

  TEST_CASE(
      "epoll: level-triggered readiness and an edge-triggered wake-up from another "
      "process") {
    TestGroup group("epoll");
    Fd fd = group.open();
    Fd ep(::epoll_create1(EPOLL_CLOEXEC));
    REQUIRE(static_cast<bool>(ep));
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = 42;
    REQUIRE(::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd.get(), &event) == 0);
    epoll_event got{};
    CHECK(::epoll_wait(ep.get(), &got, 1, 0) == 0);
    REQUIRE(send(fd.get(), "e1").ok());
    REQUIRE(::epoll_wait(ep.get(), &got, 1, static_cast<int>(patience().count())) == 1);
    const uint64_t cookie = got.data.u64;
    CHECK(cookie == 42);
    CHECK((static_cast<uint32_t>(got.events) & EPOLLIN) != 0);
    CHECK(::epoll_wait(ep.get(), &got, 1, 0) == 1);  // level-triggered: still readable
    CHECK(receive(fd.get(), 64).data == "e1");
    CHECK(::epoll_wait(ep.get(), &got, 1, 0) == 0);

    // Edge-triggered, waiting in this thread while another process writes.
    event.events = EPOLLIN | EPOLLET;
    REQUIRE(::epoll_ctl(ep.get(), EPOLL_CTL_MOD, fd.get(), &event) == 0);
    CHECK(::epoll_wait(ep.get(), &got, 1, 0) == 0);
    const std::string path = group.path();
    const pid_t waiter = current_tid();  // this thread, about to block in epoll_wait()
    Child writer([path, waiter] {
      // The wake-up under test is of a blocked epoll_wait(): write only once it blocks.
      if (!wait_until([&] { return asleep(waiter); })) {
        return std::string("the test thread was never seen asleep in epoll_wait()");
      }
      Fd w = open_fd(path, O_WRONLY);
      if (!w) return "open: " + errno_name(errno);
      return expect_ok("write", send(w.get(), "from-another-process"));
    });
    const int ready = ::epoll_wait(ep.get(), &got, 1, static_cast<int>(patience().count()));
    CHECK(ready == 1);
    CHECK((static_cast<uint32_t>(got.events) & EPOLLIN) != 0);
    CHECK(writer.finish());
    CHECK_MESSAGE(writer.report().empty(), writer.report());
    CHECK(receive(fd.get(), 64).data == "from-another-process");
  }
}

}  // namespace synchmess::it
