#pragma once

// The header of a .safetensors file: an 8-byte little-endian length N, then N bytes of JSON that
// give each tensor's dtype, shape and byte range in the data that follows. Only the header is
// read, and every length and offset in it is checked against the file before it is believed: a
// truncated or hostile file gives an error, never a crash or an allocation it did not pay for.
// The functions share no state: thread-safe.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gswarm::common {

// The largest header accepted (the limit of the reference implementation).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

struct SafetensorsTensor {
  std::string name;
  std::string dtype;            // as written: "BF16", "F32", ...; unknown dtypes are kept
  std::vector<uint64_t> shape;  // empty for a scalar
  uint64_t begin = 0;           // data_offsets, relative to the first byte after the header
  uint64_t end = 0;
  uint64_t num_elements = 0;  // product of shape; 1 for a scalar
};

struct SafetensorsHeader {
  uint64_t header_bytes = 0;                    // N
  std::vector<SafetensorsTensor> tensors;       // sorted by name
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t parameter_count = 0;                 // sum of num_elements
};

// Bytes per element of a safetensors dtype ("BF16" -> 2), or 0 for dtypes this reader does not
// know (sub-byte ones such as F4, or newer ones), whose byte ranges are then not checked.
uint64_t SafetensorsDtypeSize(absl::string_view dtype);

// The PyTorch name of a safetensors dtype, as config.json's torch_dtype spells it ("BF16" ->
// "bfloat16", "F8_E4M3" -> "float8_e4m3fn"); unknown dtypes are lower-cased.
std::string SafetensorsDtypeToTorch(absl::string_view dtype);

// Parses the header from `bytes`, the first bytes of a file of `file_size` bytes: the whole file,
// or at least its first 8 + N bytes. Checks that N fits the file and the limit, that the header is
// a JSON object of tensors {dtype, shape, data_offsets} plus an optional "__metadata__" object of
// strings, that every byte range lies in the data section with begin <= end, and, for known
// dtypes, that it holds exactly shape-product elements. Errors are INVALID_ARGUMENT and start with
// `name`.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view bytes,
                                                         uint64_t file_size,
                                                         absl::string_view name);

// Reads the header of the file at `path` (symlinks followed), never its tensor data, and parses
// it as above; errors name `path`.
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path);

}  // namespace gswarm::common
