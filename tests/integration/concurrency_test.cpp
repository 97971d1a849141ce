// Several threads and processes on one group: exactly-once delivery and per-writer FIFO order.
#include <sys/ioctl.h>
#include <unistd.h>

#include <map>
#include <sstream>

#include "support.hpp"

namespace synchmess::it {
namespace {

constexpr const char* kEnd = "END";

std::string tag(int writer, int seq) {
  return "w" + std::to_string(writer) + ":" + std::to_string(seq);
}

bool parse(const std::string& text, int& writer, int& seq) {
  return std::sscanf(text.c_str(), "w%d:%d", &writer, &seq) == 2;
}

// Reads until an END message (or `deadline`), with a receive timeout so that no read waits for
// long; returns what it read, END excluded.
std::vector<std::string> read_until_end(int fd, Clock::time_point deadline) {
  std::vector<std::string> got;
  while (Clock::now() < deadline) {
    const Received r = receive(fd, 256);
    if (r.rc < 0) {
      got.push_back("<error " + errno_name(r.err) + ">");
      break;
    }
    if (r.rc == 0) continue;  // the receive timeout passed
    if (r.data == kEnd) break;
    got.push_back(r.data);
  }
  return got;
}

// Checks exactly-once over every reader and per-writer order within each reader; returns the
// problems found ("" when none).
std::string check_delivery(const std::vector<std::vector<std::string>>& per_reader, int writers,
                           int per_writer) {
  std::ostringstream problems;
  std::map<std::pair<int, int>, int> seen;
  size_t total = 0;
  for (size_t r = 0; r < per_reader.size(); ++r) {
    std::vector<int> last(writers, -1);
    for (const std::string& text : per_reader[r]) {
      int w = -1;
      int s = -1;
      if (!parse(text, w, s) || w < 0 || w >= writers || s < 0 || s >= per_writer) {
        problems << "reader " << r << " got a foreign message '" << text << "'; ";
        continue;
      }
      if (s <= last[w]) {
        problems << "reader " << r << ": " << text << " after w" << w << ":" << last[w] << "; ";
      }
      last[w] = s;
      ++seen[{w, s}];
      ++total;
    }
  }
  for (int w = 0; w < writers; ++w) {
    for (int s = 0; s < per_writer; ++s) {
      const int count = seen.count({w, s}) != 0 ? seen[{w, s}] : 0;
      if (count != 1) problems << tag(w, s) << " delivered " << count << " times; ";
    }
  }
  if (total != static_cast<size_t>(writers) * per_writer) {
    problems << total << " messages delivered instead of " << writers * per_writer << "; ";
  }
  std::string text = problems.str();
  if (text.size() > 2000) text = text.substr(0, 2000) + "...";
  return text;
}

std::string join_texts(const std::vector<std::string>& texts) {
  std::string out;
  for (const auto& t : texts)
    out += t + "\n";
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    out.push_back(line);
  return out;
}

}  // namespace

TEST_SUITE("concurrency") {
  TEST_CASE("two processes on one group (fork): messages both ways and a shared barrier") {
    TestGroup group("twoproc");
    Fd fd = group.open();
    uint32_t timeout = 1000;
    REQUIRE(::ioctl(fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &timeout) == 0);
    const int n = 100;
    const std::string path = group.path();
    Child child([path, n] {
      Fd own = open_fd(path, O_RDWR);
      if (!own) return "open: " + errno_name(errno);
      uint32_t child_timeout = 1000;
      if (::ioctl(own.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &child_timeout) != 0)
        return std::string("timeout");
      for (int i = 0; i < n; ++i) {
        if (!send(own.get(), "c" + std::to_string(i)).ok()) return "write c" + std::to_string(i);
      }
      // Wait for the parent to take them all: it wakes us when it has.
      const Sys slept = sys([&] { return ::ioctl(own.get(), SYNCH_IOC_SLEEP_ON_BARRIER); });
      if (!slept.ok()) return "sleep: " + errno_name(slept.err);
      std::string problems;
      const auto deadline = Clock::now() + 60s;
      for (int i = 0; i < n && Clock::now() < deadline;) {
        const Received r = receive(own.get(), 64);
        if (r.rc == 0) continue;
        if (r.data != "p" + std::to_string(i))
          problems += "got '" + r.data + "' for p" + std::to_string(i) + "; ";
        ++i;
      }
      return problems;
    });
    std::string problems;
    const auto deadline = Clock::now() + patience();
    for (int i = 0; i < n && Clock::now() < deadline;) {
      const Received r = receive(fd.get(), 64);
      if (r.rc == 0) continue;
      if (r.data != "c" + std::to_string(i)) problems += "got '" + r.data + "'; ";
      ++i;
    }
    CHECK_MESSAGE(problems.empty(), problems);
    REQUIRE(wait_for_stats(fd.get(), [](const auto& s) { return s.sleepers == 1; }));
    CHECK(::ioctl(fd.get(), SYNCH_IOC_AWAKE_BARRIER) == 1);
    for (int i = 0; i < n; ++i)
      REQUIRE(send(fd.get(), "p" + std::to_string(i)).ok());
    CHECK(child.finish(patience() * 2));
    CHECK_MESSAGE(child.report().empty(), child.report());
    CHECK(child.exited_normally());
    CHECK(stats_of(fd.get()).queued_messages == 0);
  }

  TEST_CASE("concurrent writer and reader threads: exactly once, per-writer FIFO") {
    TestGroup group("threads");
    constexpr int kWriters = 4;
    constexpr int kReaders = 4;
    const int per_writer = 250 * load_scale();
    std::vector<Fd> reader_fds;
    for (int r = 0; r < kReaders; ++r) {
      reader_fds.push_back(group.open());
      uint32_t timeout = 200;
      REQUIRE(::ioctl(reader_fds.back().get(), SYNCH_IOC_SET_RECV_TIMEOUT, &timeout) == 0);
    }
    const auto deadline = Clock::now() + patience() * 4;
    std::vector<std::vector<std::string>> got(kReaders);
    std::vector<std::unique_ptr<BoundedThread>> readers;
    for (int r = 0; r < kReaders; ++r) {
      readers.push_back(std::make_unique<BoundedThread>("reader " + std::to_string(r), [&, r] {
        got[r] = read_until_end(reader_fds[r].get(), deadline);
      }));
    }
    std::atomic<int> write_errors{0};
    std::vector<std::unique_ptr<BoundedThread>> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.push_back(std::make_unique<BoundedThread>("writer " + std::to_string(w), [&, w] {
        Fd fd = open_fd(group.path(), O_WRONLY);  // each writer its own open file
        if (!fd) {
          write_errors += per_writer;
          return;
        }
        for (int s = 0; s < per_writer; ++s) {
          if (!send(fd.get(), tag(w, s)).ok()) ++write_errors;
        }
      }));
    }
    for (auto& writer : writers)
      writer->join(patience() * 4);
    CHECK(write_errors.load() == 0);
    Fd end_writer = group.open();
    for (int r = 0; r < kReaders; ++r)
      REQUIRE(send(end_writer.get(), kEnd).ok());
    for (auto& reader : readers)
      reader->join(patience() * 5);
    const std::string problems = check_delivery(got, kWriters, per_writer);
    CHECK_MESSAGE(problems.empty(), problems);
    CHECK(stats_of(end_writer.get()).queued_messages == 0);
  }

