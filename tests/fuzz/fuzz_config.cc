// The YAML config loader (common::ParseConfig): any text gives a config or a clear error.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<gswarm::common::Config> config = gswarm::common::ParseConfig(text, "fuzz.yaml");
  if (config.ok()) {
    // What parsed renders back (gswarm config) without failing.
    (void)gswarm::common::ConfigToYaml(*config);
    (void)gswarm::common::ConfigToJson(*config);
  }
  return 0;
}
