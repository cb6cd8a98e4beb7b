// The safetensors header reader (common::ParseSafetensorsHeader), with the file as given and as
// a larger file whose tensor data the bytes do not hold.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const uint64_t extra = size > 0 ? data[size - 1] : 0;
  (void)gswarm::common::ParseSafetensorsHeader(bytes, size, "fuzz.safetensors");
  (void)gswarm::common::ParseSafetensorsHeader(bytes, size + (extra << 16), "fuzz.safetensors");
  return 0;
}
