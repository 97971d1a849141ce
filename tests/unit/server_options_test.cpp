// synchmess-cuse's command line: defaults, every option, and clear errors for bad values.
#include <doctest/doctest.h>

#include <string>
#include <variant>
#include <vector>

#include "server/options.hpp"

using synchmess::server::Options;
using synchmess::server::parse_options;
using synchmess::server::ShowHelp;
using synchmess::server::ShowVersion;
using synchmess::server::UsageError;
using synchmess::server::version_text;

namespace {

std::variant<Options, ShowHelp, ShowVersion, UsageError> parse(std::vector<std::string> arguments) {
  arguments.insert(arguments.begin(), "synchmess-cuse");
  std::vector<char*> argv;
  for (auto& argument : arguments)
    argv.push_back(argument.data());
  argv.push_back(nullptr);
  return parse_options(static_cast<int>(arguments.size()), argv.data());
}

std::string error_of(std::vector<std::string> arguments) {
  auto parsed = parse(std::move(arguments));
  REQUIRE(std::holds_alternative<UsageError>(parsed));
  return std::get<UsageError>(parsed).message;
}

}  // namespace

TEST_CASE("server options: defaults follow the spec") {
  auto parsed = parse({});
  REQUIRE(std::holds_alternative<Options>(parsed));
  const Options& options = std::get<Options>(parsed);
  CHECK(options.max_message_size == 4096);
  CHECK(options.max_storage_size == 1048576);
  CHECK(options.max_groups == 1024);
  CHECK(options.threads == 4);
  CHECK_FALSE(options.verbose);
}

TEST_CASE("server options: every option is read, in both spellings") {
  auto parsed = parse({"--max-message-size=126976", "--max-storage-size", "65536",
                       "--max-groups=200", "--threads=8", "--udev-timeout=0", "-v"});
  REQUIRE(std::holds_alternative<Options>(parsed));
  const Options& options = std::get<Options>(parsed);
  CHECK(options.max_message_size == 126976);
  CHECK(options.max_storage_size == 65536);
  CHECK(options.max_groups == 200);
  CHECK(options.threads == 8);
  CHECK(options.udev_timeout_ms == 0);
  CHECK(options.verbose);
  CHECK(std::holds_alternative<ShowHelp>(parse({"--help"})));
  CHECK(std::holds_alternative<ShowVersion>(parse({"--version"})));
  CHECK(version_text().rfind("synchmess-cuse " SYNCHMESS_TEST_VERSION " (libfuse 3.", 0) == 0);
  CHECK(std::holds_alternative<ShowHelp>(parse({"-h"})));
}

TEST_CASE("server options: bad values say what is wrong and what is allowed") {
  CHECK(error_of({"--max-message-size=126977"}).find("1 to 126976") != std::string::npos);
  CHECK(error_of({"--max-message-size=0"}).find("--max-message-size") != std::string::npos);
  CHECK(error_of({"--max-storage-size=-1"}).find("--max-storage-size") != std::string::npos);
  CHECK(error_of({"--threads=0"}).find("1 to 256") != std::string::npos);
  CHECK(error_of({"--threads=4x"}).find("'4x'") != std::string::npos);
  CHECK(error_of({"--max-groups"}).find("needs a value") != std::string::npos);
  CHECK(error_of({"--frobnicate"}).find("unknown option '--frobnicate'") != std::string::npos);
  CHECK(error_of({"extra"}).find("unexpected argument 'extra'") != std::string::npos);
}

TEST_CASE("server options: limits and quotas, with K/M/G suffixes") {
  auto defaults = parse({});
  REQUIRE(std::holds_alternative<Options>(defaults));
  CHECK(std::get<Options>(defaults).max_memory == 256ull << 20);
  CHECK(std::get<Options>(defaults).max_user_memory == 64ull << 20);
  CHECK(std::get<Options>(defaults).max_user_groups == 64);

  auto parsed = parse({"--max-memory=2G", "--max-user-memory", "512k", "--max-user-groups=3"});
  REQUIRE(std::holds_alternative<Options>(parsed));
  CHECK(std::get<Options>(parsed).max_memory == 2ull << 30);
  CHECK(std::get<Options>(parsed).max_user_memory == 512ull << 10);
  CHECK(std::get<Options>(parsed).max_user_groups == 3);
  auto plain = parse({"--max-memory=16777216"});
  REQUIRE(std::holds_alternative<Options>(plain));
  CHECK(std::get<Options>(plain).max_memory == 16ull << 20);

  CHECK(error_of({"--max-memory=1K"}).find("from 1M to 1T") != std::string::npos);
  CHECK(error_of({"--max-memory=2T"}).find("'2T'") != std::string::npos);
  CHECK(error_of({"--max-memory=M"}).find("'M'") != std::string::npos);
  CHECK(error_of({"--max-memory=99999999999999999999G"}).find("--max-memory") != std::string::npos);
  CHECK(error_of({"--max-user-memory=64MB"}).find("--max-user-memory") != std::string::npos);
  CHECK(error_of({"--max-user-groups=0"}).find("1 to 100000") != std::string::npos);
  CHECK(error_of({"--allow-nonempty"}).find("--fuse-mount") != std::string::npos);
}

TEST_CASE("parse_size: digits with an optional K, M or G suffix, nothing else") {
  using synchmess::server::parse_size;
  uint64_t value = 0;
  CHECK(parse_size("0", 0, 10, value));
  CHECK(value == 0);
  CHECK(parse_size("3K", 0, UINT64_MAX, value));
  CHECK(value == 3072);
  CHECK(parse_size("1g", 0, UINT64_MAX, value));
  CHECK(value == 1ull << 30);
  CHECK_FALSE(parse_size("", 0, 10, value));
  CHECK_FALSE(parse_size("-1", 0, 10, value));
  CHECK_FALSE(parse_size(" 1", 0, 10, value));
  CHECK_FALSE(parse_size("1 K", 0, UINT64_MAX, value));
  CHECK_FALSE(parse_size("1KK", 0, UINT64_MAX, value));
  CHECK_FALSE(parse_size("17179869184G", 0, UINT64_MAX, value));  // 2^64: overflow
  CHECK_FALSE(parse_size("11", 0, 10, value));
}

TEST_CASE("server options: the fast path's ring size and switch") {
  auto parsed = parse({});
  REQUIRE(std::holds_alternative<Options>(parsed));
  CHECK(std::get<Options>(parsed).region_size == 256 * 1024);
  CHECK(std::get<Options>(parsed).fast_path);
  parsed = parse({"--region-size=1M", "--no-fast-path"});
  REQUIRE(std::holds_alternative<Options>(parsed));
  CHECK(std::get<Options>(parsed).region_size == 1024 * 1024);
  CHECK_FALSE(std::get<Options>(parsed).fast_path);
  parsed = parse({"--region-size", "64K"});
  REQUIRE(std::holds_alternative<Options>(parsed));
  CHECK(std::get<Options>(parsed).region_size == 64 * 1024);
  for (const char* bad : {"--region-size=32K", "--region-size=32M", "--region-size=100000",
                          "--region-size=3M", "--region-size=x"}) {
    INFO(bad);
    CHECK(error_of({bad}).find("power of two from 64K to 16M") != std::string::npos);
  }
}
