#pragma once

// Serve planning: where an instance of a model can start (node, tier, device) and whether it
// fits. A pure function of a snapshot of the cluster taken at one moment, so that every rule is
// tested without a host (tests/unit/serve_planner_test.cc); the orchestrator takes the snapshot
// and launches what the plan says, and `gswarm plan` (GET /capacity) reads the same rooms.
//
// Rules: a node holding a ready copy, DRAM before disk (it starts fastest), one plan per node, in
// that order; on each node the device asked for, else the GPU with the most room, else the CPU.
// A device's room is its budget less what others hold and what GSwarm's own active instances
// hold or are about to:
// - a GPU: total x client.gpu_memory_fraction; others are the heartbeat's "used" less GSwarm's
//   instances' reported share; an instance holds its model's size until NVML reports more.
// - the CPU ("cpu"): the node's RAM budget for engines (client.cpu_memory_budget); an instance
//   holds its model's size x its engine's memory_factor until its measured RSS says more (mmap'd
//   weights page in lazily, so the RSS only corrects upwards). A node reporting no budget (an
//   older agent) has no CPU room: CPU instances are not bounded there.
// - a unified-memory node (client.unified_memory): GPUs and CPU draw on the one RAM budget, so
//   every instance of the node counts in every room and reserves its RAM footprint.
//
// Thread safety: pure functions.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gswarm/v1/api.pb.h"

namespace gswarm::host {

// Room for instances on one device of a node: a GPU, or the RAM engines on the CPU may take.
struct DeviceRoom {
  // One of GSwarm's active instances on the device (planned up to stopping) and what it holds.
  struct Holder {
    std::string instance_id;
    bool ready = false;
    uint64_t bytes = 0;
  };
  std::string device;  // "gpu0", "gpu1", ... or "cpu"
  uint64_t budget_bytes = 0;
  uint64_t used_bytes = 0;    // others' and ours, at most the budget
  uint64_t free_bytes = 0;    // budget less used
  uint64_t others_bytes = 0;  // what processes other than GSwarm's instances hold
  std::vector<Holder> instances;
};

// Where Serve would start `request` now.
struct ServePlan {
  std::string node_id;
  std::string tier;           // the tier the engine reads the model from: "dram" | "disk"
  std::string gpu;            // the device: "gpu0", ... or "cpu"
  uint64_t needed_bytes = 0;  // what the instance reserves there (FootprintBytes)
  // False when the chosen device lacks room; `shortage` then says needed vs free.
  bool fits = true;
  std::string shortage;
  std::vector<DeviceRoom> rooms;  // every GPU of the node, then its CPU room when it has one
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

// The rooms of every device of `node` (its GPUs, then "cpu" when it reports a RAM budget for
// engines), counting the holdings on it.
std::vector<DeviceRoom> DeviceRooms(const v1::NodeInfo& node,
                                    const std::vector<ServeSnapshot::Holding>& holdings);

// What an instance of `model` served by `engine` ("" : the node's default) reserves on `device`
// of `node`: the model's size on a GPU; on the CPU, or on any device of a unified-memory node,
// that times the engine's memory factor (as the node reports it; 1.2 when it does not).
uint64_t FootprintBytes(const v1::Model& model, const v1::NodeInfo& node, const std::string& device,
                        const std::string& engine);

// Every node's plan for `request`, in order of preference (see above); never empty.
// INVALID_ARGUMENT for a bad source_device or gpu_device, FAILED_PRECONDITION for a GPU the node
// lacks, NOT_FOUND when no online node holds the model.
absl::StatusOr<std::vector<ServePlan>> PlanServeEverywhere(const ServeSnapshot& snapshot,
                                                           const v1::ServeRequest& request);

// The first plan that fits, else the first. REQUIRES: `plans` is not empty.
const ServePlan& PreferredPlan(const std::vector<ServePlan>& plans);

}  // namespace gswarm::host
