#include "common/safetensors.h"

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/bounded_read.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace gswarm::common {
namespace {

using json = nlohmann::json;

struct DtypeInfo {
  absl::string_view name;
  uint64_t size;
  absl::string_view torch_name;
};

constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 1, "bool"},
    {"U8", 1, "uint8"},
    {"I8", 1, "int8"},
    {"F8_E5M2", 1, "float8_e5m2"},
    {"F8_E4M3", 1, "float8_e4m3fn"},
    {"F8_E8M0", 1, "float8_e8m0fnu"},
    {"I16", 2, "int16"},
    {"U16", 2, "uint16"},
    {"F16", 2, "float16"},
    {"BF16", 2, "bfloat16"},
    {"I32", 4, "int32"},
    {"U32", 4, "uint32"},
    {"F32", 4, "float32"},
    {"C64", 8, "complex64"},
    {"F64", 8, "float64"},
    {"I64", 8, "int64"},
    {"U64", 8, "uint64"},
};

const DtypeInfo* FindDtype(absl::string_view dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.name == dtype) return &info;
  }
  return nullptr;
}

// A tensor name as it can be shown in a message: quoted, escaped, and cut when long.
std::string Quote(absl::string_view name) {
  constexpr size_t kMaxShown = 200;
  std::string shown = absl::CHexEscape(name.substr(0, kMaxShown));
  return absl::StrCat("\"", shown, name.size() > kMaxShown ? "...\"" : "\"");
}

// Largest JSON header a real file could need, in parsed values: ~9 per tensor for 400k tensors.
constexpr JsonLimits kHeaderJsonLimits{.max_depth = 8, .max_values = 4'000'000};

// Reads one entry of the header: {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}.
// `data_size` is the number of bytes after the header. Errors do not carry the file name.
absl::StatusOr<SafetensorsTensor> ParseTensor(const std::string& name, const json& entry,
                                              uint64_t data_size) {
  auto fail = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", Quote(name), ": ", parts...));
  };
  if (!entry.is_object()) {
    return fail("expected an object with dtype, shape and data_offsets, got ", entry.type_name());
  }
  SafetensorsTensor tensor;
  tensor.name = name;

  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) return fail("dtype missing or not a string");
  tensor.dtype = dtype->get<std::string>();

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) return fail("shape missing or not an array");
  tensor.num_elements = 1;
  for (const json& dim : *shape) {
    if (!dim.is_number_unsigned()) return fail("shape must hold non-negative integers");
    uint64_t value = dim.get<uint64_t>();
    tensor.shape.push_back(value);
    if (__builtin_mul_overflow(tensor.num_elements, value, &tensor.num_elements)) {
      return fail(
          "shape [",
          absl::StrJoin(*shape, ", ",
                        [](std::string* out, const json& d) { absl::StrAppend(out, d.dump()); }),
          "] has more than 2^64 elements");
    }
  }

  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return fail("data_offsets missing or not a pair of non-negative integers");
  }
  tensor.begin = (*offsets)[0].get<uint64_t>();
  tensor.end = (*offsets)[1].get<uint64_t>();
  std::string shown_offsets = absl::StrCat("data_offsets [", tensor.begin, ", ", tensor.end, "]");
  if (tensor.begin > tensor.end) return fail(shown_offsets, " begin after end");
  if (tensor.end > data_size) {
    return fail(shown_offsets, " reach past the ", data_size,
                " bytes of tensor data in the file (truncated?)");
  }

  if (const DtypeInfo* info = FindDtype(tensor.dtype); info != nullptr) {
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(tensor.num_elements, info->size, &bytes) ||
        bytes != tensor.end - tensor.begin) {
      return fail("shape [", absl::StrJoin(tensor.shape, ", "), "] of ", tensor.dtype, " needs ",
                  tensor.num_elements, " x ", info->size, " bytes but ", shown_offsets, " hold ",
                  tensor.end - tensor.begin);
    }
  }
  return tensor;
}

uint64_t LoadLittleEndian64(const char* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(p[i]);
  return value;
}

}  // namespace

uint64_t SafetensorsDtypeSize(absl::string_view dtype) {
  const DtypeInfo* info = FindDtype(dtype);
  return info == nullptr ? 0 : info->size;
}

std::string SafetensorsDtypeToTorch(absl::string_view dtype) {
  const DtypeInfo* info = FindDtype(dtype);
  return info == nullptr ? absl::AsciiStrToLower(dtype) : std::string(info->torch_name);
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view bytes,
                                                         uint64_t file_size,
                                                         absl::string_view name) {
  auto fail = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", parts...));
  };
  if (bytes.size() > file_size) {
    return fail(bytes.size(), " bytes given for a file of ", file_size, " bytes");
  }
  if (file_size < 8) {
    return fail("the file is ", file_size,
                " bytes, too short for a safetensors header (truncated or not safetensors)");
  }
  if (bytes.size() < 8) return fail("only ", bytes.size(), " bytes of the header length given");
  SafetensorsHeader header;
  header.header_bytes = LoadLittleEndian64(bytes.data());
  const uint64_t n = header.header_bytes;
  if (n > file_size - 8) {
    return fail("header length ", n, " exceeds the file size ", file_size,
                " (truncated or not safetensors)");
  }
  if (n > kMaxSafetensorsHeaderBytes) {
    return fail("header length ", n, " exceeds the limit of ", kMaxSafetensorsHeaderBytes,
                " bytes (not safetensors?)");
  }
  if (bytes.size() - 8 < n) {
    return fail("the header needs ", 8 + n, " bytes but only ", bytes.size(), " were given");
  }
  const uint64_t data_size = file_size - 8 - n;

  ASSIGN_OR_RETURN(json root,
                   ParseJsonBounded(bytes.substr(8, n), absl::StrCat(name, ": safetensors header"),
                                    kHeaderJsonLimits));
  if (!root.is_object()) {
    return fail("the header is a JSON ", root.type_name(), ", not an object (not safetensors?)");
  }
  for (auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return fail("__metadata__ must be an object (got ", value.type_name(), ")");
      }
      for (auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string()) {
          return fail("__metadata__ value ", Quote(meta_key), " must be a string (got ",
                      meta_value.type_name(), ")");
        }
        header.metadata.emplace(meta_key, meta_value.get<std::string>());
      }
      continue;
    }
    absl::StatusOr<SafetensorsTensor> tensor = ParseTensor(key, value, data_size);
    if (!tensor.ok()) return fail(tensor.status().message());
    if (__builtin_add_overflow(header.parameter_count, tensor->num_elements,
                               &header.parameter_count)) {
      return fail("the tensors hold more than 2^64 elements");
    }
    header.tensors.push_back(*std::move(tensor));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path) {
  ASSIGN_OR_RETURN(ReadOnlyFile file, ReadOnlyFile::Open(path));
  // The length first: ParseSafetensorsHeader rejects a bad one before anything big is read.
  std::string bytes(file.size() < 8 ? static_cast<size_t>(file.size()) : 8, '\0');
  RETURN_IF_ERROR(file.ReadAt(0, bytes.size(), bytes.data()));
  if (bytes.size() == 8) {
    uint64_t n = LoadLittleEndian64(bytes.data());
    if (n <= file.size() - 8 && n <= kMaxSafetensorsHeaderBytes) {
      bytes.resize(8 + static_cast<size_t>(n));
      RETURN_IF_ERROR(file.ReadAt(8, static_cast<size_t>(n), bytes.data() + 8));
    }
  }
  return ParseSafetensorsHeader(bytes, file.size(), path);
}

}  // namespace gswarm::common
