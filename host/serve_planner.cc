// Orchestrator's serve planning: where an instance goes (node, tier, GPU) and whether it fits,
// counting what GSwarm's own instances hold or are about to (InstanceManager's planned ones).

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/status.h"
#include "common/units.h"
#include "host/orchestrator.h"

namespace gswarm::host {

std::vector<Orchestrator::GpuRoom> Orchestrator::GpuRooms(const v1::NodeInfo& node) const {
  // What GSwarm's own instances on each GPU hold, or will once loaded: a heartbeat may predate
  // an instance that is starting (or only planned), and two serves must not both count the same
  // room.
  absl::flat_hash_map<std::string, uint64_t> reserved;
  absl::flat_hash_map<std::string, uint64_t> attributed;  // our instances' share of "used"
  absl::flat_hash_map<std::string, std::vector<GpuRoom::Holder>> holders;
  absl::flat_hash_map<std::string, uint64_t> model_bytes;
  auto model_size = [&](const std::string& name) {
    auto [it, inserted] = model_bytes.try_emplace(name, 0);
    if (inserted) {
      absl::StatusOr<v1::Model> model = registry_->GetModel(name);
      if (model.ok()) it->second = model->size_bytes();
    }
    return it->second;
  };
  for (const v1::Instance& instance : instances_->Active("", node.node_id())) {
    uint64_t footprint = instances_->ReservedBytes(instance.id());
    if (footprint == 0) footprint = model_size(instance.model_name());
    const uint64_t bytes = std::max<uint64_t>(instance.gpu_memory_bytes(), footprint);
    reserved[instance.gpu_device()] += bytes;
    attributed[instance.gpu_device()] += instance.gpu_memory_bytes();
    holders[instance.gpu_device()].push_back(
        {instance.id(), StateOf(instance) == InstanceState::kReady, bytes});
  }
  std::vector<GpuRoom> rooms;
  for (const v1::GpuInfo& info : node.memory().gpus()) {
    GpuRoom room;
    room.device = absl::StrCat("gpu", info.index());
    room.budget_bytes = info.memory_budget_bytes();
    // What others hold (the heartbeat's figure less our instances' share of it), plus ours.
    const uint64_t others =
        info.memory_used_bytes() - std::min(info.memory_used_bytes(), attributed[room.device]);
    room.used_bytes = std::min(room.budget_bytes, others + reserved[room.device]);
    room.free_bytes = room.budget_bytes - room.used_bytes;
    room.instances = std::move(holders[room.device]);
    rooms.push_back(std::move(room));
  }
  return rooms;
}

absl::StatusOr<Orchestrator::ServePlan> Orchestrator::PlanOnNode(const v1::Model& model,
                                                                 const v1::Replica& replica,
                                                                 const v1::NodeInfo& node,
                                                                 const std::string& gpu) const {
  ServePlan plan;
  plan.node_id = node.node_id();
  plan.tier = replica.tier();
  plan.needed_bytes = model.size_bytes() != 0 ? model.size_bytes() : replica.size_bytes();
  plan.gpus = GpuRooms(node);
  plan.gpu = gpu;
  const GpuRoom* room = nullptr;
  if (gpu.empty()) {
    plan.gpu = "cpu";
    for (const GpuRoom& candidate : plan.gpus) {
      if (room == nullptr || candidate.free_bytes > room->free_bytes) room = &candidate;
    }
    if (room != nullptr) plan.gpu = room->device;
  } else if (gpu != "cpu") {
    absl::string_view index_text = gpu;
    uint32_t index = 0;
    if (!absl::ConsumePrefix(&index_text, "gpu") || !absl::SimpleAtoi(index_text, &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpu_device \"", gpu, "\" is not of the form gpu0, gpu1, ... or cpu"));
    }
    for (const GpuRoom& candidate : plan.gpus) {
      if (candidate.device == absl::StrCat("gpu", index)) room = &candidate;
    }
    if (room == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", node.node_id(), " has no ", gpu, " (it reports ", plan.gpus.size(),
                       " GPUs; use gpu_device \"cpu\" for a CPU engine)"));
    }
    plan.gpu = room->device;
  }
  if (room != nullptr && plan.needed_bytes > room->free_bytes) {
    plan.fits = false;
    plan.shortage = absl::StrFormat(
        "model \"%s\" needs %.1f GiB on node %s %s, which has %.1f GiB free of its %.1f GiB "
        "budget (stop an instance, pick another GPU, or raise client.gpu_memory_fraction)",
        model.name(), common::GiB(plan.needed_bytes), node.node_id(), plan.gpu,
        common::GiB(room->free_bytes), common::GiB(room->budget_bytes));
  }
  return plan;
}

