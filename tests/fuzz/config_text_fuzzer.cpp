// config_text_fuzzer: libFuzzer target for the /dev/synch/config text format (core/params).
// Checks: a write either applies every setting it names or none (the parameters are untouched
// after a failure); whatever is applied is in range; what the device prints parses back to the
// same values; parsing never reads past the text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/params.hpp"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "config_text_fuzzer: %s\n", what);
  std::abort();
}

bool in_range(const synch_params& p) {
  return p.max_message_size >= 1 && p.max_message_size <= SYNCH_MAX_MESSAGE_SIZE_LIMIT &&
         p.max_storage_size >= 1 && p.max_storage_size <= SYNCH_MAX_STORAGE_SIZE_LIMIT;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes: ASan catches any read past the text.
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string_view view(text);
  synchmess::core::Params params;
  const synch_params before = params.get();
  const auto parsed = synchmess::core::parse_params_text(view);
  const auto applied = params.set_text(view);
  const synch_params after = params.get();
  if (!applied) {
    if (after.max_message_size != before.max_message_size ||
        after.max_storage_size != before.max_storage_size) {
      broken("a refused write changed a parameter");
    }
    return 0;
  }
  if (!parsed) broken("set_text accepted what parse_params_text refused");
  if (!in_range(after)) broken("a value out of range was applied");
  const synch_params& changes = parsed.value();
  if ((changes.max_message_size != 0 && changes.max_message_size != after.max_message_size) ||
      (changes.max_storage_size != 0 && changes.max_storage_size != after.max_storage_size)) {
    broken("not every setting of the write was applied");
  }
  const auto reparsed = synchmess::core::parse_params_text(params.text());
  if (!reparsed || reparsed.value().max_message_size != after.max_message_size ||
      reparsed.value().max_storage_size != after.max_storage_size) {
    broken("the printed text does not parse back to the same values");
  }
  return 0;
}
