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
  unsigned threads = 4;             // the fixed worker pool
  unsigned udev_timeout_ms = 5000;  // how long an install waits for udev to apply the rules
  bool verbose = false;
  std::string fuse_mount;  // --fuse-mount DIR: serve the devices as files of a FUSE mount
};

struct ShowHelp {};
struct UsageError {
  std::string message;
};

// Parses argv. ShowHelp for --help; UsageError says what is wrong and how to fix it.
std::variant<Options, ShowHelp, UsageError> parse_options(int argc, char** argv);
std::string usage_text(const char* program);

}  // namespace synchmess::server
