#include "host/api_handler.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "common/units.h"
#include "google/protobuf/util/json_util.h"

namespace gswarm::host {

ApiHandler::ApiHandler(Options options, NodeRegistry* nodes, Registry* registry,
                       Orchestrator* orchestrator, InstanceManager* instances)
    : options_(std::move(options)),
      nodes_(nodes),
      registry_(registry),
      orchestrator_(orchestrator),
      instances_(instances) {}

absl::StatusOr<v1::HealthResponse> ApiHandler::Health(const v1::HealthRequest&) const {
  v1::HealthResponse response;
  response.set_status("ok");
  response.set_version(GSWARM_VERSION);
  response.set_uptime_s(absl::ToDoubleSeconds(absl::Now() - options_.started_at));
  response.set_auth_required(options_.auth_required);
  response.set_models(static_cast<uint32_t>(registry_->ListModels().size()));
  uint32_t running = 0;
  for (const v1::Instance& instance : instances_->List()) {
    running += IsActive(StateOf(instance)) ? 1 : 0;
  }
  response.set_instances(running);
  v1::ClusterMemory& memory = *response.mutable_memory();
  for (const v1::NodeInfo& node : nodes_->List()) {
    response.set_nodes_total(response.nodes_total() + 1);
    if (node.state() != "online") continue;
    response.set_nodes_online(response.nodes_online() + 1);
    const v1::MemoryUsage& m = node.memory();
    memory.set_dram_total_bytes(memory.dram_total_bytes() + m.dram_total_bytes());
    memory.set_dram_available_bytes(memory.dram_available_bytes() + m.dram_available_bytes());
    memory.set_disk_total_bytes(memory.disk_total_bytes() + m.disk_total_bytes());
    memory.set_disk_free_bytes(memory.disk_free_bytes() + m.disk_free_bytes());
    memory.set_dram_tier_used_bytes(memory.dram_tier_used_bytes() + m.dram_tier_used_bytes());
    memory.set_dram_tier_budget_bytes(memory.dram_tier_budget_bytes() + m.dram_tier_budget_bytes());
    for (const v1::GpuInfo& gpu : m.gpus()) {
      memory.set_gpu_count(memory.gpu_count() + 1);
      memory.set_gpu_total_bytes(memory.gpu_total_bytes() + gpu.memory_total_bytes());
      memory.set_gpu_used_bytes(memory.gpu_used_bytes() + gpu.memory_used_bytes());
    }
  }
  return response;
}

absl::StatusOr<v1::ListNodesResponse> ApiHandler::ListNodes(
    const v1::ListNodesRequest& request) const {
  v1::ListNodesResponse response;
  for (v1::NodeInfo& node : nodes_->List()) {
    if (request.online_only() && node.state() != "online") continue;
    *response.add_nodes() = std::move(node);
  }
  return response;
}

absl::StatusOr<v1::GetConfigResponse> ApiHandler::GetConfig(const v1::GetConfigRequest&) const {
  v1::GetConfigResponse response;
  response.set_path(options_.config.path);
  const std::string json = common::ConfigToJson(options_.config)
                               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  google::protobuf::util::JsonParseOptions parse;
  if (!google::protobuf::util::JsonStringToMessage(json, response.mutable_config(), parse).ok()) {
    return absl::InternalError("the effective config could not be encoded");
  }
  return response;
}

absl::StatusOr<v1::GetMemoryResponse> ApiHandler::GetMemory(
    const v1::GetMemoryRequest& request) const {
  if (!request.view().empty() && request.view() != "models" && request.view() != "dram" &&
      request.view() != "gpu" && request.view() != "nodes") {
    return absl::InvalidArgumentError(absl::StrCat("memory view \"", request.view(),
                                                   "\" is not one of models, dram, gpu, nodes"));
  }
  v1::GetMemoryResponse response;
  v1::GpuMemorySummary& gpu = *response.mutable_memory_usage()->mutable_gpu_memory();
  bool found = request.node().empty();
  for (const v1::NodeInfo& node : nodes_->List()) {
    if (!request.node().empty() && node.node_id() != request.node()) continue;
    found = true;
    v1::NodeMemory& entry = *response.add_nodes();
    entry.set_node_id(node.node_id());
    entry.set_state(node.state());
    *entry.mutable_memory() = node.memory();
    if (node.state() != "online") continue;
    for (const v1::GpuInfo& device : node.memory().gpus()) {
      gpu.set_total_bytes(gpu.total_bytes() + device.memory_total_bytes());
      gpu.set_used_bytes(gpu.used_bytes() + device.memory_used_bytes());
      gpu.set_free_bytes(gpu.free_bytes() + device.memory_free_bytes());
      *gpu.add_devices() = device;
    }
  }
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("node \"", request.node(), "\" is unknown (see `gswarm nodes`)"));
  }
  std::set<std::string> in_dram;
  for (const v1::Model& model : registry_->ListModels()) {
    for (v1::Replica replica : model.replicas()) {
      if (replica.tier() != "dram") continue;
      if (!request.node().empty() && replica.node_id() != request.node()) continue;
      if (replica.state() == "ready" && nodes_->GetOnline(replica.node_id()).has_value()) {
        in_dram.insert(model.name());
      }
      replica.set_model_name(model.name());
      *response.add_dram() = std::move(replica);
    }
  }
  for (const std::string& name : in_dram) response.add_dram_models(name);
  for (const v1::Instance& instance : instances_->List("", request.node())) {
    if (!IsActive(StateOf(instance))) continue;
    response.add_gpu_models(instance.id());
    v1::Instance* listed = response.add_gpu();
    *listed = instance;
    Describe(listed);
  }
  response.mutable_memory_usage()->set_gpu_models(static_cast<uint32_t>(response.gpu_size()));
  response.mutable_memory_usage()->set_dram_models(static_cast<uint32_t>(in_dram.size()));
  return response;
}

