// Model names, source URLs with a revision, and relative file paths from a listing: the input is
// split on its first newline into the text and a revision.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "common/model_name.h"
#include "common/model_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::string_view revision;
  if (const size_t newline = text.find('\n'); newline != absl::string_view::npos) {
    revision = text.substr(newline + 1);
    text = text.substr(0, newline);
  }
  (void)gswarm::common::ValidateModelName(text);
  (void)gswarm::common::ParseSource(text, revision);
  (void)gswarm::common::CheckRelativePath(text);
  return 0;
}
