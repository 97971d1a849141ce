// server/dying_caller: reading a thread's signal masks from /proc/<tid>/status.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "server/dying_caller.hpp"

namespace synchmess::server {
namespace {

constexpr uint64_t bit(int signal) {
  return uint64_t{1} << (signal - 1);
}

std::string status_text(uint64_t pending, uint64_t shared, uint64_t blocked, uint64_t ignored,
                        uint64_t caught) {
  char text[512];
  std::snprintf(text, sizeof text,
                "Name:\treader\nState:\tS (sleeping)\nTgid:\t42\nSigQ:\t1/63382\n"
                "SigPnd:\t%016llx\nShdPnd:\t%016llx\nSigBlk:\t%016llx\nSigIgn:\t%016llx\n"
                "SigCgt:\t%016llx\nCapInh:\t0000000000000000\n",
                static_cast<unsigned long long>(pending), static_cast<unsigned long long>(shared),
                static_cast<unsigned long long>(blocked), static_cast<unsigned long long>(ignored),
                static_cast<unsigned long long>(caught));
  return text;
}

bool fatal(uint64_t pending, uint64_t shared, uint64_t blocked = 0, uint64_t ignored = 0,
           uint64_t caught = 0) {
  const auto masks = parse_signal_masks(status_text(pending, shared, blocked, ignored, caught));
  REQUIRE(masks.has_value());
  return fatal_signal_pending(*masks);
}

}  // namespace

TEST_CASE("parse_signal_masks reads the five masks of /proc/<tid>/status") {
  const auto masks = parse_signal_masks(status_text(1, 0x100, 0x4000, 0x1000000000000000, 0xff));
  REQUIRE(masks.has_value());
  CHECK(masks->pending == 1);
  CHECK(masks->shared_pending == 0x100);
  CHECK(masks->blocked == 0x4000);
  CHECK(masks->ignored == 0x1000000000000000);
  CHECK(masks->caught == 0xff);

  CHECK_FALSE(parse_signal_masks("").has_value());
  CHECK_FALSE(parse_signal_masks("SigPnd:\t0\nShdPnd:\t0\n").has_value());
  CHECK_FALSE(
      parse_signal_masks(status_text(0, 0, 0, 0, 0)
                             .replace(status_text(0, 0, 0, 0, 0).find("SigBlk:\t0") + 8, 1, "x"))
          .has_value());
}

TEST_CASE("fatal_signal_pending: what kills the thread before it returns to user space") {
  CHECK_FALSE(fatal(0, 0));
  CHECK(fatal(bit(SIGKILL), 0));                            // a group kill: never blockable
  CHECK(fatal(bit(SIGKILL), 0, bit(SIGKILL)));              // (even if a mask claimed otherwise)
  CHECK(fatal(0, bit(SIGQUIT)));                            // core dump, pending for the process
  CHECK(fatal(bit(SIGTERM), 0));                            // default action: terminate
  CHECK(fatal(0, bit(SIGRTMIN + 1)));                       // real-time: terminate by default
  CHECK_FALSE(fatal(0, bit(SIGTERM), bit(SIGTERM)));        // blocked: not delivered now
  CHECK_FALSE(fatal(0, bit(SIGTERM), 0, bit(SIGTERM)));     // ignored
  CHECK_FALSE(fatal(0, bit(SIGUSR1), 0, 0, bit(SIGUSR1)));  // caught: the read returns
  CHECK_FALSE(fatal(bit(SIGCHLD) | bit(SIGWINCH) | bit(SIGURG) | bit(SIGCONT), 0));
  CHECK_FALSE(fatal(0, bit(SIGTSTP) | bit(SIGSTOP) | bit(SIGTTIN) | bit(SIGTTOU)));
}

TEST_CASE("parse_thread_stat reads the state and the thread's own pending signals") {
  // Field 31 ("signal") is 256 = SIGKILL; the command name holds spaces and a ')'.
  const std::string stat =
      "4242 (a (b) c) S 1 4242 4242 0 -1 4194304 97 0 0 0 0 0 0 0 20 0 1 0 123 2400000 200 "
      "18446744073709551615 1 1 0 0 0 256 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
  const auto parsed = parse_thread_stat(stat);
  REQUIRE(parsed.has_value());
  CHECK(parsed->state == 'S');
  CHECK(parsed->pending == 256);
  CHECK_FALSE(parse_thread_stat("4242 (x) S 1 2 3").has_value());  // too short
  CHECK_FALSE(parse_thread_stat("no parenthesis").has_value());
  CHECK_FALSE(parse_thread_stat("1 (x) SS 1").has_value());
}

TEST_CASE("thread_dying reads a real thread's masks") {
  CHECK_FALSE(thread_dying(::gettid()));
  CHECK_FALSE(thread_dying(0));  // a caller in a pid namespace we do not see
  CHECK_FALSE(thread_dying(-1));

  // A stopped child cannot act on a signal, so what kill() leaves pending stays visible:
  // SIGTERM that the child blocks is harmless, SIGQUIT at its default action is fatal.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::prctl(PR_SET_DUMPABLE, 0);  // no core file from SIGQUIT
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &term, nullptr);
    ::signal(SIGQUIT, SIG_DFL);
    ::raise(SIGSTOP);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, WUNTRACED) == child);
  REQUIRE(WIFSTOPPED(status));
  CHECK_FALSE(thread_dying(child));
  REQUIRE(::kill(child, SIGTERM) == 0);
  CHECK_FALSE(thread_dying(child));  // blocked
  REQUIRE(::kill(child, SIGQUIT) == 0);
  CHECK(thread_dying(child));  // stays pending in the shared set while the child is stopped
  ::kill(child, SIGKILL);
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK_FALSE(thread_dying(child));  // gone
}

}  // namespace synchmess::server