v1::Model ApiHandler::WithState(v1::Model model) const {
  bool available = false;
  for (v1::Replica& replica : *model.mutable_replicas()) {
    replica.set_model_name(model.name());
    available |= replica.state() == "ready" && nodes_->GetOnline(replica.node_id()).has_value();
  }
  bool loaded = false;
  for (v1::Instance& instance : instances_->Active(model.name())) {
    loaded |= instance.state() == "ready";
    Describe(&instance);
    *model.add_instances() = std::move(instance);
  }
  model.set_available(available);
  model.set_loaded(loaded);
  model.set_can_load(available);
  model.set_state(loaded ? "loaded" : available ? "available" : "offline");
  return model;
}

absl::StatusOr<v1::Job> ApiHandler::Await(const v1::Job& job, absl::Duration timeout) const {
  ASSIGN_OR_RETURN(v1::Job done, orchestrator_->WaitJob(job.id(), absl::Now() + timeout));
  if (!IsTerminal(JobStateOf(done))) {
    return absl::DeadlineExceededError(absl::StrCat(
        job.kind(), " job ", job.id(), " on node ", job.node_id(), " is still running after ",
        absl::FormatDuration(timeout), "; follow it with `gswarm jobs` or GET /jobs/", job.id()));
  }
  return EndedJob(done);
}

absl::StatusOr<v1::Job> EndedJob(const v1::Job& done) {
  if (JobStateOf(done) == JobState::kSucceeded) return done;
  return absl::AbortedError(absl::StrCat(done.kind(), " of \"", done.model_name(), "\" on node ",
                                         done.node_id(), " ", done.state(), ": ", done.message(),
                                         " (job ", done.id(), ")"));
}

