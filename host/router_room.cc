// RouterPlacement's room making: evictions for max_loaded_models and for GPU room, the demotion
// ladder (sleep before stop, router_placement.h), waking a sleeping instance, and demoting a
// model that left a GPU to the DRAM tier.

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/units.h"
#include "host/host_metrics.h"
#include "host/router_placement.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
using common::GiB;

namespace {

// Level 1 keeps the weights in the node's RAM: only when they fit with this much to spare.
constexpr double kRamHeadroom = 1.25;

}  // namespace

int RouterPlacement::AwakeCount() const {
  return static_cast<int>(std::count_if(loaded_.begin(), loaded_.end(),
                                        [](const auto& entry) { return !entry.second.asleep; }));
}

int RouterPlacement::SleepLevelFor(const v1::Instance& instance) const {
  const int deepest = static_cast<int>(instance.max_sleep_level());
  if (deepest == 0) return 0;
  absl::StatusOr<v1::Model> model = registry_->GetModel(instance.model_name());
  if (!model.ok()) return 0;
  // Level 2 when the wake can reload the weights from the node's DRAM tier.
  if (deepest >= 2) {
    for (const v1::Replica& replica : model->replicas()) {
      if (replica.node_id() == instance.node_id() && replica.tier() == "dram" &&
          replica.state() == "ready") {
        return 2;
      }
    }
  }
  // Level 1 holds them in RAM: only when the node's free RAM takes them.
  std::optional<v1::NodeInfo> node = nodes_->GetOnline(instance.node_id());
  const uint64_t weights = model->size_bytes();
  if (node.has_value() && weights > 0 &&
      static_cast<double>(node->memory().dram_available_bytes()) >= kRamHeadroom * weights) {
    return 1;
  }
  spdlog::info(
      "instance={} model={}: stops rather than sleeps ({:.1f} GiB of weights, node {} "
      "has {:.1f} GiB of RAM free{})",
      instance.id(), instance.model_name(), GiB(weights), instance.node_id(),
      node.has_value() ? GiB(node->memory().dram_available_bytes()) : 0.0,
      deepest >= 2 ? " and no copy in its DRAM tier" : "");
  return 0;
}

std::optional<Router::Backend> RouterPlacement::WakeSleeping(const std::string& model,
                                                             absl::Time deadline) {
  std::optional<v1::Instance> sleeper;
  for (const v1::Instance& instance : instances_->Active(model)) {
    if (StateOf(instance) == InstanceState::kSleeping) {
      sleeper = instance;
      break;
    }
  }
  if (!sleeper.has_value()) return std::nullopt;
  const std::string& id = sleeper->id();
  // Its weights come back to the GPU it sleeps on: make room there first when it is short.
  v1::ServeRequest here;
  here.set_model_name(model);
  here.set_node(sleeper->node_id());
  here.set_gpu_device(sleeper->gpu_device());
  {
    absl::StatusOr<std::vector<ServePlan>> plans = orchestrator_->PlanServeEverywhere(here);
    if (plans.ok() && !PreferredPlan(*plans).fits) {
      Room room = MakeRoomOnDevice(model, *plans, /*any_gpu=*/false);
      for (const v1::Job& stop : room.stops)
        orchestrator_->WaitJob(stop.id(), deadline).IgnoreError();
    }
  }
  absl::Status woke;
  absl::StatusOr<v1::Job> job = orchestrator_->WakeInstance(*sleeper);
  if (job.ok()) {
    absl::StatusOr<v1::Job> finished = orchestrator_->WaitJob(job->id(), deadline);
    if (!finished.ok()) {
      woke = finished.status();
    } else if (JobStateOf(*finished) != JobState::kSucceeded) {
      woke = absl::UnavailableError(
          absl::StrCat("wake ", finished->state(), ": ", finished->message()));
    }
  } else {
    woke = job.status();
  }
  if (!woke.ok()) {
    // An engine that cannot wake is of no use asleep: it stops, and the model loads cold.
    spdlog::warn("instance={} model={}: could not wake ({}); stopping it", id, model,
                 std::string(woke.message()));
    Publish("wake_failed", model, &*sleeper,
            absl::StrCat("instance ", id, " of ", model, " could not wake: ", woke.message()));
    orchestrator_->StopInstance(*sleeper, /*force=*/false).IgnoreError();
    return std::nullopt;
  }
  Publish("woke", model, &*sleeper,
          absl::StrCat("instance ", id, " of ", model, " woke on ", sleeper->node_id()));
  return Router::Backend{id, model, Reachable(*sleeper)};
}

