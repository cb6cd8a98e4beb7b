#include "common/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_read.h"
#include "common/status.h"

namespace gswarm::common {
namespace {

// GGUF value types.
enum : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// Bytes of a fixed-size value type; 0 for strings, arrays and unknown types.
uint64_t FixedSize(uint32_t type) {
  switch (type) {
    case kUint8:
    case kInt8:
    case kBool:
      return 1;
    case kUint16:
    case kInt16:
      return 2;
    case kUint32:
    case kInt32:
    case kFloat32:
      return 4;
    case kUint64:
    case kInt64:
    case kFloat64:
      return 8;
    default:
      return 0;
  }
}

bool IsInteger(uint32_t type) {
  return type != kFloat32 && type != kFloat64 && type != kBool && FixedSize(type) > 0;
}

bool IsSigned(uint32_t type) {
  return type == kInt8 || type == kInt16 || type == kInt32 || type == kInt64;
}

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    uint32_t min;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// Sequential reads over the first bytes of a GGUF file, from memory or from a file through a
// chunk buffer, never past the end of the input nor past kMaxGgufHeaderBytes. Invariant:
// pos_ <= min(available_, kMaxGgufHeaderBytes).
class Cursor {
 public:
  explicit Cursor(absl::string_view bytes) : window_(bytes), available_(bytes.size()) {}
  explicit Cursor(const ReadOnlyFile* file) : file_(file), available_(file->size()) {}

  uint64_t offset() const { return pos_; }

  absl::Status Read(size_t n, char* out) {
    RETURN_IF_ERROR(Check(n));
    if (pos_ < window_start_ || pos_ - window_start_ > window_.size() ||
        n > window_.size() - (pos_ - window_start_)) {
      // Only a file gets here: a memory window holds all available bytes.
      constexpr uint64_t kChunk = uint64_t{1} << 20;
      size_t len = static_cast<size_t>(std::min(std::max<uint64_t>(kChunk, n), available_ - pos_));
      buffer_.resize(len);
      RETURN_IF_ERROR(file_->ReadAt(pos_, len, buffer_.data()));
      window_ = buffer_;
      window_start_ = pos_;
    }
    std::memcpy(out, window_.data() + (pos_ - window_start_), n);
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t n) {
    RETURN_IF_ERROR(Check(n));
    pos_ += n;
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> Little(size_t bytes) {
    char buf[8];
    RETURN_IF_ERROR(Read(bytes, buf));
    uint64_t value = 0;
    for (size_t i = bytes; i-- > 0;) value = (value << 8) | static_cast<unsigned char>(buf[i]);
    return value;
  }

  absl::StatusOr<uint32_t> U32() {
    ASSIGN_OR_RETURN(uint64_t value, Little(4));
    return static_cast<uint32_t>(value);
  }
  absl::StatusOr<uint64_t> U64() { return Little(8); }

  absl::StatusOr<std::string> String() {
    ASSIGN_OR_RETURN(uint64_t len, U64());
    if (len > kMaxGgufStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("string of ", len, " bytes at offset ",
                                                     pos_ - 8, " exceeds the limit of ",
                                                     kMaxGgufStringBytes, " bytes"));
    }
    RETURN_IF_ERROR(Check(len));  // before allocating
    std::string s(static_cast<size_t>(len), '\0');
    RETURN_IF_ERROR(Read(s.size(), s.data()));
    return s;
  }

  // A string that is not kept: it only has to fit in the header.
  absl::Status SkipString() {
    ASSIGN_OR_RETURN(uint64_t len, U64());
    return Skip(len);
  }

 private:
  absl::Status Check(uint64_t n) const {
    if (n > available_ - pos_) {
      return absl::InvalidArgumentError(absl::StrCat("needs ", n, " bytes at offset ", pos_,
                                                     " but the file ends at byte ", available_,
                                                     " (truncated?)"));
    }
    if (n > kMaxGgufHeaderBytes - pos_) {
      return absl::InvalidArgumentError(
          absl::StrCat("needs ", n, " bytes at offset ", pos_, ": the header would exceed the ",
                       kMaxGgufHeaderBytes, " bytes this reader accepts"));
    }
    return absl::OkStatus();
  }

  const ReadOnlyFile* file_ = nullptr;
  absl::string_view window_;  // the bytes at [window_start_, window_start_ + size)
  uint64_t window_start_ = 0;
  std::string buffer_;
  uint64_t available_;
  uint64_t pos_ = 0;
};

class Parser {
 public:
  explicit Parser(Cursor* in) : in_(*in) {}

  absl::StatusOr<GgufInfo> Parse(uint64_t file_size);

 private:
  absl::Status ParseKeyValue();
  // Skips an array's type, count and elements; returns the count.
  absl::StatusOr<uint64_t> SkipArray(int depth);
  absl::Status ParseTensorInfo();

