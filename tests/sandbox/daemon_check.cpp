// daemon_check CONTROL SERVER [SERVER-ARGS...]: synchmess-cuse as systemd runs it.
//
// Starts SERVER with $NOTIFY_SOCKET (a datagram socket of ours, as for a Type=notify unit) and
// with stderr on a pipe that $JOURNAL_STREAM names (as when stderr is the journal), then checks:
//   - READY=1 arrives, and by then CONTROL (the control device) opens;
//   - after SIGTERM, STOPPING=1 arrives and the server exits 0;
//   - every log line starts with a syslog priority, "<3>" to "<7>", and carries no timestamp of
//     its own (journald adds it); one record per line.
// Prints one line per check; exit status 0 when every check passed.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

int g_failures = 0;

void check(bool passed, const std::string& what) {
  std::printf("daemon_check: %s %s\n", passed ? "ok  " : "FAIL", what.c_str());
  if (!passed) ++g_failures;
}

// Waits up to `timeout_ms` for a datagram on `socket` holding the line `wanted`; keeps every
// datagram read in `seen`.
bool wait_for_state(int socket, const std::string& wanted, int timeout_ms, std::string& seen) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return false;
    pollfd pfd{socket, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
    char buffer[4096];
    const ssize_t got = ::recv(socket, buffer, sizeof buffer - 1, 0);
    if (got <= 0) continue;
    const std::string datagram(buffer, static_cast<size_t>(got));
    for (const char c : datagram)
      seen += c == '\n' ? ' ' : c;
    seen += ';';
    std::istringstream lines(datagram);
    std::string line;
    while (std::getline(lines, line)) {
      if (line == wanted) return true;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CONTROL SERVER [SERVER-ARGS...]\n", argv[0]);
    return 2;
  }
  const std::string control = argv[1];

  // The notify socket: abstract, so nothing is left in the file system.
  const int notify = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string name = "synchmess-daemon-check-" + std::to_string(::getpid());
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (notify < 0 || ::bind(notify, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    std::perror("daemon_check: notify socket");
    return 1;
  }
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    std::perror("daemon_check: pipe");
    return 1;
  }
  struct stat st {};
  ::fstat(out[1], &st);
  const std::string journal_stream = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);

  const pid_t server = ::fork();
  if (server == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    ::setenv("NOTIFY_SOCKET", ("@" + name).c_str(), 1);
    ::setenv("JOURNAL_STREAM", journal_stream.c_str(), 1);
    ::execv(argv[2], argv + 2);
    std::perror("daemon_check: exec");
    ::_exit(127);
  }
  ::close(out[1]);

  std::string seen;
  const bool ready = wait_for_state(notify, "READY=1", 20000, seen);
  check(ready, "READY=1 within 20 s (notifications: " + seen + ")");
  if (ready) {
    const int fd = ::open(control.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    check(fd >= 0, "at READY=1 the control device " + control + " opens" +
                       (fd < 0 ? std::string(": ") + std::strerror(errno) : std::string()));
    if (fd >= 0) ::close(fd);
  }
  ::kill(server, SIGTERM);
  seen.clear();
  const bool stopping = wait_for_state(notify, "STOPPING=1", 10000, seen);
  check(stopping, "STOPPING=1 after SIGTERM (notifications: " + seen + ")");
  int status = 0;
  for (int i = 0; i < 200 && ::waitpid(server, &status, WNOHANG) == 0; ++i)
    ::usleep(50000);
  if (::waitpid(server, &status, WNOHANG) == 0) {
    ::kill(server, SIGKILL);
    ::waitpid(server, &status, 0);
    check(false, "the server exits within 10 s of SIGTERM");
  } else {
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the server exits 0 after SIGTERM");
  }

  // The log: what the server wrote to the "journal".
  std::string log;
  char buffer[4096];
  for (ssize_t got; (got = ::read(out[0], buffer, sizeof buffer)) > 0;)
    log.append(buffer, static_cast<size_t>(got));
  std::istringstream lines(log);
  std::string line;
  int records = 0;
  int bad = 0;
  bool serving = false;
  while (std::getline(lines, line)) {
    ++records;
    const bool prefixed = line.size() > 3 && line[0] == '<' && line[1] >= '3' && line[1] <= '7' &&
                          line[2] == '>' && line.find("synchmess-cuse [") == std::string::npos;
    if (!prefixed) {
      ++bad;
      std::printf("daemon_check:      not a journal record: %s\n", line.c_str());
    }
    serving = serving || line.rfind("<6>info: serving ", 0) == 0;
  }
  check(records > 0 && bad == 0,
        std::to_string(records) + " log records, each one line starting with its priority");
  check(serving, "the 'serving' record has priority 6 (info)");
  std::printf("daemon_check: %s\n", g_failures == 0 ? "all checks passed" : "FAILED");
  return g_failures == 0 ? 0 : 1;
}