absl::Status RouterPlacement::MakeRoomInCount(const std::string& model) {
  std::vector<Leaving> victims;
  {
    gswarm::MutexLock lock(&mu_);
    if (options_.max_loaded_models > 0) {
      const absl::Time now = absl::Now();
      absl::flat_hash_set<std::string> tried;  // each at most once: a refusal does not pass here
      while (AwakeCount() + loading_ >= options_.max_loaded_models) {
        std::string victim;
        absl::Time oldest = absl::InfiniteFuture();
        for (const auto& [id, loaded] : loaded_) {
          if (tried.contains(id) || !Evictable(id, loaded, now)) continue;
          if (const absl::Time last = LastUse(id, loaded); last < oldest) {
            oldest = last;
            victim = id;
          }
        }
        std::optional<Leaving> leaving;
        if (!victim.empty()) {
          tried.insert(victim);
          leaving = Retire(victim, now,
                           absl::StrCat("making room for ", model, " (host.max_loaded_models)"),
                           "max_loaded_models");
          if (!leaving.has_value()) continue;  // a request got there first: pick another
        }
        if (!leaving.has_value()) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "host.max_loaded_models (", options_.max_loaded_models, ") are loaded or loading ",
              "and none can leave now (serving requests, just loaded, or kept by host.preload): "
              "retry shortly"));
        }
        victims.push_back(*std::move(leaving));
      }
    }
    ++loading_;
  }
  for (const Leaving& leaving : victims) StopRetired(leaving);
  return absl::OkStatus();
}

std::vector<RouterPlacement::Candidate> RouterPlacement::EvictionOrder(const DeviceRoom& room,
                                                                       absl::Time now) const {
  std::vector<Candidate> candidates;
  std::vector<Candidate> sleepers;
  for (const DeviceRoom::Holder& holder : room.instances) {
    auto it = loaded_.find(holder.instance_id);
    if (it == loaded_.end()) continue;
    if (holder.ready && Evictable(holder.instance_id, it->second, now)) {
      candidates.push_back(
          {holder.instance_id, LastUse(holder.instance_id, it->second), holder.bytes});
    } else if (it->second.asleep && !it->second.pinned &&
               router_->InFlight(holder.instance_id) == 0 && holder.bytes > 0) {
      sleepers.push_back(
          {holder.instance_id, LastUse(holder.instance_id, it->second), holder.bytes});
    }
  }
  auto by_use = [](const Candidate& a, const Candidate& b) { return a.last_used < b.last_used; };
  std::sort(candidates.begin(), candidates.end(), by_use);
  std::sort(sleepers.begin(), sleepers.end(), by_use);
  candidates.insert(candidates.end(), sleepers.begin(), sleepers.end());
  return candidates;
}

RouterPlacement::Eviction RouterPlacement::EvictionFor(const DeviceRoom& room,
                                                       uint64_t needed) const {
  uint64_t freed = 0;
  std::vector<Candidate> leaving;
  {
    gswarm::MutexLock lock(&mu_);
    leaving = Enough(EvictionOrder(room, absl::Now()), room, needed, &freed);
  }
  Eviction eviction;
  for (const Candidate& candidate : leaving) eviction.instance_ids.push_back(candidate.id);
  eviction.enough = room.free_bytes + freed >= needed;
  return eviction;
}

std::vector<RouterPlacement::Candidate> RouterPlacement::Enough(
    const std::vector<Candidate>& candidates, const DeviceRoom& room, uint64_t needed,
    uint64_t* freed) {
  std::vector<Candidate> leaving;
  *freed = 0;
  for (const Candidate& candidate : candidates) {
    if (room.free_bytes + *freed >= needed) break;
    leaving.push_back(candidate);
    *freed += candidate.bytes;
  }
  return leaving;
}

int RouterPlacement::AwakeModels() const {
  gswarm::MutexLock lock(&mu_);
  return AwakeCount();
}