absl::StatusOr<v1::RegisterModelResponse> ApiHandler::RegisterModel(
    const v1::RegisterModelRequest& request) const {
  RETURN_IF_ERROR(ValidateModelName(request.model_name()));
  std::string source = request.source_url();
  if (source.empty() && !request.hf_path().empty()) source = "hf://" + request.hf_path();
  const std::string location =
      request.cache_location().empty() ? "primary" : request.cache_location();
  if (location != "custom" && !common::IsDiskLocationName(location)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cache_location \"", location,
        "\" is not primary, secondary, custom or another name of client.disk_locations"));
  }
  if (location == "custom" && (request.cache_path().empty() || request.cache_path()[0] != '/')) {
    return absl::InvalidArgumentError(
        "cache_location \"custom\" needs cache_path, an absolute directory on the node");
  }
  // At most an exabyte: beyond that a double's MiB no longer converts to bytes.
  if (!(request.estimated_size_mb() >= 0 && request.estimated_size_mb() <= 1e12)) {
    return absl::InvalidArgumentError(
        absl::StrCat("estimated_size_mb must be a number of MiB from 0 to 1e12, got ",
                     request.estimated_size_mb()));
  }
  const auto required = static_cast<uint64_t>(request.estimated_size_mb() * (1 << 20));

  absl::StatusOr<v1::Model> existing = registry_->GetModel(request.model_name());
  if (existing.ok() && existing->source_url() != source) {
    return absl::AlreadyExistsError(absl::StrCat("model \"", request.model_name(),
                                                 "\" is already registered from ",
                                                 existing->source_url(), ": remove it first"));
  }
  if (!existing.ok()) {
    if (!absl::IsNotFound(existing.status())) return existing.status();
    v1::Model model;
    model.set_name(request.model_name());
    model.set_type(request.type().empty() ? "llm" : request.type());
    constexpr absl::string_view kTypes[] = {"llm", "diffusion", "vision", "audio", "multimodal"};
    if (std::find(std::begin(kTypes), std::end(kTypes), model.type()) == std::end(kTypes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "type \"", model.type(), "\" is not one of llm, diffusion, vision, audio, multimodal"));
    }
    model.set_source_url(source);
    model.set_revision(request.revision());
    model.set_size_bytes(required);
    model.set_cache_location(location);
    if (location == "custom") model.set_cache_path(request.cache_path());
    *model.mutable_created_at() = common::ToTimestamp(absl::Now());
    RETURN_IF_ERROR(registry_->PutModel(model));
  }

  v1::RegisterModelResponse response;
  ASSIGN_OR_RETURN(v1::Model stored, registry_->GetModel(request.model_name()));
  *response.mutable_model() = WithState(std::move(stored));

  // Space on the node that would take it: the one asked for, else the one with most free disk.
  v1::SpaceCheck& space = *response.mutable_space_check();
  space.set_required_bytes(required);
  std::optional<v1::NodeInfo> best;
  for (const v1::NodeInfo& node : nodes_->List()) {
    if (node.state() != "online") continue;
    if (!request.node().empty() && node.node_id() != request.node()) continue;
    if (!best || node.memory().disk_free_bytes() > best->memory().disk_free_bytes()) best = node;
  }
  if (!best) {
    space.set_cache_path(location == "custom" ? request.cache_path() : "");
    space.set_message("no node online to check free space on");
    return response;
  }
  space.set_cache_path(location == "custom" ? request.cache_path() : best->memory().disk_path());
  uint64_t free = best->memory().disk_free_bytes();
  // The location's own figures where the node reports them: its room below the high watermark,
  // less what running downloads have promised.
  for (const v1::DiskLocation& place : best->memory().disk_locations()) {
    if (place.name() != location) continue;
    space.set_cache_path(place.path());
    free = place.room_bytes();
  }
  space.set_free_bytes(free);
  space.set_sufficient(free >= required);
  space.set_warning(space.sufficient() &&
                    (free - required) < best->memory().disk_total_bytes() / 10);
  space.set_message(absl::StrCat(
      "node ", best->node_id(), ": ", free >> 20, " MiB free, ", required >> 20, " MiB needed",
      space.sufficient() ? (space.warning() ? " (leaves under 10% of the disk free)" : "")
                         : " (not enough space)"));
  return response;
}

absl::StatusOr<v1::ListModelsResponse> ApiHandler::ListModels(
    const v1::ListModelsRequest& request) const {
  v1::ListModelsResponse response;
  for (v1::Model& model : registry_->ListModels()) {
    v1::Model with_state = WithState(std::move(model));
    if (!request.state().empty() && with_state.state() != request.state()) continue;
    if (!request.node().empty() || !request.tier().empty()) {
      bool match = false;
      for (const v1::Replica& replica : with_state.replicas()) {
        match |= (request.node().empty() || replica.node_id() == request.node()) &&
                 (request.tier().empty() || replica.tier() == request.tier());
      }
      if (!match) continue;
    }
    // The per-file list is for `show` (GetModel); a listing stays short.
    with_state.clear_files();
    *response.add_models() = std::move(with_state);
  }
  return response;
}

absl::StatusOr<v1::Model> ApiHandler::GetModel(const v1::GetModelRequest& request) const {
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  return WithState(std::move(model));
}

absl::StatusOr<v1::DeleteModelResponse> ApiHandler::DeleteModel(
    const v1::DeleteModelRequest& request) const {
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  if (std::vector<v1::Instance> serving = instances_->Active(model.name(), request.node());
      !serving.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model \"", model.name(), "\" is served by instance ", serving.front().id(), " on node ",
        serving.front().node_id(), ": stop it first (gswarm stop ", serving.front().id(), ")"));
  }
  v1::DeleteModelResponse response;
  int kept = 0;
  for (const v1::Replica& replica : model.replicas()) {
    if ((!request.node().empty() && replica.node_id() != request.node()) ||
        (!request.tier().empty() && replica.tier() != request.tier())) {
      ++kept;
      continue;
    }
    if (!replica.in_place()) {
      std::optional<v1::NodeInfo> node = nodes_->GetOnline(replica.node_id());
      if (!node.has_value()) {
        if (!request.force()) {
          return absl::FailedPreconditionError(
              absl::StrCat("node ", replica.node_id(), " holds a copy of \"", request.model_name(),
                           "\" but is offline: bring it back, or pass force to forget that copy"));
        }
      } else {
        v1::Command command;
        command.mutable_delete_()->set_model_name(request.model_name());
        command.mutable_delete_()->set_tier(replica.tier());
        ASSIGN_OR_RETURN(v1::Job job,
                         orchestrator_->RunOnNode(replica.node_id(), request.model_name(), "delete",
                                                  std::move(command)));
        RETURN_IF_ERROR(Await(job, absl::Minutes(2)).status());
      }
    }
    // In-place copies (the Hugging Face cache) are forgotten, never deleted.
    RETURN_IF_ERROR(
        registry_->DeleteReplica(request.model_name(), replica.node_id(), replica.tier()));
    *response.add_removed() = replica;
  }
  if (kept == 0) RETURN_IF_ERROR(registry_->DeleteModel(request.model_name()));
  return response;
}