  Cursor& in_;
  GgufInfo info_;
  uint64_t alignment_ = 32;
  // Integer values of keys that end like "<arch>.context_length", looked up once the
  // architecture (which may come later) is known. A real file has a handful.
  static constexpr size_t kMaxArchValues = 64;
  std::map<std::string, uint64_t> arch_values_;
  bool has_data_ = false;  // a tensor with at least one element
  uint64_t max_offset_ = 0;
};

absl::StatusOr<GgufInfo> Parser::Parse(uint64_t file_size) {
  char magic[4];
  RETURN_IF_ERROR(in_.Read(sizeof(magic), magic));
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a GGUF file (magic \"", absl::CHexEscape(absl::string_view(magic, 4)), "\")"));
  }
  ASSIGN_OR_RETURN(info_.version, in_.U32());
  if (info_.version == 1) {
    return absl::InvalidArgumentError(
        "GGUF version 1 is unsupported (convert the model again with a current llama.cpp)");
  }
  if (info_.version != 2 && info_.version != 3) {
    if (uint32_t swapped = __builtin_bswap32(info_.version); swapped == 2 || swapped == 3) {
      return absl::InvalidArgumentError("big-endian GGUF files are unsupported");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF version ", info_.version, " is unsupported (versions 2 and 3 are)"));
  }
  ASSIGN_OR_RETURN(info_.tensor_count, in_.U64());
  ASSIGN_OR_RETURN(info_.kv_count, in_.U64());
  if (info_.tensor_count > kMaxGgufCount || info_.kv_count > kMaxGgufCount) {
    return absl::InvalidArgumentError(absl::StrCat(info_.tensor_count, " tensors and ",
                                                   info_.kv_count, " key/value pairs exceed the ",
                                                   "limit of ", kMaxGgufCount, " each"));
  }
  for (uint64_t i = 0; i < info_.kv_count; ++i) {
    absl::Status st = ParseKeyValue();
    if (!st.ok()) return Annotate(st, absl::StrCat("key/value pair ", i));
  }
  for (uint64_t i = 0; i < info_.tensor_count; ++i) {
    absl::Status st = ParseTensorInfo();
    if (!st.ok()) return Annotate(st, absl::StrCat("tensor info ", i));
  }

  info_.data_offset = (in_.offset() + alignment_ - 1) / alignment_ * alignment_;
  if (has_data_ &&
      (info_.data_offset >= file_size || max_offset_ >= file_size - info_.data_offset)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor data at offset ", info_.data_offset, " + ", max_offset_,
                     " lies past the end of the file at byte ", file_size, " (truncated?)"));
  }
  auto arch_value = [&](absl::string_view suffix) -> uint64_t {
    auto it = arch_values_.find(absl::StrCat(info_.architecture, suffix));
    return it == arch_values_.end() ? 0 : it->second;
  };
  info_.context_length = arch_value(".context_length");
  info_.block_count = arch_value(".block_count");
  info_.embedding_length = arch_value(".embedding_length");
  return std::move(info_);
}

absl::Status Parser::ParseKeyValue() {
  ASSIGN_OR_RETURN(std::string key, in_.String());
  auto fail = [&](auto&&... parts) {
    std::string shown = absl::CHexEscape(absl::string_view(key).substr(0, 200));
    return absl::InvalidArgumentError(absl::StrCat("key \"", shown, "\": ", parts...));
  };
  absl::StatusOr<uint32_t> type = in_.U32();
  if (!type.ok()) return fail(type.status().message());
  // It moves the tensor data: a bad one is an error, not a value to ignore.
  constexpr absl::string_view kBadAlignment = "must be a power of two that fits in 32 bits";
  if (key == "general.alignment" && !IsInteger(*type)) return fail(kBadAlignment);

  if (*type == kString) {
    std::string* kept = key == "general.architecture" ? &info_.architecture
                        : key == "general.name"       ? &info_.name
                                                      : nullptr;
    if (kept == nullptr) {
      if (absl::Status st = in_.SkipString(); !st.ok()) return fail(st.message());
      return absl::OkStatus();
    }
    absl::StatusOr<std::string> value = in_.String();
    if (!value.ok()) return fail(value.status().message());
    if (!IsValidUtf8(*value)) return fail("value is not valid UTF-8");
    *kept = *std::move(value);
    return absl::OkStatus();
  }
  if (*type == kArray) {
    absl::StatusOr<uint64_t> count = SkipArray(1);
    if (!count.ok()) return fail(count.status().message());
    if (key == "tokenizer.ggml.tokens") info_.vocab_size = *count;
    return absl::OkStatus();
  }
  const uint64_t size = FixedSize(*type);
  if (size == 0) return fail("unknown value type ", *type);
  absl::StatusOr<uint64_t> raw = in_.Little(static_cast<size_t>(size));
  if (!raw.ok()) return fail(raw.status().message());

  // A non-negative integer value, widened; nullopt for floats, bools and negative numbers.
  std::optional<uint64_t> value;
  if (IsInteger(*type)) {
    const int bits = static_cast<int>(size * 8);
    const bool negative = IsSigned(*type) && ((*raw >> (bits - 1)) & 1) != 0;
    if (!negative) value = *raw;
  }
  constexpr uint64_t kU32Max = std::numeric_limits<uint32_t>::max();
  if (key == "general.alignment") {
    if (!value || *value == 0 || *value > (uint64_t{1} << 31) || (*value & (*value - 1)) != 0) {
      return fail(kBadAlignment);
    }
    alignment_ = *value;
  } else if (!value) {
    // Other keys this reader uses are all non-negative integers; anything else is ignored.
  } else if (key == "general.file_type") {
    if (*value <= kU32Max) info_.file_type = static_cast<uint32_t>(*value);
  } else if (key == "split.count") {
    if (*value <= kU32Max) info_.split_count = static_cast<uint32_t>(*value);
  } else if (key == "split.no") {
    if (*value <= kU32Max) info_.split_index = static_cast<uint32_t>(*value);
  } else if (key.size() <= 256 && arch_values_.size() < kMaxArchValues &&
             (absl::EndsWith(key, ".context_length") || absl::EndsWith(key, ".block_count") ||
              absl::EndsWith(key, ".embedding_length"))) {
    arch_values_[key] = *value;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Parser::SkipArray(int depth) {
  if (depth > kMaxGgufArrayDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("arrays nested deeper than ", kMaxGgufArrayDepth, " levels"));
  }
  ASSIGN_OR_RETURN(uint32_t type, in_.U32());
  ASSIGN_OR_RETURN(uint64_t count, in_.U64());
  // Every element takes at least a byte, so a larger count cannot fit in the header.
  if (count > kMaxGgufHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("array of ", count, " elements exceeds the ",
                                                   kMaxGgufHeaderBytes, "-byte header limit"));
  }
  if (uint64_t size = FixedSize(type); size > 0) {
    RETURN_IF_ERROR(in_.Skip(count * size));  // no overflow: both are small
  } else if (type == kString) {
    for (uint64_t i = 0; i < count; ++i) RETURN_IF_ERROR(in_.SkipString());
  } else if (type == kArray) {
    for (uint64_t i = 0; i < count; ++i) RETURN_IF_ERROR(SkipArray(depth + 1).status());
  } else {
    return absl::InvalidArgumentError(absl::StrCat("array of unknown value type ", type));
  }
  return count;
}

