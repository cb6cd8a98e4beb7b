#include "host/api_handler.h"

#include "absl/strings/str_cat.h"
#include "common/proto_json.h"
#include "google/protobuf/util/json_util.h"

namespace gswarm::host {
namespace {

constexpr absl::string_view kModels = "model registry and downloads";
constexpr absl::string_view kTiers = "DRAM tier and copies between tiers";
constexpr absl::string_view kInstances = "inference instances";
constexpr absl::string_view kRouter = "router and hot swap";

}  // namespace

absl::Status NotYetImplemented(absl::string_view rpc, absl::string_view feature) {
  return absl::UnimplementedError(
      absl::StrCat(rpc, " is not available in this GSwarm build yet (", feature, ")"));
}

ApiHandler::ApiHandler(Options options, NodeRegistry* registry)
    : options_(std::move(options)), registry_(registry) {}

absl::StatusOr<v1::HealthResponse> ApiHandler::Health(const v1::HealthRequest&) const {
  v1::HealthResponse response;
  response.set_status("ok");
  response.set_version(GSWARM_VERSION);
  response.set_uptime_s(absl::ToDoubleSeconds(absl::Now() - options_.started_at));
  response.set_auth_required(options_.auth_required);
  v1::ClusterMemory& memory = *response.mutable_memory();
  for (const v1::NodeInfo& node : registry_->List()) {
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
  for (v1::NodeInfo& node : registry_->List()) {
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
  for (const v1::NodeInfo& node : registry_->List()) {
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
  return response;
}

absl::StatusOr<v1::RegisterModelResponse> ApiHandler::RegisterModel(
    const v1::RegisterModelRequest&) const {
  return NotYetImplemented("RegisterModel", kModels);
}
absl::StatusOr<v1::ListModelsResponse> ApiHandler::ListModels(const v1::ListModelsRequest&) const {
  return NotYetImplemented("ListModels", kModels);
}
absl::StatusOr<v1::Model> ApiHandler::GetModel(const v1::GetModelRequest&) const {
  return NotYetImplemented("GetModel", kModels);
}
absl::StatusOr<v1::DeleteModelResponse> ApiHandler::DeleteModel(
    const v1::DeleteModelRequest&) const {
  return NotYetImplemented("DeleteModel", kModels);
}
absl::StatusOr<v1::JobResponse> ApiHandler::Download(const v1::DownloadRequest&) const {
  return NotYetImplemented("Download", kModels);
}
absl::StatusOr<v1::DiscoverResponse> ApiHandler::Discover(const v1::DiscoverRequest&) const {
  return NotYetImplemented("Discover", kModels);
}
absl::StatusOr<v1::ValidateModelResponse> ApiHandler::ValidateModel(
    const v1::ValidateModelRequest&) const {
  return NotYetImplemented("ValidateModel", kModels);
}
absl::StatusOr<v1::JobResponse> ApiHandler::Copy(const v1::CopyRequest&) const {
  return NotYetImplemented("Copy", kTiers);
}
absl::StatusOr<v1::EvictDramResponse> ApiHandler::EvictDram(const v1::EvictDramRequest&) const {
  return NotYetImplemented("EvictDram", kTiers);
}
absl::StatusOr<v1::JobResponse> ApiHandler::Serve(const v1::ServeRequest&) const {
  return NotYetImplemented("Serve", kInstances);
}
absl::StatusOr<v1::StopInstanceResponse> ApiHandler::StopInstance(
    const v1::StopInstanceRequest&) const {
  return NotYetImplemented("StopInstance", kInstances);
}
absl::StatusOr<v1::ListInstancesResponse> ApiHandler::ListInstances(
    const v1::ListInstancesRequest&) const {
  return NotYetImplemented("ListInstances", kInstances);
}
absl::StatusOr<v1::JobResponse> ApiHandler::LoadModel(const v1::LoadModelRequest&) const {
  return NotYetImplemented("LoadModel", kInstances);
}
absl::StatusOr<v1::StopInstanceResponse> ApiHandler::UnloadModel(
    const v1::UnloadModelRequest&) const {
  return NotYetImplemented("UnloadModel", kInstances);
}
absl::StatusOr<v1::SwitchModelResponse> ApiHandler::SwitchModel(
    const v1::SwitchModelRequest&) const {
  return NotYetImplemented("SwitchModel", kRouter);
}
absl::StatusOr<v1::Job> ApiHandler::GetJob(const v1::GetJobRequest&) const {
  return NotYetImplemented("GetJob", kModels);
}
absl::StatusOr<v1::ListJobsResponse> ApiHandler::ListJobs(const v1::ListJobsRequest&) const {
  return NotYetImplemented("ListJobs", kModels);
}
absl::StatusOr<v1::Job> ApiHandler::CancelJob(const v1::GetJobRequest&) const {
  return NotYetImplemented("CancelJob", kModels);
}

}  // namespace gswarm::host
