// The GGUF header reader (common::ParseGguf): the bytes are a file's head; its claimed size comes
// from the first 8 bytes' low bits so that offsets past the bytes given are tried too.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "common/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const uint64_t extra = size > 0 ? data[size - 1] : 0;
  (void)gswarm::common::ParseGguf(bytes, size, "fuzz.gguf");
  (void)gswarm::common::ParseGguf(bytes, size + (extra << 20), "fuzz.gguf");
  return 0;
}
