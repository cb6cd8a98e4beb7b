#include "common/model_metadata.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_read.h"
#include "common/gguf.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace gswarm::common {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxConfigBytes = uint64_t{16} << 20;
// DeepSeek-V3's index is 9 MB.
constexpr uint64_t kMaxIndexBytes = uint64_t{64} << 20;
constexpr size_t kMaxShards = 100'000;
constexpr char kIndexName[] = "model.safetensors.index.json";

std::string Join(absl::string_view dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

// The first of `keys` with a usable value (as `get` decides) at the top level of `config`, else
// in its "text_config" (multimodal models keep the language model's fields there).
template <typename T, typename Get>
std::optional<T> Lookup(const json& config, std::initializer_list<const char*> keys, Get get) {
  const json* scopes[] = {&config, nullptr};
  if (auto text = config.find("text_config"); text != config.end() && text->is_object()) {
    scopes[1] = &*text;
  }
  for (const json* scope : scopes) {
    if (scope == nullptr) continue;
    for (const char* key : keys) {
      auto it = scope->find(key);
      if (it == scope->end()) continue;
      if (std::optional<T> value = get(*it)) return value;
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> LookupUint(const json& config, std::initializer_list<const char*> keys) {
  return Lookup<uint64_t>(config, keys, [](const json& v) -> std::optional<uint64_t> {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    return std::nullopt;
  });
}

// A string, or the first element of an array of strings ("architectures": ["LlamaForCausalLM"]).
std::optional<std::string> LookupString(const json& config,
                                        std::initializer_list<const char*> keys) {
  return Lookup<std::string>(config, keys, [](const json& v) -> std::optional<std::string> {
    const json* s = v.is_array() && !v.empty() ? &v[0] : &v;
    if (s->is_string() && !s->get_ref<const std::string&>().empty()) return s->get<std::string>();
    return std::nullopt;
  });
}

absl::Status ApplyConfig(const std::string& path, v1::ModelMetadata* metadata) {
  ASSIGN_OR_RETURN(ReadOnlyFile file, ReadOnlyFile::Open(path));
  ASSIGN_OR_RETURN(std::string text, file.ReadAll(kMaxConfigBytes));
  ASSIGN_OR_RETURN(json config, ParseJsonBounded(text, path));
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a JSON ", config.type_name(), ", not an object"));
  }
  if (auto v = LookupString(config, {"architectures", "model_type"})) {
    metadata->set_architecture(*v);
  }
  if (auto v = LookupUint(config, {"vocab_size"})) metadata->set_vocab_size(*v);
  if (auto v = LookupUint(
          config, {"max_position_embeddings", "n_positions", "max_seq_len", "seq_length"})) {
    metadata->set_context_length(*v);
  }
  if (auto v = LookupUint(config, {"num_hidden_layers", "n_layer", "num_layers", "n_layers"});
      v && *v <= std::numeric_limits<uint32_t>::max()) {
    metadata->set_num_layers(static_cast<uint32_t>(*v));
  }
  if (auto v = LookupUint(config, {"hidden_size", "n_embd", "d_model"})) {
    metadata->set_hidden_size(*v);
  }
  if (auto v = LookupString(config, {"torch_dtype", "dtype"})) metadata->set_dtype(*v);
  return absl::OkStatus();
}

// The distinct shard file names in an index's weight_map.
absl::StatusOr<std::set<std::string>> ReadIndexShards(const std::string& path) {
  ASSIGN_OR_RETURN(ReadOnlyFile file, ReadOnlyFile::Open(path));
  ASSIGN_OR_RETURN(std::string text, file.ReadAll(kMaxIndexBytes));
  ASSIGN_OR_RETURN(json index,
                   ParseJsonBounded(text, path, {.max_depth = 16, .max_values = 4'000'000}));
  auto fail = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts...));
  };
  auto map = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || map == index.end() || !map->is_object() || map->empty()) {
    return fail("no weight_map object naming the shards");
  }
  std::set<std::string> shards;
  for (const json& shard : *map) {
    if (!shard.is_string()) return fail("a weight_map value is a ", shard.type_name());
    const std::string& name = shard.get_ref<const std::string&>();
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
        name.find('\0') != std::string::npos) {
      return fail("shard \"", absl::CHexEscape(name.substr(0, 200)),
                  "\" is not a file name in the model directory");
    }
    shards.insert(name);
    if (shards.size() > kMaxShards) return fail("more than ", kMaxShards, " shards");
  }
  return shards;
}

absl::Status ApplySafetensors(const std::string& dir, const std::vector<std::string>& files,
                              bool has_index, v1::ModelMetadata* metadata) {
  std::vector<std::string> shards = files;
  const std::string index_path = Join(dir, kIndexName);
  if (has_index) {
    ASSIGN_OR_RETURN(std::set<std::string> named, ReadIndexShards(index_path));
    shards.assign(named.begin(), named.end());
  }
  uint64_t total = 0;
  std::map<std::string, uint64_t> by_dtype;
  for (const std::string& shard : shards) {
    const std::string path = Join(dir, shard);
    absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(path);
    if (has_index && absl::IsNotFound(header.status())) {
      return absl::NotFoundError(absl::StrCat(index_path, " names shard ", shard,
                                              ", which is missing (incomplete download?)"));
    }
    if (!header.ok()) return header.status();
    for (const SafetensorsTensor& tensor : header->tensors) {
      if (__builtin_add_overflow(total, tensor.num_elements, &total)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": the model holds more than 2^64 elements"));
      }
      by_dtype[tensor.dtype] += tensor.num_elements;  // <= total: cannot overflow
    }
  }
  metadata->set_format("safetensors");
  metadata->set_parameter_count(total);
  if (metadata->dtype().empty() && !by_dtype.empty()) {
    auto most = std::max_element(by_dtype.begin(), by_dtype.end(),
                                 [](const auto& a, const auto& b) { return a.second < b.second; });
    metadata->set_dtype(SafetensorsDtypeToTorch(most->first));
  }
  return absl::OkStatus();
}

