// A model folder's metadata (common::ReadModelMetadata) from a config.json the input holds, with
// a model.safetensors.index.json made of the same bytes: both are read from a scratch folder.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "common/model_metadata.h"

namespace {

std::string ScratchDir() {
  static const std::string dir = [] {
    std::string pattern = "/tmp/gswarm_fuzz_metadata_XXXXXX";
    return std::string(::mkdtemp(pattern.data()));
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = ScratchDir();
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::ofstream(dir + "/config.json", std::ios::trunc) << text;
  (void)gswarm::common::ReadModelMetadata(dir);
  std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc) << text;
  (void)gswarm::common::ReadModelMetadata(dir);
  ::unlink((dir + "/model.safetensors.index.json").c_str());
  return 0;
}