absl::StatusOr<v1::JobResponse> ApiHandler::Download(const v1::DownloadRequest& request) const {
  v1::JobResponse response;
  ASSIGN_OR_RETURN(*response.mutable_job(), orchestrator_->Download(request));
  if (request.wait()) {
    ASSIGN_OR_RETURN(*response.mutable_job(), Await(response.job(), absl::Hours(24)));
  }
  return response;
}

absl::StatusOr<v1::DiscoverResponse> ApiHandler::Discover(
    const v1::DiscoverRequest& request) const {
  std::set<std::string> before;
  for (const v1::Model& model : registry_->ListModels()) before.insert(model.name());
  ASSIGN_OR_RETURN(std::vector<v1::Job> jobs, orchestrator_->Discover(request.node()));
  for (const v1::Job& job : jobs) RETURN_IF_ERROR(Await(job, absl::Minutes(5)).status());
  v1::DiscoverResponse response;
  std::set<std::string> after;
  for (v1::Model& model : registry_->ListModels()) {
    after.insert(model.name());
    if (!before.contains(model.name())) response.add_added(model.name());
    *response.add_models() = WithState(std::move(model));
  }
  for (const std::string& name : before) {
    if (!after.contains(name)) response.add_removed(name);
  }
  return response;
}

absl::StatusOr<v1::ValidateModelResponse> ApiHandler::ValidateModel(
    const v1::ValidateModelRequest& request) const {
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  v1::ValidateModelResponse response;
  response.set_model_name(model.name());
  response.set_valid(true);
  int checked_replicas = 0;
  for (const v1::Replica& replica : model.replicas()) {
    if ((!request.node().empty() && replica.node_id() != request.node()) ||
        (!request.tier().empty() && replica.tier() != request.tier())) {
      continue;
    }
    auto problem = [&](const std::string& path, const std::string& text) {
      v1::FileProblem& p = *response.add_problems();
      p.set_node_id(replica.node_id());
      p.set_path(path);
      p.set_problem(text);
      response.set_valid(false);
    };
    std::optional<v1::NodeInfo> node = nodes_->GetOnline(replica.node_id());
    if (!node.has_value()) {
      problem("", "node is offline: cannot check");
      continue;
    }
    v1::Command command;
    command.mutable_validate()->set_model_name(model.name());
    command.mutable_validate()->set_tier(replica.tier());
    command.mutable_validate()->set_full(request.full());
    ASSIGN_OR_RETURN(v1::Job job, orchestrator_->RunOnNode(replica.node_id(), model.name(),
                                                           "validate", std::move(command)));
    ASSIGN_OR_RETURN(v1::Job done, orchestrator_->WaitJob(job.id(), absl::Now() + absl::Hours(1)));
    ++checked_replicas;
    response.set_files_checked(response.files_checked() + done.files_done());
    if (JobStateOf(done) == JobState::kSucceeded) continue;
    // The agent reports one "path: problem" per line.
    for (absl::string_view line : absl::StrSplit(done.message(), '\n')) {
      const size_t colon = line.find(": ");
      if (colon == absl::string_view::npos) {
        problem("", std::string(line));
      } else {
        problem(std::string(line.substr(0, colon)), std::string(line.substr(colon + 2)));
      }
    }
  }
  if (checked_replicas == 0 && response.problems().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", model.name(), "\" has no copy to validate",
                     request.node().empty() ? "" : absl::StrCat(" on node ", request.node())));
  }
  return response;
}

absl::StatusOr<v1::Job> ApiHandler::GetJob(const v1::GetJobRequest& request) const {
  return orchestrator_->GetJob(request.job_id());
}

absl::StatusOr<v1::ListJobsResponse> ApiHandler::ListJobs(
    const v1::ListJobsRequest& request) const {
  v1::ListJobsResponse response;
  for (v1::Job& job : orchestrator_->ListJobs(request)) *response.add_jobs() = std::move(job);
  return response;
}

absl::StatusOr<v1::Job> ApiHandler::CancelJob(const v1::GetJobRequest& request) const {
  return orchestrator_->CancelJob(request.job_id());
}

}  // namespace gswarm::host
