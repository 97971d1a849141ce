// synchctl: synchmess from the shell (README, "synchctl"). Every command is a few calls of the
// client library (include/synchmess/client.h), so a descriptor opened for reading and writing
// takes the fast path when the server offers it.
//
// Exit status: 0 done; 1 the operation failed (the message names the errno and what to check);
// 2 a usage error; 3 receive: no message (the group was empty, or the timeout passed).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <synchmess/client.h>

namespace {

constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kNoMessage = 3;

struct Command {
  const char* name;
  const char* synopsis;  // after "synchctl NAME"
  const char* help;      // what it does, its options
  int (*run)(std::vector<std::string>& args);
};

int usage_error(const char* command, const std::string& what) {
  const std::string prefix = command != nullptr ? std::string(command) + ": " : "";
  const std::string help = command != nullptr ? std::string(command) + " --help" : "--help";
  std::fprintf(stderr, "synchctl: %s%s\nTry 'synchctl %s'.\n", prefix.c_str(), what.c_str(),
               help.c_str());
  return kUsage;
}

// What a user can do about an errno from the library, beside its name.
std::string hint_for(int error) {
  switch (error) {
    case ENOENT:
      return std::string(
                 " (no such group, or no server: is synchmess-cuse running? devices are "
                 "looked for in ") +
             synch_dir() + "; --dir or SYNCHMESS_DIR to look elsewhere)";
    case EACCES:
      return " (the device's mode does not let this user in: see udev/50-synchmess.rules)";
    case EPERM:
      return " (only root, or the user who installed the group, may do that)";
    case EMSGSIZE:
      return " (larger than max_message_size: see 'synchctl params')";
    case ENOSPC:
      return " (the group is full (max_storage_size), or the server's limits are reached: "
             "--timeout waits for room)";
    case EDQUOT:
      return " (this user's quota of the server's memory or groups is used up)";
    case EIDRM:
      return " (the group was removed meanwhile)";
    case ENOTCONN:
    case ENODEV:
      return " (the server is gone, or the group was removed)";
    default:
      return "";
  }
}

int failed(const std::string& what) {
  const int error = errno;
  std::fprintf(stderr, "synchctl: %s: %s (%s)%s\n", what.c_str(), std::strerror(error),
               strerrorname_np(error) ? strerrorname_np(error) : "?", hint_for(error).c_str());
  return kFailed;
}

// A command's arguments: flags ("--name"), options with a value ("--name VALUE" or
// "--name=VALUE"; "-n N" is --count), and operands, in their order ("--" ends the options).
class Arguments {
 public:
  // Parses `args` for a command taking `flags` and `valued` options; an error message for
  // anything else.
  std::optional<std::string> parse(const std::vector<std::string>& args,
                                   const std::vector<std::string>& flags,
                                   const std::vector<std::string>& valued) {
    const auto listed = [](const std::vector<std::string>& names, const std::string& name) {
      return std::find(names.begin(), names.end(), name) != names.end();
    };
    for (size_t i = 0; i < args.size(); ++i) {
      std::string arg = args[i];
      if (arg == "--") {
        operands.insert(operands.end(), args.begin() + static_cast<long>(i) + 1, args.end());
        break;
      }
      if (arg == "-n") arg = "--count";
      if (arg.size() <= 2 || arg.rfind("--", 0) != 0) {
        operands.push_back(arg);
        continue;
      }
      const size_t equals = arg.find('=');
      const std::string name = arg.substr(2, equals == std::string::npos ? arg.npos : equals - 2);
      if (listed(flags, name)) {
        if (equals != std::string::npos) return "--" + name + " takes no value";
        options_[name] = "";
      } else if (listed(valued, name)) {
        if (equals != std::string::npos) {
          options_[name] = arg.substr(equals + 1);
        } else if (i + 1 < args.size()) {
          options_[name] = args[++i];
        } else {
          return "--" + name + " needs a value";
        }
      } else {
        return "unknown option " + args[i];
      }
    }
    return std::nullopt;
  }
  bool has(const std::string& name) const { return options_.count(name) != 0; }
  std::optional<std::string> value(const std::string& name) const {
    const auto it = options_.find(name);
    return it == options_.end() ? std::nullopt : std::optional<std::string>(it->second);
  }
  std::vector<std::string> operands;

