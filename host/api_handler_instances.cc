// ApiHandler's tiers and instances sections of api.proto: copies between tiers, DRAM eviction,
// serving, stopping and listing instances, their logs, and the router's switch.

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "common/units.h"
#include "google/protobuf/util/json_util.h"
#include "host/api_handler.h"

namespace gswarm::host {

absl::StatusOr<v1::SwitchModelResponse> ApiHandler::SwitchModel(
    const v1::SwitchModelRequest& request) const {
  if (router_ == nullptr) return absl::UnavailableError("the router is not running");
  ASSIGN_OR_RETURN(nlohmann::json switched, router_->Switch(request.model()));
  v1::SwitchModelResponse response;
  response.set_success(switched.value("success", false));
  response.set_active_model(switched.value("active_model", ""));
  response.set_switch_time_us(switched.value("switch_time_us", 0.0));
  if (switched.contains("previous_model") && switched["previous_model"].is_string()) {
    response.set_previous_model(switched["previous_model"].get<std::string>());
  }
  return response;
}

absl::StatusOr<v1::JobResponse> ApiHandler::Copy(const v1::CopyRequest& request) const {
  v1::JobResponse response;
  ASSIGN_OR_RETURN(*response.mutable_job(), orchestrator_->Copy(request));
  if (request.wait()) {
    ASSIGN_OR_RETURN(*response.mutable_job(), Await(response.job(), absl::Hours(24)));
  }
  return response;
}

absl::StatusOr<v1::EvictDramResponse> ApiHandler::EvictDram(
    const v1::EvictDramRequest& request) const {
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  v1::EvictDramResponse response;
  for (v1::Replica replica : model.replicas()) {
    if (replica.tier() != "dram") continue;
    if (!request.node().empty() && replica.node_id() != request.node()) continue;
    for (const v1::Instance& instance : instances_->Active(model.name(), replica.node_id())) {
      if (instance.source_tier() == "dram" && !request.force()) {
        return absl::FailedPreconditionError(
            absl::StrCat("model \"", model.name(), "\" in DRAM on node ", replica.node_id(),
                         " serves instance ", instance.id(), ": stop it first, or pass force"));
      }
    }
    v1::Command command;
    command.mutable_delete_()->set_model_name(model.name());
    command.mutable_delete_()->set_tier("dram");
    ASSIGN_OR_RETURN(v1::Job job, orchestrator_->RunOnNode(replica.node_id(), model.name(),
                                                           "delete", std::move(command)));
    RETURN_IF_ERROR(Await(job, absl::Minutes(2)).status());
    replica.set_model_name(model.name());
    *response.add_evicted() = std::move(replica);
  }
  if (response.evicted().empty()) {
    return absl::NotFoundError(absl::StrCat(
        "model \"", model.name(), "\" is not in DRAM",
        request.node().empty() ? " on any node" : absl::StrCat(" on node ", request.node())));
  }
  return response;
}

absl::StatusOr<v1::JobResponse> ApiHandler::Serve(const v1::ServeRequest& request) const {
  v1::JobResponse response;
  ASSIGN_OR_RETURN(*response.mutable_job(), orchestrator_->Serve(request));
  if (request.wait()) {
    ASSIGN_OR_RETURN(*response.mutable_job(), Await(response.job(), absl::Hours(1)));
  }
  return response;
}

absl::StatusOr<v1::StopInstanceResponse> ApiHandler::StopInstance(
    const v1::StopInstanceRequest& request) const {
  std::vector<v1::Instance> targets;
  if (!request.instance_id().empty()) {
    std::optional<v1::Instance> instance = instances_->Get(request.instance_id());
    if (!instance.has_value()) {
      return absl::NotFoundError(
          absl::StrCat("instance ", request.instance_id(), " is unknown (see `gswarm ps`)"));
    }
    targets.push_back(*instance);
  } else if (!request.model_name().empty()) {
    targets = instances_->Active(request.model_name(), request.node());
    if (targets.empty()) {
      return absl::NotFoundError(
          absl::StrCat("no instance serves \"", request.model_name(), "\" (see `gswarm ps`)"));
    }
  } else {
    return absl::InvalidArgumentError("name an instance_id or a model_name to stop");
  }
  v1::StopInstanceResponse response;
  for (const v1::Instance& instance : targets) {
    ASSIGN_OR_RETURN(v1::Job job, orchestrator_->StopInstance(instance, request.force()));
    ASSIGN_OR_RETURN(v1::Job done, Await(job, absl::Minutes(2)));
    *response.add_stopped() = done.has_instance() ? done.instance() : instance;
  }
  return response;
}

namespace {

// The instance named by `id`, or NOT_FOUND pointing at `gswarm ps`.
absl::StatusOr<v1::Instance> FindInstance(const InstanceManager& instances, const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("name the instance (instance_id)");
  std::optional<v1::Instance> instance = instances.Get(id);
  if (!instance.has_value()) {
    return absl::NotFoundError(absl::StrCat("instance ", id, " is unknown (see `gswarm ps`)"));
  }
  return *std::move(instance);
}

}  // namespace

absl::StatusOr<v1::Instance> ApiHandler::SleepInstance(
    const v1::SleepInstanceRequest& request) const {
  ASSIGN_OR_RETURN(v1::Instance instance, FindInstance(*instances_, request.instance_id()));
  const int level = request.level() == 0 ? 1 : static_cast<int>(request.level());
  ASSIGN_OR_RETURN(v1::Job job, orchestrator_->SleepInstance(instance, level));
  ASSIGN_OR_RETURN(v1::Job done, Await(job, absl::Minutes(6)));
  v1::Instance slept = done.has_instance() ? done.instance() : instance;
  Describe(&slept);
  return slept;
}

absl::StatusOr<v1::Instance> ApiHandler::WakeInstance(
    const v1::WakeInstanceRequest& request) const {
  ASSIGN_OR_RETURN(v1::Instance instance, FindInstance(*instances_, request.instance_id()));
  ASSIGN_OR_RETURN(v1::Job job, orchestrator_->WakeInstance(instance));
  ASSIGN_OR_RETURN(v1::Job done, Await(job, absl::Minutes(15)));
  v1::Instance woke = done.has_instance() ? done.instance() : instance;
  Describe(&woke);
  return woke;
}

absl::StatusOr<v1::ListInstancesResponse> ApiHandler::ListInstances(
    const v1::ListInstancesRequest& request) const {
  v1::ListInstancesResponse response;
  for (v1::Instance& instance : instances_->List(request.model_name(), request.node())) {
    Describe(&instance);
    *response.add_instances() = std::move(instance);
  }
  return response;
}

absl::StatusOr<v1::JobResponse> ApiHandler::LoadModel(const v1::LoadModelRequest& request) const {
  v1::ServeRequest serve;
  serve.set_model_name(request.model_name());
  serve.set_node(request.node());
  serve.set_gpu_device(request.gpu_device());
  serve.set_port(request.port());
  serve.set_engine(request.engine());
  serve.set_wait(request.wait());
  if (!request.download()) return Serve(serve);
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  const bool held = std::any_of(
      model.replicas().begin(), model.replicas().end(), [&](const v1::Replica& replica) {
        return replica.state() == "ready" && nodes_->GetOnline(replica.node_id()).has_value() &&
               (request.node().empty() || replica.node_id() == request.node());
      });
  if (held) return Serve(serve);
  if (model.source_url().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no online node holds \"", model.name(),
                     "\" and it has no source to download "
                     "it from: register it with its hf_path or source_url"));
  }
  v1::DownloadRequest download;
  download.set_model_name(model.name());
  download.set_source_url(model.source_url());
  download.set_revision(model.revision());
  download.set_node(request.node());
  v1::JobResponse response;
  ASSIGN_OR_RETURN(*response.mutable_job(), orchestrator_->DownloadThenServe(download, serve));
  if (request.wait()) {
    ASSIGN_OR_RETURN(*response.mutable_job(), Await(response.job(), absl::Hours(6)));
  }
  return response;
}

