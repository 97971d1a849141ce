// Params and the /dev/synch/config text format (SPEC "Parameters").
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "core/params.hpp"
#include "test_support.hpp"

using synchmess::core::format_params_text;
using synchmess::core::Params;
using synchmess::core::parse_params_text;
using synchmess::test::error_of;

namespace {

constexpr uint64_t kMessageLimit = SYNCH_MAX_MESSAGE_SIZE_LIMIT;  // 126976
constexpr uint64_t kStorageLimit = SYNCH_MAX_STORAGE_SIZE_LIMIT;

// Params with non-default values, so that "nothing applied" cannot pass by coincidence.
void set_known_values(Params& params) {
  REQUIRE(params.set({.max_message_size = 1000, .max_storage_size = 50000}));
}

void check_known_values(const Params& params) {
  CHECK(params.max_message_size() == 1000);
  CHECK(params.max_storage_size() == 50000);
}

}  // namespace

TEST_CASE("Params: defaults are 4096 and 1048576, printed one key=value per line") {
  Params params;
  CHECK(params.max_message_size() == 4096);
  CHECK(params.max_storage_size() == 1048576);
  CHECK(params.get().max_message_size == 4096);
  CHECK(params.get().max_storage_size == 1048576);
  CHECK(params.text() == "max_message_size=4096\nmax_storage_size=1048576\n");
}

TEST_CASE("Params: text() reflects the current values") {
  Params params;
  REQUIRE(params.set({.max_message_size = 7, .max_storage_size = 123456789012}));
  CHECK(params.text() == "max_message_size=7\nmax_storage_size=123456789012\n");
  CHECK(format_params_text({.max_message_size = 1, .max_storage_size = 2}) ==
        "max_message_size=1\nmax_storage_size=2\n");
}

TEST_CASE("Params::set: a zero field leaves that value unchanged") {
  Params params;
  set_known_values(params);

  SUBCASE("both zero: nothing changes, and it succeeds") {
    CHECK(params.set({.max_message_size = 0, .max_storage_size = 0}));
    check_known_values(params);
  }
  SUBCASE("only max_message_size") {
    CHECK(params.set({.max_message_size = 77, .max_storage_size = 0}));
    CHECK(params.max_message_size() == 77);
    CHECK(params.max_storage_size() == 50000);
  }
  SUBCASE("only max_storage_size") {
    CHECK(params.set({.max_message_size = 0, .max_storage_size = 88}));
    CHECK(params.max_message_size() == 1000);
    CHECK(params.max_storage_size() == 88);
  }
}

TEST_CASE("Params::set: max_message_size may be 126976 (124 KiB) but not 126977") {
  Params params;
  CHECK(params.set({.max_message_size = kMessageLimit, .max_storage_size = 0}));
  CHECK(params.max_message_size() == 126976);

  set_known_values(params);
  CHECK(error_of(params.set({.max_message_size = kMessageLimit + 1, .max_storage_size = 0})) ==
        std::errc::invalid_argument);
  check_known_values(params);
  CHECK(error_of(params.set({.max_message_size = UINT64_MAX, .max_storage_size = 0})) ==
        std::errc::invalid_argument);
  check_known_values(params);
}

TEST_CASE("Params::set: max_storage_size is bounded by SYNCH_MAX_STORAGE_SIZE_LIMIT") {
  Params params;
  CHECK(params.set({.max_message_size = 0, .max_storage_size = kStorageLimit}));
  CHECK(params.max_storage_size() == kStorageLimit);
  set_known_values(params);
  CHECK(error_of(params.set({.max_message_size = 0, .max_storage_size = kStorageLimit + 1})) ==
        std::errc::invalid_argument);
  check_known_values(params);
}

TEST_CASE("Params::set: all or nothing, a valid field is not applied beside an invalid one") {
  Params params;
  set_known_values(params);
  CHECK(error_of(params.set({.max_message_size = 10, .max_storage_size = kStorageLimit + 1})) ==
        std::errc::invalid_argument);
  check_known_values(params);
  CHECK(error_of(params.set({.max_message_size = kMessageLimit + 1, .max_storage_size = 10})) ==
        std::errc::invalid_argument);
  check_known_values(params);
}

