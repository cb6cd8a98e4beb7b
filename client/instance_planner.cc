// CommandRunner::PlanInstance: what a serve command becomes on this node — the engine's spec
// rendered for the model's files, port, GPU and limits (common/engine_spec.h).

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/command_runner.h"
#include "common/status.h"

namespace gswarm::client {

absl::StatusOr<InstanceSpec> CommandRunner::PlanInstance(const v1::ServeCommand& serve) const {
  const std::string engine = serve.engine().empty() ? options_.default_engine : serve.engine();
  auto found = options_.engines.find(engine);
  if (found == options_.engines.end()) {
    std::string known;
    for (const auto& [name, spec] : options_.engines)
      absl::StrAppend(&known, known.empty() ? "" : ", ", name);
    return absl::NotFoundError(absl::StrCat("engine \"", engine,
                                            "\" is not configured on this node (known: ", known,
                                            "; add it under client.engines)"));
  }
  const common::EngineSpec& engine_spec = found->second;
  RETURN_IF_ERROR(common::FindExecutable(engine_spec).status());

  const std::string& name = serve.model_name();
  std::error_code ec;
  absl::StatusOr<std::string> model_path =
      serve.source_tier() == "dram" && std::filesystem::is_directory(dram_->ModelDir(name), ec)
          ? absl::StatusOr<std::string>(dram_->ModelDir(name))
          : disk_->Locate(name);
  if (!model_path.ok()) return model_path.status();
  // Single-file engines (llama-server) take the weights file: the first GGUF that is not a
  // multimodal projector.
  std::string model_file;
  std::vector<std::string> ggufs;
  for (const auto& entry : std::filesystem::directory_iterator(*model_path, ec)) {
    const std::string file = entry.path().filename().string();
    if (absl::EndsWith(file, ".gguf") && !absl::StartsWith(file, "mmproj")) {
      ggufs.push_back(entry.path().string());
    }
  }
  std::sort(ggufs.begin(), ggufs.end());
  if (!ggufs.empty()) model_file = ggufs.front();

  int port = static_cast<int>(serve.port());
  if (port == 0) {
    ASSIGN_OR_RETURN(port, InstanceSupervisor::FreePort());
  } else if (InstanceSupervisor::PortInUse(port)) {
    return absl::FailedPreconditionError(
        absl::StrCat("port ", port, " is in use on this node (pick another or omit it)"));
  }
  common::EngineVars vars;
  vars.instance_id = serve.instance_id();
  vars.model_path = *model_path;
  vars.model_file = model_file;
  vars.model_name = name;
  vars.host = options_.engine_host;
  vars.port = port;
  vars.gpu = serve.gpu_device() == "cpu" ? "" : serve.gpu_device().substr(3);
  vars.gpu_memory_utilization = options_.gpu_memory_utilization;
  vars.max_concurrent_requests = options_.max_concurrent_requests;
  InstanceSpec spec;
  ASSIGN_OR_RETURN(spec.argv, common::RenderCommand(engine_spec, vars));
  for (const std::string& arg : serve.extra_args()) spec.argv.push_back(arg);
  spec.id = serve.instance_id();
  spec.model_name = name;
  spec.engine = engine;
  ASSIGN_OR_RETURN(spec.env, common::RenderEnv(engine_spec, vars));
  ASSIGN_OR_RETURN(spec.stop_argv, common::RenderStopCommand(engine_spec, vars));
  spec.gpu_device = serve.gpu_device();
  spec.host = vars.host;
  spec.port = port;
  spec.health_path = engine_spec.health_path;
  spec.ready_timeout = absl::Seconds(engine_spec.ready_timeout_s);
  spec.source_tier = *model_path == dram_->ModelDir(name) ? "dram" : "disk";
  spec.managed_by = serve.managed_by();
  for (int level = 1; level <= common::MaxSleepLevel(engine_spec); ++level) {
    vars.sleep_level = level;
    ASSIGN_OR_RETURN(std::vector<common::EngineCall> calls,
                     common::RenderCalls(engine_spec, "sleep", vars));
    spec.sleep.push_back(std::move(calls));
  }
  ASSIGN_OR_RETURN(spec.wake, common::RenderCalls(engine_spec, "wake", vars));
  ASSIGN_OR_RETURN(spec.reload, common::RenderCalls(engine_spec, "reload", vars));
  return spec;
}

}  // namespace gswarm::client
