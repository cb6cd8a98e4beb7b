#include "host/serve_planner.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "common/units.h"
#include "host/instance_state.h"

namespace gswarm::host {

namespace {

// The plan for `model` on `node` from `replica`.
absl::StatusOr<ServePlan> PlanOnNode(const v1::Model& model, const v1::Replica& replica,
                                     const v1::NodeInfo& node, const std::string& gpu,
                                     const std::vector<ServeSnapshot::Holding>& holdings) {
  ServePlan plan;
  plan.node_id = node.node_id();
  plan.tier = replica.tier();
  plan.needed_bytes = model.size_bytes() != 0 ? model.size_bytes() : replica.size_bytes();
  plan.gpus = GpuRooms(node, holdings);
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

}  // namespace

std::vector<GpuRoom> GpuRooms(const v1::NodeInfo& node,
                              const std::vector<ServeSnapshot::Holding>& holdings) {
  // What GSwarm's own instances on each GPU hold, or will once loaded: a heartbeat may predate
  // an instance that is starting (or only planned), and two serves must not both count the same
  // room.
  absl::flat_hash_map<std::string, uint64_t> reserved;
  absl::flat_hash_map<std::string, uint64_t> attributed;  // our instances' share of "used"
  absl::flat_hash_map<std::string, std::vector<GpuRoom::Holder>> holders;
  for (const ServeSnapshot::Holding& holding : holdings) {
    const v1::Instance& instance = holding.instance;
    if (instance.node_id() != node.node_id()) continue;
    // A sleeping engine holds what it was measured to keep (its weights left the GPU).
    const uint64_t bytes =
        StateOf(instance) == InstanceState::kSleeping
            ? instance.gpu_memory_bytes()
            : std::max<uint64_t>(instance.gpu_memory_bytes(), holding.footprint_bytes);
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

absl::StatusOr<std::vector<ServePlan>> PlanServeEverywhere(const ServeSnapshot& snapshot,
                                                           const v1::ServeRequest& request) {
  const v1::Model& model = snapshot.model;
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
      auto node = std::find_if(
          snapshot.nodes.begin(), snapshot.nodes.end(),
          [&](const v1::NodeInfo& online) { return online.node_id() == replica.node_id(); });
      if (node == snapshot.nodes.end()) continue;
      absl::StatusOr<ServePlan> plan =
          PlanOnNode(model, replica, *node, request.gpu_device(), snapshot.instances);
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

const ServePlan& PreferredPlan(const std::vector<ServePlan>& plans) {
  for (const ServePlan& plan : plans) {
    if (plan.fits) return plan;
  }
  return plans.front();
}

}  // namespace gswarm::host