 private:
  std::map<std::string, std::string> options_;
};

bool parse_u64(const std::string& text, uint64_t& out) {
  if (text.empty()) return false;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out);
  return error == std::errc() && end == text.data() + text.size();
}

// Milliseconds for --timeout: a number, or "forever".
bool parse_timeout(const std::string& text, uint32_t forever, uint32_t& out) {
  if (text == "forever") {
    out = forever;
    return true;
  }
  uint64_t value = 0;
  if (!parse_u64(text, value) || value >= forever) return false;
  out = static_cast<uint32_t>(value);
  return true;
}

// Opens a group for `purpose`: reading and writing (the fast path) when the device allows it,
// else the one direction needed.
int open_group(const std::string& name, int direction) {
  int fd = synch_open_group(name.c_str(), O_RDWR);
  if (fd < 0 && errno == EACCES && direction != O_RDWR)
    fd = synch_open_group(name.c_str(), direction);
  return fd;
}

// Closes a group's descriptor without losing the errno of what failed before.
void close_keeping_errno(int fd) {
  const int error = errno;
  synch_close_group(fd);
  errno = error;
}

// Named counters, as "key=value" lines or (json) one JSON object.
void print_fields(const std::vector<std::pair<const char*, uint64_t>>& fields, bool json) {
  if (json) {
    std::printf("{");
    bool first = true;
    for (const auto& [key, value] : fields) {
      std::printf("%s\"%s\": %llu", first ? "" : ", ", key, static_cast<unsigned long long>(value));
      first = false;
    }
    std::printf("}\n");
  } else {
    for (const auto& [key, value] : fields)
      std::printf("%s=%llu\n", key, static_cast<unsigned long long>(value));
  }
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escape[8];
      std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned char>(c));
      out += escape;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// ---- the commands ----

int cmd_install(std::vector<std::string>& args) {
  Arguments parsed;
  if (auto error = parsed.parse(args, {}, {})) return usage_error("install", *error);
  const std::vector<std::string>& names = parsed.operands;
  if (names.empty()) return usage_error("install", "which group? (synchctl install NAME...)");
  for (const auto& name : names) {
    char path[SYNCH_PATH_MAX];
    int created = 0;
    if (synch_install_group(name.c_str(), path, sizeof path, &created) != 0) {
      return failed("install " + name);
    }
    std::printf("%s%s\n", path, created ? "" : " (already installed)");
  }
  return 0;
}

int cmd_remove(std::vector<std::string>& args) {
  Arguments parsed;
  if (auto error = parsed.parse(args, {}, {})) return usage_error("remove", *error);
  const std::vector<std::string>& names = parsed.operands;
  if (names.empty()) return usage_error("remove", "which group? (synchctl remove NAME...)");
  for (const auto& name : names) {
    if (synch_remove_group(name.c_str()) != 0) return failed("remove " + name);
  }
  return 0;
}

// The control device's listing: "NAME key=value ..." per group.
struct Listed {
  std::string name;
  std::vector<std::pair<std::string, std::string>> fields;
};

