// synchmess_integration_tests: the end-to-end suite of a running synchmess server, through the
// kernel (CUSE character devices under $SYNCHMESS_DIR, default /dev/synch).
//
// It needs a running server and root (it checks permissions by dropping to uid 65534 in forked
// children). tests/sandbox/ starts the server and runs this program, natively when /dev/cuse
// exists, else inside a User-Mode Linux guest.
//
// Environment:
//   SYNCHMESS_DIR                 device directory (default /dev/synch)
//   SYNCHMESS_LOAD_SCALE          multiplies message counts (default 1 in UML, 4 natively)
//   SYNCHMESS_PATIENCE_MS         bound of waits for things that must happen (30 s in UML, 10 s)
//   SYNCHMESS_TEST_CASE_TIMEOUT   seconds a test case may take before the run is ended (180)
//
// Exit status: doctest's (0 passed, 1 failed), 2 without a server, and 77 (kSkipExitCode) when
// every case that ran passed but some were skipped for want of root: they are listed at the end.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "support.hpp"

namespace {

// The last resort against a hang: a test case that runs longer than its budget ends the run with
// a message naming it (every wait in the tests is bounded; this catches a bug in that).
class WatchdogState {
 public:
  static WatchdogState& instance() {
    static auto* state = new WatchdogState();  // never destroyed: the thread outlives main()
    return *state;
  }

  void arm(const std::string& name) {
    std::lock_guard lock(mu_);
    if (!started_) {
      started_ = true;
      std::thread([this] { run(); }).detach();
    }
    name_ = name;
    deadline_ = synchmess::it::Clock::now() + budget();
    armed_ = true;
    cv_.notify_all();
  }

  void disarm() {
    std::lock_guard lock(mu_);
    armed_ = false;
    cv_.notify_all();
  }

 private:
  static std::chrono::seconds budget() {
    if (const char* env = std::getenv("SYNCHMESS_TEST_CASE_TIMEOUT"); env != nullptr) {
      const long value = std::atol(env);
      if (value > 0) return std::chrono::seconds(value);
    }
    return std::chrono::seconds(180);
  }

  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      const auto deadline = deadline_;
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && armed_ &&
          deadline_ == deadline) {
        synchmess::it::abort_run("watchdog: test case '" + name_ + "' did not finish within " +
                                 std::to_string(budget().count()) +
                                 " s (SYNCHMESS_TEST_CASE_TIMEOUT)");
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool armed_ = false;
  std::string name_;
  synchmess::it::Clock::time_point deadline_{};
};

struct WatchdogListener : doctest::IReporter {
  explicit WatchdogListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData& test) override {
    WatchdogState::instance().arm(test.m_name);
    synchmess::it::enter_test_case(test.m_name);  // its skips are booked to it
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {
    WatchdogState::instance().disarm();
  }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("synchmess-watchdog", 1, WatchdogListener);

}  // namespace

int main(int argc, char** argv) {
  using namespace synchmess::it;
  ::signal(SIGPIPE, SIG_IGN);
  doctest::Context context(argc, argv);
  if (context.shouldExit()) return context.run();  // --help, --list-test-cases, ...

  std::printf("synchmess integration tests: devices in %s (%s), uid %d, %s, load scale %d\n",
              base_dir().c_str(), cuse_nodes() ? "CUSE character devices" : "not CUSE nodes",
              static_cast<int>(::geteuid()), in_sandbox() ? "in the UML sandbox" : "native",
              load_scale());
  std::fflush(stdout);
  if (::access(control_path().c_str(), F_OK) != 0) {
    std::fprintf(stderr, "%s is missing: start synchmess-cuse first (or set SYNCHMESS_DIR)\n",
                 control_path().c_str());
    return 2;
  }
  const int status = context.run();
  // A run that passed but skipped cases for want of root says so in its status (kSkipExitCode).
  const bool skipped = report_skips();
  return status == 0 && skipped ? kSkipExitCode : status;
}