TEST_CASE("Params::set_text: accepts one or several key=value lines") {
  Params params;
  set_known_values(params);

  SUBCASE("one line without a newline") {
    CHECK(params.set_text("max_message_size=100"));
    CHECK(params.max_message_size() == 100);
    CHECK(params.max_storage_size() == 50000);
  }
  SUBCASE("two lines with a trailing newline") {
    CHECK(params.set_text("max_message_size=100\nmax_storage_size=2000\n"));
    CHECK(params.max_message_size() == 100);
    CHECK(params.max_storage_size() == 2000);
  }
  SUBCASE("spaces and tabs around keys and values, empty lines, CRLF") {
    CHECK(params.set_text("\n  max_storage_size \t=  3000\t\r\n\n\tmax_message_size= 200 \n\n"));
    CHECK(params.max_message_size() == 200);
    CHECK(params.max_storage_size() == 3000);
  }
  SUBCASE("the last of repeated keys wins") {
    CHECK(params.set_text("max_message_size=1\nmax_message_size=2\n"));
    CHECK(params.max_message_size() == 2);
  }
  SUBCASE("exactly the limits") {
    CHECK(params.set_text("max_message_size=126976\nmax_storage_size=1099511627776\n"));
    CHECK(params.max_message_size() == kMessageLimit);
    CHECK(params.max_storage_size() == kStorageLimit);
  }
  SUBCASE("the text printed by text() can be written back") {
    Params other;
    REQUIRE(other.set({.max_message_size = 321, .max_storage_size = 654}));
    CHECK(params.set_text(other.text()));
    CHECK(params.max_message_size() == 321);
    CHECK(params.max_storage_size() == 654);
  }
}

TEST_CASE("Params::set_text: a bad write fails with EINVAL and applies nothing") {
  // Each text is bad as a whole; several start with a valid line to check all-or-nothing.
  const std::string_view bad_texts[] = {
      "",                                                // empty write
      "\n",                                              // only an empty line
      "  \n\t\n",                                        // only blanks
      "unknown_key=5\n",                                 // unknown key
      "MAX_MESSAGE_SIZE=5\n",                            // keys are case-sensitive
      "max_message_size\n",                              // missing '='
      "max_message_size 100\n",                          // missing '='
      "=100\n",                                          // missing key
      "max_message_size=\n",                             // missing value
      "max_message_size=abc\n",                          // not a number
      "max_message_size=12abc\n",                        // trailing garbage
      "max_message_size=1 2\n",                          // space inside the value
      "max_message_size=-1\n",                           // negative
      "max_message_size=+1\n",                           // sign
      "max_message_size=0x10\n",                         // hex
      "max_message_size=1e3\n",                          // exponent
      "max_message_size=1.5\n",                          // fraction
      "max_message_size=0\n",                            // zero
      "max_storage_size=0\n",                            // zero
      "max_message_size=126977\n",                       // out of range
      "max_storage_size=1099511627777\n",                // out of range
      "max_storage_size=18446744073709551615\n",         // UINT64_MAX: out of range
      "max_storage_size=18446744073709551616\n",         // overflows uint64
      "max_storage_size=99999999999999999999999999\n",   // overflows uint64
      "max_message_size=100\nbogus=1\n",                 // valid line, then unknown key
      "max_message_size=100\nmax_storage_size=0\n",      // valid line, then zero
      "max_message_size=100\nmax_storage_size\n",        // valid line, then no '='
      "max_storage_size=2000\nmax_message_size=126977",  // valid line, then out of range
  };
  for (const std::string_view text : bad_texts) {
    CAPTURE(text);
    Params params;
    set_known_values(params);
    CHECK(error_of(params.set_text(text)) == std::errc::invalid_argument);
    check_known_values(params);
  }
}

TEST_CASE("parse_params_text: keys absent from the text are 0 (leave unchanged)") {
  auto only_storage = parse_params_text("max_storage_size=5\n");
  REQUIRE(only_storage.ok());
  CHECK(only_storage->max_message_size == 0);
  CHECK(only_storage->max_storage_size == 5);

  auto both = parse_params_text("max_message_size=9\nmax_storage_size=5");
  REQUIRE(both.ok());
  CHECK(both->max_message_size == 9);
  CHECK(both->max_storage_size == 5);
}

TEST_CASE(
    "Params: set_text reports the values before and after; replace_if undoes it unless "
    "they changed since") {
  Params params;
  set_known_values(params);
  synch_params before{};
  synch_params after{};
  REQUIRE(params.set_text("max_message_size=100\n", &before, &after));
  CHECK(before.max_storage_size == 50000);
  CHECK(after.max_message_size == 100);
  CHECK(after.max_storage_size == 50000);

  SUBCASE("unchanged since: undone") {
    CHECK(params.replace_if(after, before));
    CHECK(params.max_message_size() == 1000);
  }
  SUBCASE("changed since by somebody else: left alone") {
    REQUIRE(params.set_text("max_message_size=200\n"));
    CHECK_FALSE(params.replace_if(after, before));
    CHECK(params.max_message_size() == 200);
  }
}
