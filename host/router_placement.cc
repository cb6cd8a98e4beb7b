#include "host/router_placement.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

double GiB(uint64_t bytes) { return static_cast<double>(bytes) / double(1ull << 30); }

}  // namespace

RouterPlacement::RouterPlacement(Options options, Registry* registry, NodeRegistry* nodes,
                                 InstanceTable* instances, Orchestrator* orchestrator)
    : options_(std::move(options)),
      registry_(registry),
      nodes_(nodes),
      instances_(instances),
      orchestrator_(orchestrator) {}

RouterPlacement::~RouterPlacement() { Stop(); }

void RouterPlacement::Start(Router* router) {
  router_ = router;
  reaper_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(options_.tick)) {
      ReapIdle();
      KeepPreloaded();
    }
  });
}

void RouterPlacement::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (reaper_.joinable()) reaper_.join();
}

absl::Duration RouterPlacement::DefaultKeepAlive() const {
  return options_.keep_alive_s < 0 ? absl::InfiniteDuration()
                                   : absl::Seconds(options_.keep_alive_s);
}

bool RouterPlacement::IsPreloaded(const std::string& model) const {
  return std::find(options_.preload.begin(), options_.preload.end(), model) !=
         options_.preload.end();
}

absl::Time RouterPlacement::LastUse(const std::string& id, const Loaded& loaded) const {
  return std::max(router_->LastUsed(id), loaded.loaded_at);
}

bool RouterPlacement::Unload(const std::string& id, absl::Time idle_since, const std::string& why,
                             v1::Job* stop_job) {
  auto it = loaded_.find(id);
  if (it == loaded_.end() || !router_->TryRetire(id, idle_since)) return false;
  spdlog::info("instance={} model={}: unloading ({})", id, it->second.model, why);
  loaded_.erase(it);
  leaving_.insert(id);
  std::optional<v1::Instance> instance = instances_->Get(id);
  if (!instance.has_value()) return true;
  absl::StatusOr<v1::Job> stop = orchestrator_->StopInstance(*instance, /*force=*/false);
  if (!stop.ok()) {
    spdlog::warn("instance={}: unload failed: {}", id, stop.status().message());
  } else if (stop_job != nullptr) {
    *stop_job = *std::move(stop);
  }
  Demote(*instance);
  return true;
}

void RouterPlacement::Demote(const v1::Instance& instance) {
  if (instance.source_tier() != "disk") return;  // served from DRAM: it stays there
  absl::StatusOr<v1::Model> model = registry_->GetModel(instance.model_name());
  if (!model.ok()) return;
  for (const v1::Replica& replica : model->replicas()) {
    if (replica.node_id() == instance.node_id() && replica.tier() == "dram") return;
  }
  std::optional<v1::NodeInfo> node = nodes_->Get(instance.node_id());
  if (!node.has_value() || node->state() != "online") return;
  const v1::MemoryUsage& memory = node->memory();
  const uint64_t budget = memory.dram_tier_budget_bytes();
  const uint64_t used = std::min(budget, memory.dram_tier_used_bytes());
  if (model->size_bytes() == 0 || model->size_bytes() > budget - used) {
    spdlog::info(
        "model={}: stays on disk only after leaving the GPU (needs {:.1f} GiB, the DRAM "
        "tier of node {} has {:.1f} GiB free)",
        model->name(), GiB(model->size_bytes()), instance.node_id(), GiB(budget - used));
    return;
  }
  v1::CopyRequest copy;
  copy.set_model_name(model->name());
  copy.set_node(instance.node_id());
  copy.set_source_device("disk");
  copy.set_target_device("dram");
  absl::StatusOr<v1::Job> job = orchestrator_->Copy(copy);
  if (job.ok()) {
    spdlog::info("model={}: demoted to DRAM on node {} (job {}): its next load starts from there",
                 model->name(), instance.node_id(), job->id());
  } else {
    spdlog::warn("model={}: demotion to DRAM failed: {}", model->name(), job.status().message());
  }
}

void RouterPlacement::ReapIdle() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  std::vector<std::string> gone, idle;
  for (const auto& [id, loaded] : loaded_) {
    std::optional<v1::Instance> instance = instances_->Get(id);
    if (!instance.has_value() || !IsActiveInstanceState(instance->state())) {
      gone.push_back(id);
    } else if (!loaded.pinned && loaded.keep_alive != absl::InfiniteDuration() &&
               LastUse(id, loaded) + loaded.keep_alive <= now) {
      idle.push_back(id);
    }
  }
  for (const std::string& id : gone) {
    loaded_.erase(id);
    router_->Forget(id);
  }
  for (const std::string& id : idle) {
    const absl::Duration keep_alive = loaded_[id].keep_alive;
    Unload(id, now - keep_alive, absl::StrCat("idle for ", absl::FormatDuration(keep_alive)),
           nullptr);
  }
  // Instances on their way out leave the router's books once the table shows them ended.
  absl::erase_if(leaving_, [this](const std::string& id) {
    std::optional<v1::Instance> instance = instances_->Get(id);
    if (instance.has_value() && IsActiveInstanceState(instance->state())) return false;
    router_->Forget(id);
    return true;
  });
}

