// The Hub's revision listing (client::ParseRepoListing): any answer gives files or a clear error.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "client/hf_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  (void)gswarm::client::ParseRepoListing(body, "fuzz listing");
  return 0;
}
