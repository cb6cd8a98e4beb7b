// Engine command templates: a command line (split as client.engines' strings are), validated as
// an engine spec and rendered with every placeholder set, the same for a sleep call; the second
// line of the input is the model name substituted, which must stay one argument.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/engine_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using gswarm::common::EngineSpec;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string_view name = "model";
  if (const size_t newline = text.find('\n'); newline != std::string_view::npos) {
    name = text.substr(newline + 1);
    text = text.substr(0, newline);
  }
  absl::StatusOr<std::vector<std::string>> argv = gswarm::common::SplitCommandLine(text);
  if (!argv.ok()) return 0;
  EngineSpec spec;
  spec.name = "fuzz";
  spec.command = *argv;
  spec.sleep = {std::string(text)};
  spec.wake = {"POST /wake_up"};
  if (!gswarm::common::ValidateEngineSpec(spec).ok()) return 0;
  gswarm::common::EngineVars vars;
  vars.model_path = "/models/m";
  vars.model_file = "/models/m/model.gguf";
  vars.model_name = std::string(name);
  vars.host = "127.0.0.1";
  vars.port = 8000;
  vars.gpu = "0";
  vars.instance_id = "inst-1";
  absl::StatusOr<std::vector<std::string>> rendered = gswarm::common::RenderCommand(spec, vars);
  if (rendered.ok() && rendered->size() != spec.command.size()) std::abort();  // argv, no split
  (void)gswarm::common::RenderCalls(spec, "sleep", vars);
  (void)gswarm::common::RenderEnv(spec, vars);
  return 0;
}