absl::StatusOr<std::vector<Orchestrator::ServePlan>> Orchestrator::PlanServeEverywhere(
    const v1::ServeRequest& request) const {
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  if (!request.source_device().empty() && request.source_device() != "disk" &&
      request.source_device() != "dram") {
    return absl::InvalidArgumentError(
        absl::StrCat("source_device \"", request.source_device(), "\" is not disk or dram"));
  }
  // Ready copies on online nodes, DRAM first (it starts fastest); one plan per node.
  std::vector<ServePlan> plans;
  absl::flat_hash_set<std::string> planned;
  absl::Status refused = absl::OkStatus();
  for (const char* tier : {"dram", "disk"}) {
    if (!request.source_device().empty() && request.source_device() != tier) continue;
    for (const v1::Replica& replica : model.replicas()) {
      if (replica.tier() != tier || replica.state() != "ready") continue;
      if (!request.node().empty() && replica.node_id() != request.node()) continue;
      if (planned.contains(replica.node_id())) continue;
      std::optional<v1::NodeInfo> node = nodes_->GetOnline(replica.node_id());
      if (!node.has_value()) continue;
      absl::StatusOr<ServePlan> plan = PlanOnNode(model, replica, *node, request.gpu_device());
      if (!plan.ok()) {
        if (refused.ok()) refused = plan.status();
        continue;
      }
      planned.insert(replica.node_id());
      plans.push_back(*std::move(plan));
    }
  }
  if (!plans.empty()) return plans;
  if (!refused.ok()) return refused;
  return absl::NotFoundError(absl::StrCat(
      "no online node", request.node().empty() ? "" : absl::StrCat(" \"", request.node(), "\""),
      " holds \"", model.name(), "\"",
      request.source_device().empty() ? "" : absl::StrCat(" in ", request.source_device()),
      ": download or copy it there first"));
}

const Orchestrator::ServePlan& Orchestrator::Preferred(const std::vector<ServePlan>& plans) {
  for (const ServePlan& plan : plans) {
    if (plan.fits) return plan;
  }
  return plans.front();
}

absl::StatusOr<Orchestrator::ServePlan> Orchestrator::PlanServe(
    const v1::ServeRequest& request) const {
  ASSIGN_OR_RETURN(std::vector<ServePlan> plans, PlanServeEverywhere(request));
  return Preferred(plans);
}

absl::StatusOr<v1::Job> Orchestrator::Serve(const v1::ServeRequest& request,
                                            const std::string& managed_by) {
  absl::MutexLock serve_lock(&serve_mu_);
  ASSIGN_OR_RETURN(ServePlan plan, PlanServe(request));
  if (!plan.fits) return absl::FailedPreconditionError(plan.shortage);

  v1::Command command;
  v1::ServeCommand& serve = *command.mutable_serve();
  serve.set_model_name(request.model_name());
  serve.set_source_tier(plan.tier);
  serve.set_gpu_device(plan.gpu);
  serve.set_port(request.port());
  serve.set_engine(request.engine());
  serve.set_instance_id(request.instance_id().empty()
                            ? "inst-" + common::GenerateToken().substr(0, 10)
                            : request.instance_id());
  *serve.mutable_extra_args() = request.extra_args();
  serve.set_managed_by(managed_by);
  v1::Job job;
  job.set_kind("serve");
  job.set_model_name(request.model_name());
  job.set_node_id(plan.node_id);
  // Its GPU room is held from now on: the next plan counts it, before any heartbeat does.
  v1::Instance planned;
  planned.set_id(serve.instance_id());
  planned.set_model_name(serve.model_name());
  planned.set_node_id(plan.node_id);
  planned.set_engine(serve.engine());
  planned.set_gpu_device(plan.gpu);
  planned.set_source_tier(plan.tier);
  planned.set_managed_by(managed_by);
  instances_->Plan(planned, plan.gpu == "cpu" ? 0 : plan.needed_bytes);
  absl::StatusOr<v1::Job> launched = Launch(std::move(job), std::move(command));
  if (!launched.ok()) {
    instances_->PlanEnded(serve.instance_id(),
                          absl::StrCat("the serve was not sent: ", launched.status().message()));
  }
  return launched;
}

}  // namespace gswarm::host