  TEST_CASE("concurrent writer and reader processes: exactly once, per-writer FIFO") {
    TestGroup group("procs");
    constexpr int kWriters = 3;
    constexpr int kReaders = 3;
    const int per_writer = 150 * load_scale();
    const std::string path = group.path();
    std::vector<std::unique_ptr<Child>> readers;
    for (int r = 0; r < kReaders; ++r) {
      readers.push_back(std::make_unique<Child>([path] {
        Fd fd = open_fd(path, O_RDONLY);
        if (!fd) return "<error open " + errno_name(errno) + ">";
        uint32_t timeout = 200;
        if (::ioctl(fd.get(), SYNCH_IOC_SET_RECV_TIMEOUT, &timeout) != 0)
          return std::string("<error timeout>");
        return join_texts(read_until_end(fd.get(), Clock::now() + 120s));
      }));
    }
    std::vector<std::unique_ptr<Child>> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.push_back(std::make_unique<Child>([path, w, per_writer] {
        Fd fd = open_fd(path, O_WRONLY);
        if (!fd) return "open: " + errno_name(errno);
        std::string problems;
        for (int s = 0; s < per_writer; ++s) {
          const Sys sent = send(fd.get(), tag(w, s));
          if (!sent.ok()) problems += tag(w, s) + ": " + errno_name(sent.err) + "; ";
        }
        return problems;
      }));
    }
    for (auto& writer : writers) {
      CHECK(writer->finish(patience() * 4));
      CHECK_MESSAGE(writer->report().empty(), writer->report());
    }
    Fd end_writer = group.open();
    for (int r = 0; r < kReaders; ++r)
      REQUIRE(send(end_writer.get(), kEnd).ok());
    std::vector<std::vector<std::string>> got;
    for (auto& reader : readers) {
      CHECK(reader->finish(patience() * 5));
      CHECK(reader->exited_normally());
      got.push_back(split_lines(reader->report()));
    }
    const std::string problems = check_delivery(got, kWriters, per_writer);
    CHECK_MESSAGE(problems.empty(), problems);
    CHECK(stats_of(end_writer.get()).queued_messages == 0);
  }
}

}  // namespace synchmess::it
