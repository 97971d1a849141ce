#include "server/options.hpp"

#include <getopt.h>

#include <charconv>
#include <cstring>
#include <string_view>

#include <fmt/core.h>

namespace synchmess::server {
namespace {

enum OptionId {
  kMaxMessageSize = 1000,
  kMaxStorageSize,
  kMaxGroups,
  kThreads,
  kUdevTimeout,
  kFuseMount,
};

bool parse_number(const char* text, uint64_t min, uint64_t max, uint64_t& out) {
  const std::string_view view(text);
  if (view.empty() || view.find_first_not_of("0123456789") != std::string_view::npos) return false;
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(view.data(), view.data() + view.size(), value);
  if (error != std::errc{} || end != view.data() + view.size()) return false;
  if (value < min || value > max) return false;
  out = value;
  return true;
}

}  // namespace

std::string usage_text(const char* program) {
  return fmt::format(
      "Usage: {} [OPTION]...\n"
      "Serve the synchmess devices /dev/synch/synchmess, /dev/synch/config and one\n"
      "/dev/synch/<group> per installed group, through CUSE. Runs in the foreground and\n"
      "logs to stderr; SIGINT or SIGTERM stops it cleanly. Needs root and /dev/cuse\n"
      "(modprobe cuse).\n"
      "\n"
      "  --max-message-size=BYTES  initial max_message_size (1..{}, default {})\n"
      "  --max-storage-size=BYTES  initial max_storage_size per group (1..{}, default {})\n"
      "  --max-groups=N            groups that may exist at once (1..100000, default 1024)\n"
      "  --threads=N               worker threads serving every CUSE device (1..256, default 4)\n"
      "  --udev-timeout=MS         how long an install waits for udev to apply the rules\n"
      "                            before it answers anyway (0..60000, default 5000)\n"
      "  --fuse-mount=DIR          serve the same devices as files of a FUSE mount at DIR\n"
      "                            (DIR/synchmess, DIR/config, DIR/<group>) instead of CUSE:\n"
      "                            for kernels without CUSE; needs /dev/fuse, not root\n"
      "  -v, --verbose             log every device operation\n"
      "  -h, --help                show this help and exit\n",
      program, SYNCH_MAX_MESSAGE_SIZE_LIMIT, SYNCH_DEFAULT_MAX_MESSAGE_SIZE,
      SYNCH_MAX_STORAGE_SIZE_LIMIT, SYNCH_DEFAULT_MAX_STORAGE_SIZE);
}

std::variant<Options, ShowHelp, UsageError> parse_options(int argc, char** argv) {
  static const option kLongOptions[] = {
      {"max-message-size", required_argument, nullptr, kMaxMessageSize},
      {"max-storage-size", required_argument, nullptr, kMaxStorageSize},
      {"max-groups", required_argument, nullptr, kMaxGroups},
      {"threads", required_argument, nullptr, kThreads},
      {"udev-timeout", required_argument, nullptr, kUdevTimeout},
      {"fuse-mount", required_argument, nullptr, kFuseMount},
      {"verbose", no_argument, nullptr, 'v'},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  Options options;
  opterr = 0;  // we print our own messages
  optind = 1;
  for (;;) {
    const int id = getopt_long(argc, argv, ":vh", kLongOptions, nullptr);
    if (id == -1) break;
    const char* name = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    uint64_t value = 0;
    switch (id) {
      case 'h':
        return ShowHelp{};
      case 'v':
        options.verbose = true;
        break;
      case kMaxMessageSize:
        if (!parse_number(optarg, 1, SYNCH_MAX_MESSAGE_SIZE_LIMIT, options.max_message_size)) {
          return UsageError{
              fmt::format("--max-message-size takes a byte count from 1 to {} "
                          "(CUSE moves at most 124 KiB per request), not '{}'",
                          SYNCH_MAX_MESSAGE_SIZE_LIMIT, optarg)};
        }
        break;
      case kMaxStorageSize:
        if (!parse_number(optarg, 1, SYNCH_MAX_STORAGE_SIZE_LIMIT, options.max_storage_size)) {
          return UsageError{
              fmt::format("--max-storage-size takes a byte count from 1 to {}, not '{}'",
                          SYNCH_MAX_STORAGE_SIZE_LIMIT, optarg)};
        }
        break;
      case kMaxGroups:
        if (!parse_number(optarg, 1, 100000, options.max_groups)) {
          return UsageError{
              fmt::format("--max-groups takes a number from 1 to 100000, not '{}'", optarg)};
        }
        break;
      case kThreads:
        if (!parse_number(optarg, 1, 256, value)) {
          return UsageError{
              fmt::format("--threads takes a number from 1 to 256, not '{}'", optarg)};
        }
        options.threads = static_cast<unsigned>(value);
        break;
      case kUdevTimeout:
        if (!parse_number(optarg, 0, 60000, value)) {
          return UsageError{
              fmt::format("--udev-timeout takes milliseconds from 0 to 60000, not '{}'", optarg)};
        }
        options.udev_timeout_ms = static_cast<unsigned>(value);
        break;
      case kFuseMount:
        if (*optarg == '\0') return UsageError{"--fuse-mount needs a directory"};
        options.fuse_mount = optarg;
        break;
      case ':':
        return UsageError{fmt::format("option '{}' needs a value", name)};
      default:
        return UsageError{fmt::format("unknown option '{}'", name)};
    }
  }
  if (optind < argc) {
    return UsageError{fmt::format("unexpected argument '{}'", argv[optind])};
  }
  return options;
}

}  // namespace synchmess::server
