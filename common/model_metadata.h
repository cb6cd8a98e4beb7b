#pragma once

// Facts about a model read from its own files (DESIGN.md, "Models"): config.json, the headers of
// its safetensors files, or the header of its GGUF file. Weights are never read, only headers,
// and every header is bounds-checked (see safetensors.h and gguf.h).

#include <string>

#include "absl/status/statusor.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::common {

// Reads the model in `model_dir` (symlinks followed, so a Hugging Face cache snapshot works).
// Hidden files and partial downloads (*.part, *.incomplete) are ignored. Only the top level of
// the directory is looked at.
//
// config.json, when present, gives architecture (architectures[0], else model_type), vocab_size,
// context_length (max_position_embeddings, n_positions, max_seq_len, seq_length), num_layers
// (num_hidden_layers, n_layer, num_layers, n_layers), hidden_size (hidden_size, n_embd, d_model)
// and dtype (torch_dtype, dtype), each from the first of its keys that holds a usable value (a
// non-negative integer; a string); a field with none at the top level is looked up in
// "text_config" (multimodal configs).
//
// The weights set format, parameter_count and, where config.json lacks them, the other fields:
//   - safetensors: the shards named by model.safetensors.index.json when it exists, else every
//     *.safetensors file. dtype, when config.json has none, is the PyTorch name of the dtype that
//     holds the most parameters ("bfloat16").
//   - gguf: the first *.gguf by name that is not an mmproj-* projector (the parameter counts of
//     all files of a gguf-split set are added). Its header wins over config.json; dtype is the
//     file type ("Q4_K_M").
//   - pytorch: pytorch_model*.bin, *.pt, *.pth; nothing is read from them (parameter_count 0).
// A directory with none of these gives format "" and the config.json fields, not an error.
//
// Errors: NOT_FOUND when `model_dir` does not exist; an unreadable or malformed config.json, index
// or weights header (or a shard the index names but the directory lacks) gives an error that
// names the file.
//
// Blocking disk I/O (a few MB at most, for a large GGUF vocabulary): call it from a worker, not a
// gRPC callback. Thread-safe: it shares no state.
absl::StatusOr<v1::ModelMetadata> ReadModelMetadata(const std::string& model_dir);

}  // namespace gswarm::common
