#pragma once

// The header of a GGUF file (llama.cpp's format): magic "GGUF", a version, tensor and key/value
// counts, the key/value pairs, then one info record per tensor. Versions 2 and 3, little-endian.
// Every count and length is checked against the input and the limits below before it is used;
// nothing is allocated from a count, and arrays (the tokenizer's vocabulary) are skipped, not
// stored. A file is read in chunks up to the end of its tensor infos. The functions share no
// state: thread-safe.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gswarm::common {

// Limits on what a header may claim. A real header is a few MB, mostly the tokenizer arrays.
inline constexpr uint64_t kMaxGgufHeaderBytes = uint64_t{64} << 20;  // up to the tensor data
inline constexpr uint64_t kMaxGgufCount = 1'000'000;                 // tensors; key/value pairs
inline constexpr uint64_t kMaxGgufStringBytes = uint64_t{1} << 20;   // each key or string value
inline constexpr int kMaxGgufArrayDepth = 4;                         // arrays in arrays
inline constexpr uint32_t kMaxGgufDims = 8;                          // per tensor

struct GgufInfo {
  uint32_t version = 0;
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
  std::string architecture;           // general.architecture: "llama", "qwen2", ...
  std::string name;                   // general.name
  uint64_t context_length = 0;        // <architecture>.context_length
  uint64_t block_count = 0;           // <architecture>.block_count
  uint64_t embedding_length = 0;      // <architecture>.embedding_length
  std::optional<uint32_t> file_type;  // general.file_type; see GgufFileTypeName
  uint64_t vocab_size = 0;            // element count of tokenizer.ggml.tokens
  uint64_t parameter_count = 0;       // over the tensor infos, sum of the product of dims
  uint32_t split_count = 0;           // split.count for a file of a gguf-split set, else 0
  uint32_t split_index = 0;           // split.no
  uint64_t data_offset = 0;           // where tensor data starts: the header, aligned
};

// llama.cpp's name for a general.file_type ("Q4_K_M" for 15), or "file_type <n>" when unknown.
std::string GgufFileTypeName(uint32_t file_type);

// Parses the header from `bytes`, the first bytes of a file of `file_size` bytes: the whole file,
// or at least up to its tensor data. Strings kept (general.*) must be valid UTF-8. Errors are
// INVALID_ARGUMENT and start with `name`.
absl::StatusOr<GgufInfo> ParseGguf(absl::string_view bytes, uint64_t file_size,
                                   absl::string_view name);

// Reads the header of the file at `path` (symlinks followed) in chunks, never its tensor data, and
// parses it as above; errors name `path`.
absl::StatusOr<GgufInfo> ReadGgufHeader(const std::string& path);

}  // namespace gswarm::common
