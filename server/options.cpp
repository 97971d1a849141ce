#include "server/options.hpp"

#include <getopt.h>

#include <charconv>
#include <cstring>
#include <string_view>

#include <fmt/core.h>
#include <fuse_lowlevel.h>

#include "region/layout.hpp"

namespace synchmess::server {
namespace {

enum OptionId {
  kMaxMessageSize = 1000,
  kMaxStorageSize,
  kMaxGroups,
  kThreads,
  kUdevTimeout,
  kFuseMount,
  kMaxMemory,
  kMaxUserMemory,
  kMaxUserGroups,
  kAllowNonempty,
  kRegionSize,
  kNoFastPath,
  kVersion,
};

constexpr uint64_t kMaxMemoryLimit = uint64_t{1} << 40;  // 1 TiB: a typo guard

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

bool parse_size(const char* text, uint64_t min, uint64_t max, uint64_t& out) {
  std::string_view view(text);
  unsigned shift = 0;
  if (!view.empty()) {
    switch (view.back()) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      default:
        break;
    }
  }
  if (shift != 0) view.remove_suffix(1);
  const std::string digits(view);
  uint64_t value = 0;
  if (!parse_number(digits.c_str(), 0, UINT64_MAX >> shift, value)) return false;
  value <<= shift;
  if (value < min || value > max) return false;
  out = value;
  return true;
}

std::string version_text() {
  return fmt::format("synchmess-cuse {} (libfuse {})\n", SYNCHMESS_VERSION, fuse_pkgversion());
}

std::string usage_text(const char* program) {
  return fmt::format(
      "Usage: {} [OPTION]...\n"
      "Serve the synchmess devices /dev/synch/synchmess, /dev/synch/config and one\n"
      "/dev/synch/<group> per installed group, through CUSE. Runs in the foreground and\n"
      "logs to stderr; SIGINT, SIGTERM or SIGHUP stops it cleanly. Needs root and /dev/cuse\n"
      "(modprobe cuse).\n"
      "\n"
      "  --max-message-size=BYTES  initial max_message_size (1..{}, default {})\n"
      "  --max-storage-size=BYTES  initial max_storage_size per group (1..{}, default {})\n"
      "  --max-groups=N            groups that may exist at once (1..100000, default 1024)\n"
      "  --max-memory=BYTES        global bound on the memory of stored messages, their\n"
      "                            overhead counted (default 256M); past it sends fail ENOSPC\n"
      "  --max-user-memory=BYTES   each non-root uid's share of it, charged to the sender\n"
      "                            (default 64M); past it sends fail EDQUOT\n"
      "  --max-user-groups=N       groups each non-root uid may install (1..100000, default\n"
      "                            64); past it installs fail EDQUOT\n"
      "                            (BYTES: a number with an optional K, M or G suffix)\n"
      "  --region-size=BYTES       each group's shared ring for the client library's fast\n"
      "                            path: a power of two from 64K to 16M (default 256K);\n"
      "                            messages up to a quarter of it take the fast path\n"
      "  --no-fast-path            the client library uses the devices only (no shared\n"
      "                            memory handed out; SYNCH_IOC_FASTPATH_OFFER: EOPNOTSUPP)\n"
      "  --threads=N               worker threads serving every CUSE device (1..256, default 4)\n"
      "  --udev-timeout=MS         how long an install waits for udev to apply the rules\n"
      "                            before it answers anyway (0..60000, default 5000)\n"
      "  --fuse-mount=DIR          serve the same devices as files of a FUSE mount at DIR\n"
      "                            (DIR/synchmess, DIR/config, DIR/<group>) instead of CUSE:\n"
      "                            for kernels without CUSE; needs /dev/fuse, not root. DIR\n"
      "                            must be empty (see --allow-nonempty) and short enough for\n"
      "                            DIR/<63-byte name> to fit in 127 bytes\n"
      "  --allow-nonempty          with --fuse-mount: mount even if DIR holds files (they are\n"
      "                            hidden while the server runs)\n"
      "  -v, --verbose             log every device operation\n"
      "  -h, --help                show this help and exit\n"
      "  --version                 show the version and exit\n",
      program, SYNCH_MAX_MESSAGE_SIZE_LIMIT, SYNCH_DEFAULT_MAX_MESSAGE_SIZE,
      SYNCH_MAX_STORAGE_SIZE_LIMIT, SYNCH_DEFAULT_MAX_STORAGE_SIZE);
}

std::variant<Options, ShowHelp, ShowVersion, UsageError> parse_options(int argc, char** argv) {
  static const option kLongOptions[] = {
      {"max-message-size", required_argument, nullptr, kMaxMessageSize},
      {"max-storage-size", required_argument, nullptr, kMaxStorageSize},
      {"max-groups", required_argument, nullptr, kMaxGroups},
      {"threads", required_argument, nullptr, kThreads},
      {"udev-timeout", required_argument, nullptr, kUdevTimeout},
      {"fuse-mount", required_argument, nullptr, kFuseMount},
      {"max-memory", required_argument, nullptr, kMaxMemory},
      {"max-user-memory", required_argument, nullptr, kMaxUserMemory},
      {"max-user-groups", required_argument, nullptr, kMaxUserGroups},
      {"allow-nonempty", no_argument, nullptr, kAllowNonempty},
      {"region-size", required_argument, nullptr, kRegionSize},
      {"no-fast-path", no_argument, nullptr, kNoFastPath},
      {"verbose", no_argument, nullptr, 'v'},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, kVersion},
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
      case kVersion:
        return ShowVersion{};
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
      case kMaxMemory:
        if (!parse_size(optarg, 1 << 20, kMaxMemoryLimit, options.max_memory)) {
          return UsageError{fmt::format(
              "--max-memory takes a byte count from 1M to 1T (e.g. 512M), not '{}'", optarg)};
        }
        break;
      case kMaxUserMemory:
        if (!parse_size(optarg, 64 << 10, kMaxMemoryLimit, options.max_user_memory)) {
          return UsageError{fmt::format(
              "--max-user-memory takes a byte count from 64K to 1T (e.g. 64M), not '{}'", optarg)};
        }
        break;
      case kMaxUserGroups:
        if (!parse_number(optarg, 1, 100000, options.max_user_groups)) {
          return UsageError{
              fmt::format("--max-user-groups takes a number from 1 to 100000, not '{}'", optarg)};
        }
        break;
      case kAllowNonempty:
        options.allow_nonempty = true;
        break;
      case kRegionSize:
        if (!parse_size(optarg, region::kMinRingBytes, region::kMaxRingBytes, value) ||
            (value & (value - 1)) != 0) {
          return UsageError{fmt::format(
              "--region-size takes a power of two from 64K to 16M (e.g. 1M), not '{}'", optarg)};
        }
        options.region_size = value;
        break;
      case kNoFastPath:
        options.fast_path = false;
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
  if (options.allow_nonempty && options.fuse_mount.empty()) {
    return UsageError{"--allow-nonempty applies to --fuse-mount DIR only"};
  }
  return options;
}

}  // namespace synchmess::server