void RouterPlacement::KeepPreloaded() {
  std::vector<std::string> due;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    for (const std::string& model : options_.preload) {
      if (!instances_->Active(model).empty()) {
        preload_.erase(model);  // up: a later loss retries quickly again
        continue;
      }
      PreloadState& state = preload_[model];
      if (now < state.retry_at) continue;
      // Soon at first (nodes connect, downloads finish), then less often, at most every 30 s.
      state.retry_at = now + std::min(absl::Seconds(30), absl::Seconds(state.attempts + 1));
      ++state.attempts;
      due.push_back(model);
    }
  }
  for (const std::string& model : due) router_->StartLoad(model);
}

std::vector<Router::Backend> RouterPlacement::ReadyBackends(const std::string& model) {
  std::vector<Router::Backend> backends;
  for (const v1::Instance& instance : instances_->Active(model)) {
    if (instance.state() != "ready") continue;
    backends.push_back({instance.id(), instance.model_name(), instance.endpoint()});
  }
  return backends;
}

bool RouterPlacement::IsKnownModel(const std::string& model) {
  return registry_->GetModel(model).ok();
}

void RouterPlacement::KeepAlive(const std::string& instance_id, absl::Duration keep_alive) {
  absl::MutexLock lock(&mu_);
  auto it = loaded_.find(instance_id);
  if (it != loaded_.end() && !it->second.pinned) it->second.keep_alive = keep_alive;
}

void RouterPlacement::Describe(v1::Instance* instance) const {
  auto timestamp = [](absl::Time time, google::protobuf::Timestamp* out) {
    const int64_t nanos = absl::ToUnixNanos(time);
    out->set_seconds(nanos / 1000000000);
    out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  };
  if (router_ == nullptr) return;
  instance->set_requests_in_flight(static_cast<uint32_t>(router_->InFlight(instance->id())));
  if (const absl::Time used = router_->LastUsed(instance->id()); used != absl::InfinitePast()) {
    timestamp(used, instance->mutable_last_used_at());
  }
  absl::MutexLock lock(&mu_);
  auto it = loaded_.find(instance->id());
  if (it == loaded_.end()) return;
  const Loaded& loaded = it->second;
  instance->set_managed_by(loaded.pinned ? "preload" : "router");
  if (!loaded.pinned && loaded.keep_alive != absl::InfiniteDuration()) {
    timestamp(LastUse(instance->id(), loaded) + loaded.keep_alive, instance->mutable_unload_at());
  }
}

absl::Status RouterPlacement::MakeRoomInCount(const std::string& model) {
  absl::MutexLock lock(&mu_);
  if (options_.max_loaded_models > 0) {
    absl::flat_hash_set<std::string> busy;  // a request got there between the look and the retire
    while (static_cast<int>(loaded_.size()) + loading_ >= options_.max_loaded_models) {
      std::string victim;
      absl::Time oldest = absl::InfiniteFuture();
      for (const auto& [id, loaded] : loaded_) {
        if (loaded.pinned || busy.contains(id) || router_->InFlight(id) > 0) continue;
        if (const absl::Time last = LastUse(id, loaded); last < oldest) {
          oldest = last;
          victim = id;
        }
      }
      if (victim.empty()) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "host.max_loaded_models (", options_.max_loaded_models,
            ") are loaded and every one is serving requests or kept by host.preload: retry "
            "shortly"));
      }
      if (!Unload(victim, absl::Now(),
                  absl::StrCat("making room for ", model, " (max_loaded_models)"), nullptr)) {
        busy.insert(victim);
      }
    }
  }
  ++loading_;
  return absl::OkStatus();
}

std::string RouterPlacement::MakeRoomOnGpu(const std::string& model,
                                           const Orchestrator::ServePlan& plan, bool any_gpu,
                                           std::vector<v1::Job>* stops) {
  absl::MutexLock lock(&mu_);
  // What could leave, per GPU of the node: idle instances the router loaded, not kept.
  absl::flat_hash_map<std::string, std::vector<Candidate>> by_gpu;
  for (const v1::Instance& instance : instances_->List("", plan.node_id)) {
    auto it = loaded_.find(instance.id());
    if (instance.state() != "ready" || it == loaded_.end() || it->second.pinned ||
        router_->InFlight(instance.id()) > 0) {
      continue;
    }
    uint64_t bytes = instance.gpu_memory_bytes();
    if (absl::StatusOr<v1::Model> served = registry_->GetModel(instance.model_name());
        served.ok()) {
      bytes = std::max<uint64_t>(bytes, served->size_bytes());
    }
    by_gpu[instance.gpu_device()].push_back({instance, LastUse(instance.id(), it->second), bytes});
  }
  // The GPU where the least has to leave for the model to fit, least recently used first.
  std::string best_gpu;
  std::vector<Candidate> best_victims;
  uint64_t best_freed = 0;
  for (const Orchestrator::GpuRoom& room : plan.gpus) {
    if (!any_gpu && room.device != plan.gpu) continue;
    std::vector<Candidate>& candidates = by_gpu[room.device];
    std::sort(candidates.begin(), candidates.end(),
              [](const Candidate& a, const Candidate& b) { return a.last_used < b.last_used; });
    std::vector<Candidate> victims;
    uint64_t freed = 0;
    for (const Candidate& candidate : candidates) {
      if (room.free_bytes + freed >= plan.needed_bytes) break;
      victims.push_back(candidate);
      freed += candidate.bytes;
    }
    if (room.free_bytes + freed < plan.needed_bytes) continue;
    if (best_gpu.empty() || freed < best_freed) {
      best_gpu = room.device;
      best_victims = std::move(victims);
      best_freed = freed;
    }
  }
  if (best_gpu.empty()) return "";
  const absl::Time now = absl::Now();
  for (const Candidate& victim : best_victims) {
    v1::Job stop;
    const std::string why = absl::StrFormat("making room for %s on node %s %s: %.1f GiB needed",
                                            model, plan.node_id, best_gpu, GiB(plan.needed_bytes));
    if (Unload(victim.instance.id(), now, why, &stop) && !stop.id().empty()) {
      stops->push_back(std::move(stop));
    }
  }
  return best_gpu;
}