absl::StatusOr<v1::JobResponse> ApiHandler::OrchestrateLoad(
    const v1::LoadModelRequest& request) const {
  if (request.model_name().empty()) {
    return absl::InvalidArgumentError("model_name is required: {\"model_name\": \"qwen-3b\"}");
  }
  v1::LoadModelRequest load = request;
  load.set_download(true);
  return LoadModel(load);
}

absl::StatusOr<v1::GetCapacityResponse> ApiHandler::GetCapacity(
    const v1::GetCapacityRequest& request) const {
  if (request.model().empty()) {
    return absl::InvalidArgumentError("name the model: GET /capacity?model=NAME");
  }
  ASSIGN_OR_RETURN(ServeSnapshot snapshot, orchestrator_->Snapshot(request.model()));
  if (!request.node().empty() &&
      std::none_of(snapshot.nodes.begin(), snapshot.nodes.end(),
                   [&](const v1::NodeInfo& node) { return node.node_id() == request.node(); })) {
    return absl::NotFoundError(
        absl::StrCat("node \"", request.node(), "\" is not online (see `gswarm nodes`)"));
  }
  v1::GetCapacityResponse response;
  response.set_model_name(snapshot.model.name());
  response.set_model_bytes(snapshot.model.size_bytes());
  if (pool_ != nullptr) {
    response.set_max_loaded_models(static_cast<uint32_t>(pool_->max_loaded_models()));
    response.set_loaded_models(static_cast<uint32_t>(pool_->AwakeModels()));
  }
  for (const v1::NodeInfo& node : snapshot.nodes) {
    if (!request.node().empty() && node.node_id() != request.node()) continue;
    const bool holds = std::any_of(snapshot.model.replicas().begin(),
                                   snapshot.model.replicas().end(), [&](const v1::Replica& r) {
                                     return r.node_id() == node.node_id() && r.state() == "ready";
                                   });
    for (const DeviceRoom& room : DeviceRooms(node, snapshot.instances)) {
      v1::DeviceCapacity& device = *response.add_devices();
      device.set_node_id(node.node_id());
      device.set_device(room.device);
      device.set_holds_model(holds);
      const uint64_t needed = std::max<uint64_t>(
          1, FootprintBytes(snapshot.model, node, room.device, request.engine()));
      device.set_needed_bytes(needed);
      device.set_budget_bytes(room.budget_bytes);
      device.set_used_bytes(room.used_bytes);
      device.set_free_bytes(room.free_bytes);
      device.set_others_bytes(room.others_bytes);
      device.set_fits_now(static_cast<uint32_t>(room.free_bytes / needed));
      const uint64_t empty = room.budget_bytes - std::min(room.budget_bytes, room.others_bytes);
      device.set_fits_empty(static_cast<uint32_t>(empty / needed));
      for (const DeviceRoom::Holder& holder : room.instances)
        device.add_instances(holder.instance_id);
      if (device.fits_now() == 0 && pool_ != nullptr) {
        RouterPlacement::Eviction eviction = pool_->EvictionFor(room, needed);
        *device.mutable_evict() = {eviction.instance_ids.begin(), eviction.instance_ids.end()};
        device.set_evict_enough(eviction.enough);
      } else {
        device.set_evict_enough(device.fits_now() > 0);
      }
    }
  }
  return response;
}

absl::StatusOr<v1::StopInstanceResponse> ApiHandler::UnloadModel(
    const v1::UnloadModelRequest& request) const {
  v1::StopInstanceRequest stop;
  stop.set_model_name(request.model_name());
  stop.set_node(request.node());
  return StopInstance(stop);
}

absl::StatusOr<std::pair<std::string, std::string>> ApiHandler::LogSource(
    const v1::GetInstanceLogsRequest& request) const {
  std::optional<v1::Instance> instance = instances_->Get(request.instance_id());
  if (!instance.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("instance ", request.instance_id(), " is unknown (see `gswarm ps -a`)"));
  }
  std::optional<v1::NodeInfo> node = nodes_->GetOnline(instance->node_id());
  if (!node.has_value()) {
    return absl::UnavailableError(
        absl::StrCat("node ", instance->node_id(), " holding the log is offline"));
  }
  const std::string url = NodeDataUrl(*node);
  if (url.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", instance->node_id(), " serves no data port, where logs are read from"));
  }
  return std::make_pair(url, absl::StrCat("/logs/", instance->id(), "?tail=",
                                          request.tail_lines() == 0 ? 100 : request.tail_lines(),
                                          request.follow() ? "&follow=true" : ""));
}

}  // namespace gswarm::host