RouterPlacement::Room RouterPlacement::MakeRoomOnDevice(const std::string& model,
                                                        const std::vector<ServePlan>& plans,
                                                        bool any_gpu) {
  Room room;
  std::vector<Leaving> victims;
  {
    gswarm::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    for (const ServePlan& plan : plans) {
      // The GPU where the least has to leave for the model to fit, least recently used first.
      std::vector<Candidate> chosen;
      uint64_t chosen_bytes = 0;
      for (const DeviceRoom& gpu : plan.rooms) {
        // Any GPU may do, but the CPU only for a plan on the CPU (a node without GPUs).
        if (any_gpu ? (gpu.device == "cpu") != (plan.gpu == "cpu") : gpu.device != plan.gpu) {
          continue;
        }
        uint64_t freed = 0;
        std::vector<Candidate> leaving =
            Enough(EvictionOrder(gpu, now), gpu, plan.needed_bytes, &freed);
        if (gpu.free_bytes + freed < plan.needed_bytes) continue;
        if (room.gpu.empty() || freed < chosen_bytes) {
          room.gpu = gpu.device;
          chosen = std::move(leaving);
          chosen_bytes = freed;
        }
      }
      if (room.gpu.empty()) continue;
      room.node_id = plan.node_id;
      const std::string why =
          absl::StrFormat("making room for %s on node %s %s: %.1f GiB needed", model, plan.node_id,
                          room.gpu, GiB(plan.needed_bytes));
      for (const Candidate& candidate : chosen) {
        std::optional<Leaving> leaving = Retire(candidate.id, now, why, "gpu_room");
        if (leaving.has_value()) {
          victims.push_back(*std::move(leaving));
        } else {
          room.raced = true;
        }
      }
      break;
    }
  }
  for (const Leaving& leaving : victims) {
    if (std::optional<v1::Job> stop = StopRetired(leaving)) {
      room.stops.push_back(*std::move(stop));
    } else {
      room.raced = true;  // it stays: plan again
    }
  }
  return room;
}

void RouterPlacement::Demote(const v1::Instance& instance) {
  if (instance.source_tier() != "disk") return;  // served from DRAM: it stays there
  absl::StatusOr<v1::Model> model = registry_->GetModel(instance.model_name());
  if (!model.ok()) return;
  for (const v1::Replica& replica : model->replicas()) {
    if (replica.node_id() == instance.node_id() && replica.tier() == "dram") return;
  }
  const std::string key = absl::StrCat(model->name(), "@", instance.node_id());
  {
    gswarm::MutexLock lock(&mu_);
    if (auto it = demoting_.find(key); it != demoting_.end()) {
      absl::StatusOr<v1::Job> job = orchestrator_->GetJob(it->second);
      if (job.ok() && !IsTerminal(JobStateOf(*job))) return;  // already on its way
      demoting_.erase(it);
    }
  }
  std::optional<v1::NodeInfo> node = nodes_->GetOnline(instance.node_id());
  if (!node.has_value()) return;
  const v1::MemoryUsage& memory = node->memory();
  const uint64_t budget = memory.dram_tier_budget_bytes();
  const uint64_t free = budget - std::min(budget, memory.dram_tier_used_bytes());
  if (model->size_bytes() == 0 || model->size_bytes() > free) {
    spdlog::info(
        "model={}: stays on disk only after leaving the GPU (needs {:.1f} GiB, the DRAM "
        "tier of node {} has {:.1f} GiB free)",
        model->name(), GiB(model->size_bytes()), instance.node_id(), GiB(free));
    return;
  }
  v1::CopyRequest copy;
  copy.set_model_name(model->name());
  copy.set_node(instance.node_id());
  copy.set_source_device("disk");
  copy.set_target_device("dram");
  absl::StatusOr<v1::Job> job = orchestrator_->Copy(copy);
  if (!job.ok()) {
    spdlog::warn("model={}: demotion to DRAM failed: {}", model->name(), job.status().message());
    return;
  }
  spdlog::info("model={}: demoted to DRAM on node {} (job {}): its next load starts from there",
               model->name(), instance.node_id(), job->id());
  if (options_.metrics != nullptr) options_.metrics->Demoted("evicted");
  Publish("demoted", model->name(), &instance,
          absl::StrCat("model ", model->name(), " demoted to DRAM on ", instance.node_id(),
                       " (job ", job->id(), ")"));
  gswarm::MutexLock lock(&mu_);
  demoting_[key] = job->id();
}

}  // namespace gswarm::host