absl::StatusOr<Router::Backend> RouterPlacement::Load(const std::string& model,
                                                      absl::Time deadline) {
  RETURN_IF_ERROR(MakeRoomInCount(model));
  absl::Cleanup done = [this] {
    absl::MutexLock lock(&mu_);
    --loading_;
  };
  // The orchestrator places it: a node holding the model in DRAM before disk, a GPU with room.
  // When that GPU is short, idle instances leave it and the plan is made again once the node
  // reports their memory free.
  v1::ServeRequest request;
  request.set_model_name(model);
  absl::Time settle_until = absl::InfinitePast();  // no more evictions before then
  absl::StatusOr<v1::Job> job;
  for (;;) {
    ASSIGN_OR_RETURN(Orchestrator::ServePlan plan, orchestrator_->PlanServe(request));
    if (plan.fits) {
      request.set_node(plan.node_id);
      request.set_gpu_device(plan.gpu);
      request.set_source_device(plan.tier);
      job = orchestrator_->Serve(request);
      // Another load may have taken the room between the plan and the serve: plan again.
      if (job.ok() || !absl::IsFailedPrecondition(job.status())) break;
    } else if (absl::Now() >= settle_until) {
      std::vector<v1::Job> stops;
      const std::string gpu =
          MakeRoomOnGpu(model, plan, /*any_gpu=*/request.gpu_device().empty(), &stops);
      if (gpu.empty()) {
        return absl::ResourceExhaustedError(absl::StrCat(
            plan.shortage,
            "; no idle instance the router loaded there can make room (instances with requests "
            "in flight, kept by host.preload or started with gswarm serve stay)"));
      }
      request.set_node(plan.node_id);
      request.set_gpu_device(gpu);
      for (const v1::Job& stop : stops) {
        absl::StatusOr<v1::Job> stopped = orchestrator_->WaitJob(stop.id(), deadline);
        if (!stopped.ok()) return stopped.status();
      }
      settle_until = absl::Now() + options_.release_wait;
      continue;  // plan again at once: the stop reported the memory freed
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("loading \"", model, "\" gave up at its deadline: ",
                       plan.fits ? "other loads kept taking the GPU room" : plan.shortage));
    }
    if (stop_.WaitForNotificationWithTimeout(absl::Milliseconds(50))) {
      return absl::UnavailableError("the host is shutting down");
    }
  }
  RETURN_IF_ERROR(job.status());
  ASSIGN_OR_RETURN(v1::Job finished, orchestrator_->WaitJob(job->id(), deadline));
  if (finished.state() != "succeeded") {
    return absl::UnavailableError(absl::StrCat("loading \"", model, "\" on node ",
                                               finished.node_id(), " ", finished.state(), ": ",
                                               finished.message()));
  }
  {
    absl::MutexLock lock(&mu_);
    loaded_[finished.instance().id()] =
        Loaded{model, absl::Now(), DefaultKeepAlive(), IsPreloaded(model)};
  }
  return Router::Backend{finished.instance().id(), model, finished.instance().endpoint()};
}

std::vector<nlohmann::json> RouterPlacement::ModelEntries() {
  std::vector<nlohmann::json> entries;
  for (const v1::Model& model : registry_->ListModels()) {
    uint64_t load_time_ms = model.load_time_ms();
    for (const v1::Instance& instance : instances_->Active(model.name())) {
      if (instance.state() == "ready") load_time_ms = instance.load_time_ms();
    }
    entries.push_back({{"id", model.name()},
                       {"object", "model"},
                       {"created", model.created_at().seconds()},
                       {"owned_by", "gswarm"},
                       {"size_mb", model.size_bytes() >> 20},
                       {"load_time_ms", load_time_ms}});
  }
  return entries;
}

}  // namespace gswarm::host
