#pragma once

// Serve planning: where an instance of a model can start (node, tier, GPU) and whether it fits.
// A pure function of a snapshot of the cluster taken at one moment, so that every rule is tested
// without a host (tests/unit/serve_planner_test.cc); the orchestrator takes the snapshot and
// launches what the plan says.
//
// Rules: a node holding a ready copy, DRAM before disk (it starts fastest), one plan per node, in
// that order; on each node the GPU asked for, else the one with the most room, else the CPU. A
// GPU's room is its budget less what others hold (the heartbeat's "used" less GSwarm's
// instances' reported share) less what GSwarm's own active instances hold or are about to.
//
// Thread safety: pure functions.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gswarm/v1/api.pb.h"

namespace gswarm::host {

// Room on one GPU of a node for instances: its budget (total x client.gpu_memory_fraction)
// less what others hold (the last heartbeat's "used" less our instances' reported share) and
// what GSwarm's own instances hold or are about to (each: its reported GPU memory, at least its
// footprint).
struct GpuRoom {
  // One of GSwarm's active instances on the GPU (planned up to stopping) and what it holds.
  struct Holder {
    std::string instance_id;
    bool ready = false;
    uint64_t bytes = 0;
  };
  std::string device;  // "gpu0", "gpu1", ...
  uint64_t budget_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t free_bytes = 0;
  std::vector<Holder> instances;
};

// Where Serve would start `request` now.
struct ServePlan {
  std::string node_id;
  std::string tier;  // the tier the engine reads the model from: "dram" | "disk"
  std::string gpu;   // "gpu0", ... or "cpu"
  uint64_t needed_bytes = 0;
  // False when the chosen GPU lacks room; `shortage` then says needed vs free.
  bool fits = true;
  std::string shortage;
  std::vector<GpuRoom> gpus;  // every GPU of the node
};

// What planning looks at, taken at one moment.
struct ServeSnapshot {
  // One of GSwarm's active instances and what it holds or is about to on its GPU: its
  // footprint (the bytes reserved when it was planned, else its model's size) until NVML
  // reports more.
  struct Holding {
    v1::Instance instance;
    uint64_t footprint_bytes = 0;
  };
  v1::Model model;                  // with its replicas
  std::vector<v1::NodeInfo> nodes;  // the online nodes
  std::vector<Holding> instances;   // active instances on those nodes
};

// The rooms of every GPU of `node`, counting the holdings on it.
std::vector<GpuRoom> GpuRooms(const v1::NodeInfo& node,
                              const std::vector<ServeSnapshot::Holding>& holdings);

// Every node's plan for `request`, in order of preference (see above); never empty.
// INVALID_ARGUMENT for a bad source_device or gpu_device, FAILED_PRECONDITION for a GPU the node
// lacks, NOT_FOUND when no online node holds the model.
absl::StatusOr<std::vector<ServePlan>> PlanServeEverywhere(const ServeSnapshot& snapshot,
                                                           const v1::ServeRequest& request);

// The first plan that fits, else the first. REQUIRES: `plans` is not empty.
const ServePlan& PreferredPlan(const std::vector<ServePlan>& plans);

}  // namespace gswarm::host