absl::Status Parser::ParseTensorInfo() {
  RETURN_IF_ERROR(in_.SkipString());  // the name
  ASSIGN_OR_RETURN(uint32_t n_dims, in_.U32());
  if (n_dims > kMaxGgufDims) {
    return absl::InvalidArgumentError(
        absl::StrCat(n_dims, " dimensions exceed the limit of ", kMaxGgufDims));
  }
  uint64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    ASSIGN_OR_RETURN(uint64_t dim, in_.U64());
    if (__builtin_mul_overflow(elements, dim, &elements)) {
      return absl::InvalidArgumentError("the dimensions hold more than 2^64 elements");
    }
  }
  RETURN_IF_ERROR(in_.U32().status());  // the ggml type
  ASSIGN_OR_RETURN(uint64_t offset, in_.U64());
  if (__builtin_add_overflow(info_.parameter_count, elements, &info_.parameter_count)) {
    return absl::InvalidArgumentError("the tensors hold more than 2^64 elements");
  }
  if (elements > 0) {
    has_data_ = true;
    max_offset_ = std::max(max_offset_, offset);
  }
  return absl::OkStatus();
}

}  // namespace

std::string GgufFileTypeName(uint32_t file_type) {
  // llama.cpp's llama_ftype; 4-6 and 33-35 are no longer written.
  static constexpr const char* kNames[] = {
      "F32",    "F16",    "Q4_0",  "Q4_1",    nullptr,  nullptr,  nullptr,  "Q8_0",
      "Q5_0",   "Q5_1",   "Q2_K",  "Q3_K_S",  "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M",
      "Q5_K_S", "Q5_K_M", "Q6_K",  "IQ2_XXS", "IQ2_XS", "Q2_K_S", "IQ3_XS", "IQ3_XXS",
      "IQ1_S",  "IQ4_NL", "IQ3_S", "IQ3_M",   "IQ2_S",  "IQ2_M",  "IQ4_XS", "IQ1_M",
      "BF16",   nullptr,  nullptr, nullptr,   "TQ1_0",  "TQ2_0",
  };
  if (file_type < std::size(kNames) && kNames[file_type] != nullptr) return kNames[file_type];
  return absl::StrCat("file_type ", file_type);
}

absl::StatusOr<GgufInfo> ParseGguf(absl::string_view bytes, uint64_t file_size,
                                   absl::string_view name) {
  if (bytes.size() > file_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", bytes.size(), " bytes given for a file of ", file_size));
  }
  Cursor in(bytes);
  Parser parser(&in);
  absl::StatusOr<GgufInfo> info = parser.Parse(file_size);
  if (!info.ok()) return Annotate(info.status(), std::string_view(name.data(), name.size()));
  return info;
}

absl::StatusOr<GgufInfo> ReadGgufHeader(const std::string& path) {
  ASSIGN_OR_RETURN(ReadOnlyFile file, ReadOnlyFile::Open(path));
  Cursor in(&file);
  Parser parser(&in);
  absl::StatusOr<GgufInfo> info = parser.Parse(file.size());
  if (!info.ok()) return Annotate(info.status(), path);
  return info;
}

}  // namespace gswarm::common
