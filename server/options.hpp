// Command-line options of synchmess-cuse.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include <synchmess/synchmess.h>

namespace synchmess::server {

struct Options {
  uint64_t max_message_size = SYNCH_DEFAULT_MAX_MESSAGE_SIZE;
  uint64_t max_storage_size = SYNCH_DEFAULT_MAX_STORAGE_SIZE;
  uint64_t max_groups = 1024;
  uint64_t max_memory = uint64_t{256} << 20;      // global bound on message memory
  uint64_t max_user_memory = uint64_t{64} << 20;  // each unprivileged uid's share of it
  uint64_t max_user_groups = 64;                  // groups each unprivileged uid may install
  unsigned threads = 4;                           // the fixed worker pool
  unsigned udev_timeout_ms = 5000;  // how long an install waits for udev to apply the rules
  bool verbose = false;
  std::string fuse_mount;       // --fuse-mount DIR: serve the devices as files of a FUSE mount
  bool allow_nonempty = false;  // --allow-nonempty: mount over a directory that holds files
  uint64_t region_size = uint64_t{256} << 10;  // each group's shared ring (the fast path)
  bool fast_path = true;                       // --no-fast-path: offers refused
};

struct ShowHelp {};
struct ShowVersion {};
struct UsageError {
  std::string message;
};

// A byte count with an optional K, M or G suffix (powers of 1024, either case) into `out`, if it
// lies in min..max. False on anything else (no sign, no spaces, no overflow).
bool parse_size(const char* text, uint64_t min, uint64_t max, uint64_t& out);

// Parses argv. ShowHelp for --help, ShowVersion for --version; UsageError says what is wrong
// and how to fix it.
std::variant<Options, ShowHelp, ShowVersion, UsageError> parse_options(int argc, char** argv);
std::string usage_text(const char* program);
// "synchmess-cuse <version> (libfuse <version of the library loaded>)".
std::string version_text();

}  // namespace synchmess::server