int read_listing(std::vector<Listed>& groups) {
  char path[SYNCH_PATH_MAX];
  if (synch_device_path("synchmess", path, sizeof path) < 0) return failed("the control device");
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failed(std::string("open ") + path);
  std::string text;
  char buffer[65536];
  for (ssize_t got; (got = ::read(fd, buffer, sizeof buffer)) != 0;) {
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      errno = error;
      return failed(std::string("read ") + path);
    }
    text.append(buffer, static_cast<size_t>(got));
  }
  ::close(fd);
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty()) continue;
    Listed group;
    size_t word = 0;
    bool first = true;
    while (word <= line.size()) {
      size_t space = line.find(' ', word);
      if (space == std::string::npos) space = line.size();
      const std::string token = line.substr(word, space - word);
      word = space + 1;
      if (token.empty()) continue;
      if (first) {
        group.name = token;
        first = false;
      } else if (const size_t equals = token.find('='); equals != std::string::npos) {
        group.fields.emplace_back(token.substr(0, equals), token.substr(equals + 1));
      }
    }
    groups.push_back(std::move(group));
  }
  return 0;
}

int cmd_list(std::vector<std::string>& args) {
  Arguments parsed;
  if (auto error = parsed.parse(args, {"json", "names"}, {})) return usage_error("list", *error);
  const std::vector<std::string>& operands = parsed.operands;
  if (!operands.empty()) return usage_error("list", "it takes no operands");
  std::vector<Listed> groups;
  if (const int status = read_listing(groups); status != 0) return status;
  if (parsed.has("names")) {
    for (const auto& group : groups)
      std::printf("%s\n", group.name.c_str());
    return 0;
  }
  if (parsed.has("json")) {
    std::printf("[");
    for (size_t i = 0; i < groups.size(); ++i) {
      std::printf("%s\n  {\"name\": %s", i ? "," : "", json_string(groups[i].name).c_str());
      for (const auto& [key, value] : groups[i].fields) {
        uint64_t number = 0;
        std::printf(", %s: %s", json_string(key).c_str(),
                    parse_u64(value, number) ? value.c_str() : json_string(value).c_str());
      }
      std::printf("}");
    }
    std::printf("%s]\n", groups.empty() ? "" : "\n");
    return 0;
  }
  // The table: the listing's columns in its order, short headings.
  static const std::map<std::string, std::string> kHeadings = {{"owner", "OWNER"},
                                                               {"queued_messages", "MESSAGES"},
                                                               {"queued_bytes", "BYTES"},
                                                               {"delayed_messages", "DELAYED"},
                                                               {"delayed_bytes", "DELAYED_BYTES"},
                                                               {"sleepers", "SLEEPERS"},
                                                               {"readers_waiting", "READERS"},
                                                               {"writers_waiting", "WRITERS"}};
  std::vector<std::string> keys;
  for (const auto& group : groups)
    for (const auto& [key, value] : group.fields)
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
  if (groups.empty()) {
    std::printf("no groups\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> heading = {"NAME"};
  for (const auto& key : keys) {
    const auto it = kHeadings.find(key);
    heading.push_back(it != kHeadings.end() ? it->second : key);
  }
  rows.push_back(heading);
  for (const auto& group : groups) {
    std::vector<std::string> row = {group.name};
    for (const auto& key : keys) {
      std::string cell = "-";
      for (const auto& [k, v] : group.fields)
        if (k == key) cell = v;
      row.push_back(cell);
    }
    rows.push_back(row);
  }
  std::vector<size_t> widths(heading.size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c)
      widths[c] = std::max(widths[c], row[c].size());
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      const std::string& cell = row[c];
      if (c == 0) {
        line += cell + std::string(widths[c] - cell.size(), ' ');
      } else {
        line += "  " + std::string(widths[c] - cell.size(), ' ') + cell;  // numbers: right
      }
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

bool read_all(int fd, std::string& out) {
  char buffer[65536];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got == 0) return true;
    if (got < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    out.append(buffer, static_cast<size_t>(got));
  }
}

int cmd_send(std::vector<std::string>& args) {
  Arguments parsed;
  if (auto error = parsed.parse(args, {"lines"}, {"file", "timeout"})) {
    return usage_error("send", *error);
  }
  const std::vector<std::string>& operands = parsed.operands;
  if (operands.empty()) return usage_error("send", "which group? (synchctl send NAME [TEXT])");
  if (operands.size() > 2) return usage_error("send", "one TEXT at most (quote it)");
  if (operands.size() == 2 && parsed.has("file")) {
    return usage_error("send", "TEXT or --file, not both");
  }
  uint32_t timeout = 0;
  if (const auto text = parsed.value("timeout");
      text && !parse_timeout(*text, SYNCH_SEND_TIMEOUT_FOREVER, timeout)) {
    return usage_error("send", "--timeout takes milliseconds or 'forever', not '" + *text + "'");
  }
  std::string input;
  if (operands.size() == 2) {
    input = operands[1];
  } else {
    const std::string file = parsed.value("file").value_or("-");
    const int fd = file == "-" ? STDIN_FILENO : ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return failed("open " + file);
    if (!read_all(fd, input)) return failed("read " + file);
    if (fd != STDIN_FILENO) ::close(fd);
  }
  std::vector<std::string_view> messages;
  if (parsed.has("lines")) {
    std::string_view rest(input);
    while (!rest.empty()) {
      const size_t end = rest.find('\n');
      messages.push_back(rest.substr(0, end));
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    }
  } else {
    messages.push_back(input);
  }
  const int fd = open_group(operands[0], O_WRONLY);
  if (fd < 0) return failed("open group " + operands[0]);
  if (timeout != 0 && synch_set_send_timeout(fd, timeout) != 0) {
    return failed("set the send timeout of " + operands[0]);
  }
  size_t sent = 0;
  for (const auto message : messages) {
    if (synch_send(fd, message.data(), message.size()) < 0) {
      close_keeping_errno(fd);
      return failed("send to " + operands[0] + " (message " + std::to_string(sent + 1) + " of " +
                    std::to_string(messages.size()) + ", " + std::to_string(message.size()) +
                    " bytes; the ones before it were sent)");
    }
    ++sent;
  }
  synch_close_group(fd);
  return 0;
}

volatile sig_atomic_t g_interrupted = 0;
void on_interrupt(int) {
  g_interrupted = 1;
}

int cmd_receive(std::vector<std::string>& args) {
  Arguments parsed;
  if (auto error = parsed.parse(args, {"follow", "raw"}, {"count", "timeout"})) {
    return usage_error("receive", *error);
  }
  const std::vector<std::string>& operands = parsed.operands;
  if (operands.size() != 1) return usage_error("receive", "one group (synchctl receive NAME)");
  uint64_t count = 1;
  if (const auto text = parsed.value("count"); text && (!parse_u64(*text, count) || count == 0)) {
    return usage_error("receive", "-n/--count takes a number from 1, not '" + *text + "'");
  }
  const bool follow = parsed.has("follow");
  if (follow && parsed.has("count")) return usage_error("receive", "--follow or --count, not both");
  uint32_t timeout = follow ? SYNCH_RECV_TIMEOUT_FOREVER : 0;
  if (const auto text = parsed.value("timeout");
      text && !parse_timeout(*text, SYNCH_RECV_TIMEOUT_FOREVER, timeout)) {
    return usage_error("receive", "--timeout takes milliseconds or 'forever', not '" + *text + "'");
  }
  const int fd = open_group(operands[0], O_RDONLY);
  if (fd < 0) return failed("open group " + operands[0]);
  // SIGINT/SIGTERM end the receive: a clean exit, status 0. A signal can come when no wait is
  // under way (while a message is written out, say), so a wait is never longer than a slice:
  // the flag is looked at between slices, and the timeout is counted here across them.
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  constexpr uint32_t kSliceMs = 200;
  using Clock = std::chrono::steady_clock;
  auto waiting_since = Clock::now();
  std::vector<char> buffer(SYNCH_MAX_MESSAGE_SIZE_LIMIT);
  uint64_t received = 0;
  while (!g_interrupted && (follow || received < count)) {
    if (timeout != 0) {
      uint32_t slice = kSliceMs;
      if (timeout != SYNCH_RECV_TIMEOUT_FOREVER) {
        const auto waited =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - waiting_since)
                .count();
        if (waited >= timeout) break;  // the timeout passed without a message
        slice = std::min<uint32_t>(kSliceMs, timeout - static_cast<uint32_t>(waited));
      }
      if (synch_set_recv_timeout(fd, slice) != 0) {
        close_keeping_errno(fd);
        return failed("set the receive timeout of " + operands[0]);
      }
    }
    const ssize_t got = synch_receive(fd, buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      close_keeping_errno(fd);
      return failed("receive from " + operands[0]);
    }
    if (got == 0) {
      if (timeout == 0) break;  // empty, and no wait asked for
      continue;                 // a slice passed
    }
    std::fwrite(buffer.data(), 1, static_cast<size_t>(got), stdout);
    if (!parsed.has("raw")) std::fputc('\n', stdout);
    std::fflush(stdout);
    ++received;
    waiting_since = Clock::now();
  }
  synch_close_group(fd);
  if (received == 0 && !g_interrupted) {
    std::fprintf(stderr, "synchctl: receive: no message in %s%s\n", operands[0].c_str(),
                 timeout != 0 ? " within the timeout" : " (the group is empty; --timeout waits)");
    return kNoMessage;
  }
  return 0;
}

// Commands of one group operand (and `flags`) that open the group and make their calls in
// `body`, which gets the descriptor, the group's name and the parsed flags.
int with_group(const char* command, std::vector<std::string>& args,
               const std::vector<std::string>& flags,
               const std::function<int(int fd, const std::string& name, const Arguments&)>& body) {
  Arguments parsed;
  if (auto error = parsed.parse(args, flags, {})) return usage_error(command, *error);
  const std::vector<std::string>& operands = parsed.operands;
  if (operands.size() != 1)
    return usage_error(command, "one group (synchctl " + std::string(command) + " NAME)");
  const int fd = open_group(operands[0], O_RDONLY);
  if (fd < 0) return failed("open group " + operands[0]);
  const int status = body(fd, operands[0], parsed);
  close_keeping_errno(fd);
  return status;
}

// A call that returns a count (-1 with errno on failure): the count is printed.
int print_count(const char* command, std::vector<std::string>& args, int (*call)(int fd),
                const char* what) {
  return with_group(command, args, {}, [&](int fd, const std::string& name, const Arguments&) {
    const int count = call(fd);
    if (count < 0) return failed(what + name);
    std::printf("%d\n", count);
    return 0;
  });
}

int cmd_sleep(std::vector<std::string>& args) {
  return with_group("sleep", args, {}, [](int fd, const std::string& name, const Arguments&) {
    if (synch_sleep_on_barrier(fd) != 0) return failed("sleep on the barrier of " + name);
    return 0;
  });
}

int cmd_awake(std::vector<std::string>& args) {
  return print_count("awake", args, synch_awake_barrier, "awake the barrier of ");
}

int cmd_revoke(std::vector<std::string>& args) {
  return print_count("revoke", args, synch_revoke_delayed_messages,
                     "revoke the delayed messages of ");
}

int cmd_flush(std::vector<std::string>& args) {
  return print_count("flush", args, synch_flush, "flush ");
}

int cmd_delay(std::vector<std::string>& args) {
  Arguments parsed;
  if (auto error = parsed.parse(args, {}, {})) return usage_error("delay", *error);
  const std::vector<std::string>& operands = parsed.operands;
  if (operands.empty() || operands.size() > 2) {
    return usage_error("delay", "synchctl delay NAME [MILLISECONDS]");
  }
  uint64_t ms = 0;
  if (operands.size() == 2 && (!parse_u64(operands[1], ms) || ms > UINT32_MAX)) {
    return usage_error("delay", "milliseconds from 0 to 4294967295, not '" + operands[1] + "'");
  }
  const int fd = open_group(operands[0], O_RDONLY);
  if (fd < 0) return failed("open group " + operands[0]);
  int status = 0;
  if (operands.size() == 2) {
    if (synch_set_send_delay(fd, static_cast<uint32_t>(ms)) != 0) {
      status = failed("set the send delay of " + operands[0]);
    }
  } else {
    uint32_t current = 0;
    if (synch_get_send_delay(fd, &current) != 0) {
      status = failed("get the send delay of " + operands[0]);
    } else {
      std::printf("%u\n", current);
    }
  }
  close_keeping_errno(fd);
  return status;
}

int cmd_stats(std::vector<std::string>& args) {
  return with_group("stats", args, {"json"},
                    [](int fd, const std::string& name, const Arguments& parsed) {
                      synch_group_stats stats{};
                      if (synch_get_stats(fd, &stats) != 0) return failed("stats of " + name);
                      print_fields({{"queued_messages", stats.queued_messages},
                                    {"queued_bytes", stats.queued_bytes},
                                    {"delayed_messages", stats.delayed_messages},
                                    {"delayed_bytes", stats.delayed_bytes},
                                    {"sleepers", stats.sleepers},
                                    {"readers_waiting", stats.readers_waiting}},
                                   parsed.has("json"));
                      return 0;
                    });
}

int cmd_params(std::vector<std::string>& args) {
  Arguments parsed;
  if (auto error = parsed.parse(args, {"json"}, {"max-message-size", "max-storage-size"})) {
    return usage_error("params", *error);
  }
  const std::vector<std::string>& operands = parsed.operands;
  if (!operands.empty()) return usage_error("params", "it takes no operands");
  synch_params wanted{};
  bool set = false;
  for (const auto& [option, field] : {std::pair{"max-message-size", &wanted.max_message_size},
                                      std::pair{"max-storage-size", &wanted.max_storage_size}}) {
    if (const auto text = parsed.value(option)) {
      if (!parse_u64(*text, *field) || *field == 0) {
        return usage_error("params", std::string("--") + option +
                                         " takes a byte count from 1, not '" + *text + "'");
      }
      set = true;
    }
  }
  if (set && synch_set_params(&wanted) != 0) return failed("set the parameters");
  synch_params now{};
  if (synch_get_params(&now) != 0) return failed("read the parameters");
  print_fields(
      {{"max_message_size", now.max_message_size}, {"max_storage_size", now.max_storage_size}},
      parsed.has("json"));
  return 0;
}

const Command kCommands[] = {
    {"install", "NAME...",
     "Installs each group (nothing happens to one already installed) and "
     "prints its device's path.",
     cmd_install},
    {"remove", "NAME...",
     "Removes each group: its messages are gone, its sleepers and waiting "
     "readers return EIDRM. Root or the user who installed it.",
     cmd_remove},
    {"list", "[--json | --names]",
     "The groups with their counters (owner, queued and delayed "
     "messages and bytes, sleepers, waiting readers and writers): a table, --json an array of "
     "objects, --names the names only.",
     cmd_list},
    {"send", "NAME [TEXT] [--file F] [--lines] [--timeout MS|forever]",
     "Sends TEXT as one message, or else the contents of --file F (or of standard input: '-', "
     "the default) as one message; --lines sends one message per line, without its newline. "
     "--timeout: how long a message that does not fit waits for room (default: fail with "
     "ENOSPC at once). With a send delay set on the group, note that the messages become "
     "available when synchctl exits: closing the group's last descriptor flushes them (SPEC).",
     cmd_send},
    {"receive", "NAME [-n N | --follow] [--timeout MS|forever] [--raw]",
     "Takes one message (-n N: up to N) and writes it with a newline (--raw: without). Without "
     "--timeout an empty group answers at once: exit status 3. --follow: every message, "
     "waiting for each (or up to --timeout between them), until SIGINT/SIGTERM.",
     cmd_receive},
    {"sleep", "NAME",
     "Sleeps on the group's barrier until another thread awakes it (exit 0), "
     "or the group is removed (EIDRM).",
     cmd_sleep},
    {"awake", "NAME", "Wakes every sleeper of the group's barrier and prints how many.", cmd_awake},
    {"delay", "NAME [MILLISECONDS]", "Prints the group's send delay, or sets it (0: none).",
     cmd_delay},
    {"revoke", "NAME",
     "Discards the group's delayed messages that are not due yet; prints how "
     "many.",
     cmd_revoke},
    {"flush", "NAME",
     "Makes the group's delayed messages available now, in write order; "
     "prints how many.",
     cmd_flush},
    {"stats", "NAME [--json]",
     "The group's counters: queued and delayed messages and bytes, "
     "barrier sleepers, waiting readers.",
     cmd_stats},
    {"params", "[--max-message-size N] [--max-storage-size N] [--json]",
     "Prints max_message_size and max_storage_size, after setting those given (root only; they "
     "apply to every group, at once).",
     cmd_params},
};

const Command* find_command(std::string_view name) {
  for (const auto& command : kCommands)
    if (name == command.name) return &command;
  return nullptr;
}

void print_command_help(const Command& command, FILE* out) {
  std::fprintf(out, "usage: synchctl [--dir DIR] %s %s\n\n", command.name, command.synopsis);
  // Wrapped at 78 columns.
  std::string_view text = command.help;
  while (!text.empty()) {
    size_t cut = text.size() <= 78 ? text.size() : text.rfind(' ', 78);
    if (cut == std::string_view::npos || cut == 0) cut = std::min<size_t>(78, text.size());
    std::fprintf(out, "%.*s\n", static_cast<int>(cut), text.data());
    text.remove_prefix(cut);
    while (!text.empty() && text.front() == ' ')
      text.remove_prefix(1);
  }
}

void print_help(FILE* out) {
  std::fprintf(out,
               "usage: synchctl [--dir DIR] COMMAND [ARGUMENTS]\n\n"
               "synchmess groups from the shell. The devices are looked for in DIR, else in "
               "$SYNCHMESS_DIR,\nelse in /dev/synch.\n\ncommands:\n");
  for (const auto& command : kCommands)
    std::fprintf(out, "  %-8s %s\n", command.name, command.synopsis);
  std::fprintf(out,
               "\n'synchctl COMMAND --help' (or 'synchctl help COMMAND') tells more.\n"
               "Exit status: 0 done, 1 the operation failed, 2 a usage error, 3 receive found "
               "no message.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // Global options, before the command.
  while (!args.empty() && args[0].rfind("--", 0) == 0) {
    if (args[0] == "--help") {
      print_help(stdout);
      return 0;
    }
    if (args[0] == "--version") {
      std::printf("synchctl %s\n", SYNCHMESS_VERSION);
      return 0;
    }
    std::string dir;
    if (args[0] == "--dir" && args.size() >= 2) {
      dir = args[1];
      args.erase(args.begin(), args.begin() + 2);
    } else if (args[0].rfind("--dir=", 0) == 0) {
      dir = args[0].substr(6);
      args.erase(args.begin());
    } else {
      return usage_error(nullptr, "unknown option " + args[0]);
    }
    if (dir.empty()) return usage_error(nullptr, "--dir needs a directory");
    ::setenv(SYNCH_DIR_ENV, dir.c_str(), 1);
  }
  if (args.empty()) {
    print_help(stderr);
    return kUsage;
  }
  std::string name = args[0];
  args.erase(args.begin());
  if (name == "help") {
    if (args.empty()) {
      print_help(stdout);
      return 0;
    }
    name = args[0];
    args = {"--help"};
  }
  const Command* command = find_command(name);
  if (command == nullptr) return usage_error(nullptr, "unknown command '" + name + "'");
  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    print_command_help(*command, stdout);
    return 0;
  }
  return command->run(args);
}
