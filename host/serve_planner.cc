#include "host/serve_planner.h"

#include <algorithm>

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

// A memory factor for engines a node does not report one for (the engine spec's default).
constexpr double kDefaultMemoryFactor = 1.2;

// The plan for `model` on `node` from `replica`.
absl::StatusOr<ServePlan> PlanOnNode(const v1::Model& model, const v1::Replica& replica,
                                     const v1::NodeInfo& node, const v1::ServeRequest& request,
                                     const std::vector<ServeSnapshot::Holding>& holdings) {
  ServePlan plan;
  plan.node_id = node.node_id();
  plan.tier = replica.tier();
  plan.rooms = DeviceRooms(node, holdings);
  const std::string& gpu = request.gpu_device();
  const DeviceRoom* room = nullptr;
  if (gpu.empty()) {
    // The GPU with the most room, else the CPU.
    for (const DeviceRoom& candidate : plan.rooms) {
      if (candidate.device != "cpu" && (room == nullptr || candidate.free_bytes > room->free_bytes))
        room = &candidate;
    }
  } else if (gpu != "cpu") {
    absl::string_view index_text = gpu;
    uint32_t index = 0;
    if (!absl::ConsumePrefix(&index_text, "gpu") || !absl::SimpleAtoi(index_text, &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpu_device \"", gpu, "\" is not of the form gpu0, gpu1, ... or cpu"));
    }
    for (const DeviceRoom& candidate : plan.rooms) {
      if (candidate.device == absl::StrCat("gpu", index)) room = &candidate;
    }
    if (room == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", node.node_id(), " has no ", gpu, " (it reports ", plan.rooms.size(),
                       " GPUs; use gpu_device \"cpu\" for a CPU engine)"));
    }
  }
  if (room == nullptr) {
    for (const DeviceRoom& candidate : plan.rooms) {
      if (candidate.device == "cpu") room = &candidate;
    }
  }
  plan.gpu = room != nullptr ? room->device : "cpu";
  plan.needed_bytes = FootprintBytes(model, node, plan.gpu, request.engine());
  if (plan.needed_bytes == 0) plan.needed_bytes = replica.size_bytes();
  if (room != nullptr && plan.needed_bytes > room->free_bytes) {
    plan.fits = false;
    plan.shortage =
        plan.gpu == "cpu"
            ? absl::StrFormat(
                  "model \"%s\" needs %.1f GiB of RAM on node %s, which has %.1f GiB free of its "
                  "%.1f GiB for engines on the CPU (stop an instance, or raise "
                  "client.cpu_memory_budget)",
                  model.name(), common::GiB(plan.needed_bytes), node.node_id(),
                  common::GiB(room->free_bytes), common::GiB(room->budget_bytes))
            : absl::StrFormat(
                  "model \"%s\" needs %.1f GiB on node %s %s, which has %.1f GiB free of its "
                  "%.1f GiB budget (stop an instance, pick another GPU, or raise "
                  "client.gpu_memory_fraction)",
                  model.name(), common::GiB(plan.needed_bytes), node.node_id(), plan.gpu,
                  common::GiB(room->free_bytes), common::GiB(room->budget_bytes));
  }
  return plan;
}

// Adds `holder` to `room` with what it holds there.
void Hold(DeviceRoom& room, const DeviceRoom::Holder& holder) {
  room.used_bytes += holder.bytes;
  room.instances.push_back(holder);
}

}  // namespace

uint64_t FootprintBytes(const v1::Model& model, const v1::NodeInfo& node, const std::string& device,
                        const std::string& engine) {
  const uint64_t weights = model.size_bytes();
  if (device != "cpu" && !node.memory().unified_memory()) return weights;
  const auto& factors = node.engine_memory_factors();
  auto it = factors.find(engine);
  if (it == factors.end()) it = factors.find("");
  const double factor = it != factors.end() ? it->second : kDefaultMemoryFactor;
  return static_cast<uint64_t>(static_cast<double>(weights) * factor);
}

std::vector<DeviceRoom> DeviceRooms(const v1::NodeInfo& node,
                                    const std::vector<ServeSnapshot::Holding>& holdings) {
  const v1::MemoryUsage& memory = node.memory();
  const bool unified = memory.unified_memory();
  std::vector<DeviceRoom> rooms;
  for (const v1::GpuInfo& info : memory.gpus()) {
    DeviceRoom& room = rooms.emplace_back();
    room.device = absl::StrCat("gpu", info.index());
    room.budget_bytes = info.memory_budget_bytes();
    if (unified && memory.cpu_memory_budget_bytes() != 0) {
      room.budget_bytes = std::min(room.budget_bytes, memory.cpu_memory_budget_bytes());
    }
    room.others_bytes = info.memory_used_bytes();  // less our instances' share, below
  }
  if (memory.cpu_memory_budget_bytes() != 0) {
    DeviceRoom& room = rooms.emplace_back();
    room.device = "cpu";
    room.budget_bytes = memory.cpu_memory_budget_bytes();
  }
  // What GSwarm's own instances hold, or will once loaded: a heartbeat may predate an instance
  // that is starting (or only planned), and two serves must not both count the same room.
  for (const ServeSnapshot::Holding& holding : holdings) {
    const v1::Instance& instance = holding.instance;
    if (instance.node_id() != node.node_id()) continue;
    const bool sleeping = StateOf(instance) == InstanceState::kSleeping;
    const bool ready = StateOf(instance) == InstanceState::kReady;
    // A sleeping engine holds what it was measured to keep (its weights left the GPU).
    const uint64_t on_gpu =
        sleeping ? instance.gpu_memory_bytes()
                 : std::max<uint64_t>(instance.gpu_memory_bytes(), holding.footprint_bytes);
    const uint64_t in_ram = sleeping
                                ? instance.ram_bytes()
                                : std::max<uint64_t>(instance.ram_bytes(), holding.footprint_bytes);
    for (DeviceRoom& room : rooms) {
      if (room.device == instance.gpu_device()) {
        room.others_bytes -= std::min(room.others_bytes, instance.gpu_memory_bytes());
      }
      if (unified) {
        Hold(room, {instance.id(), ready, std::max(on_gpu, in_ram)});
      } else if (room.device == instance.gpu_device()) {
        Hold(room, {instance.id(), ready, room.device == "cpu" ? in_ram : on_gpu});
      }
    }
  }
  for (DeviceRoom& room : rooms) {
    room.used_bytes = std::min(room.budget_bytes, room.others_bytes + room.used_bytes);
    room.free_bytes = room.budget_bytes - room.used_bytes;
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
          PlanOnNode(model, replica, *node, request, snapshot.instances);
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
  // Held by nodes that are offline now (an agent restarting, the host just restarted and its
  // agents not back yet): worth a retry, unlike a model no node holds.
  for (const v1::Replica& replica : model.replicas()) {
    if (replica.state() == "ready" &&
        (request.node().empty() || replica.node_id() == request.node()) &&
        (request.source_device().empty() || request.source_device() == replica.tier())) {
      return absl::UnavailableError(
          absl::StrCat("\"", model.name(), "\" is on node ", replica.node_id(),
                       ", which is not online now: retry once it is back (gswarm nodes)"));
    }
  }
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