// For a gguf-split file name "<stem>-00001-of-00003.gguf", the name without its 5 index digits;
// nullopt for any other name.
std::optional<std::string> SplitSetKey(absl::string_view name) {
  constexpr absl::string_view kShape = "-NNNNN-of-NNNNN.gguf";
  if (name.size() < kShape.size()) return std::nullopt;
  absl::string_view tail = name.substr(name.size() - kShape.size());
  for (size_t i = 0; i < kShape.size(); ++i) {
    bool ok = kShape[i] == 'N' ? absl::ascii_isdigit(tail[i]) : tail[i] == kShape[i];
    if (!ok) return std::nullopt;
  }
  return absl::StrCat(name.substr(0, name.size() - kShape.size() + 1), tail.substr(6));
}

absl::Status ApplyGguf(const std::string& dir, const std::vector<std::string>& files,
                       v1::ModelMetadata* metadata) {
  // A multimodal repository ships a vision projector next to the model; it is not the model.
  std::vector<std::string> models;
  for (const std::string& name : files) {
    if (!absl::StartsWithIgnoreCase(name, "mmproj")) models.push_back(name);
  }
  if (models.empty()) models = files;

  ASSIGN_OR_RETURN(GgufInfo info, ReadGgufHeader(Join(dir, models[0])));
  uint64_t parameters = info.parameter_count;
  std::optional<std::string> set = SplitSetKey(models[0]);
  if (info.split_count > 1 && set) {
    for (size_t i = 1; i < models.size(); ++i) {
      if (SplitSetKey(models[i]) != set) continue;
      const std::string path = Join(dir, models[i]);
      ASSIGN_OR_RETURN(GgufInfo part, ReadGgufHeader(path));
      if (__builtin_add_overflow(parameters, part.parameter_count, &parameters)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": the model holds more than 2^64 elements"));
      }
    }
  }

  metadata->set_format("gguf");
  metadata->set_parameter_count(parameters);
  if (info.file_type) metadata->set_dtype(GgufFileTypeName(*info.file_type));
  if (!info.architecture.empty()) metadata->set_architecture(info.architecture);
  if (info.vocab_size > 0) metadata->set_vocab_size(info.vocab_size);
  if (info.context_length > 0) metadata->set_context_length(info.context_length);
  if (info.block_count > 0 && info.block_count <= std::numeric_limits<uint32_t>::max()) {
    metadata->set_num_layers(static_cast<uint32_t>(info.block_count));
  }
  if (info.embedding_length > 0) metadata->set_hidden_size(info.embedding_length);
  return absl::OkStatus();
}

bool IsPyTorchWeights(absl::string_view name) {
  return (absl::StartsWith(name, "pytorch_model") && absl::EndsWith(name, ".bin")) ||
         absl::EndsWith(name, ".pt") || absl::EndsWith(name, ".pth");
}

}  // namespace

absl::StatusOr<v1::ModelMetadata> ReadModelMetadata(const std::string& model_dir) {
  struct stat st;
  if (::stat(model_dir.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("model directory ", model_dir));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model directory ", model_dir, ": not a directory"));
  }

  bool has_config = false;
  bool has_index = false;
  std::vector<std::string> safetensors;
  std::vector<std::string> gguf;
  bool has_pytorch = false;
  std::error_code ec;
  for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || absl::EndsWith(name, ".part") ||
        absl::EndsWith(name, ".incomplete")) {
      continue;
    }
    if (name == "config.json") {
      has_config = true;
    } else if (name == kIndexName) {
      has_index = true;
    } else if (absl::EndsWith(name, ".safetensors")) {
      safetensors.push_back(name);
    } else if (absl::EndsWith(name, ".gguf")) {
      gguf.push_back(name);
    } else if (IsPyTorchWeights(name)) {
      has_pytorch = true;
    }
  }
  if (ec) {
    return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot list model directory ", model_dir));
  }
  std::sort(safetensors.begin(), safetensors.end());
  std::sort(gguf.begin(), gguf.end());

  v1::ModelMetadata metadata;
  if (has_config) RETURN_IF_ERROR(ApplyConfig(Join(model_dir, "config.json"), &metadata));
  if (has_index || !safetensors.empty()) {
    RETURN_IF_ERROR(ApplySafetensors(model_dir, safetensors, has_index, &metadata));
  } else if (!gguf.empty()) {
    RETURN_IF_ERROR(ApplyGguf(model_dir, gguf, &metadata));
  } else if (has_pytorch) {
    metadata.set_format("pytorch");
  }
  return metadata;
}

}  // namespace gswarm::common
