#include "host/router_placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {

RouterPlacement::RouterPlacement(Options options, Registry* registry, InstanceTable* instances,
                                 Orchestrator* orchestrator)
    : options_(options), registry_(registry), instances_(instances), orchestrator_(orchestrator) {}

RouterPlacement::~RouterPlacement() { Stop(); }

void RouterPlacement::Start(Router* router) {
  router_ = router;
  reaper_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(500))) ReapIdle();
  });
}

void RouterPlacement::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (reaper_.joinable()) reaper_.join();
}

bool RouterPlacement::IsIdle(const std::string& id, const Loaded& loaded,
                             absl::Duration idle_for) const {
  if (router_ == nullptr || router_->InFlight(id) > 0) return false;
  const absl::Time last = std::max(router_->LastUsed(id), loaded.loaded_at);
  return absl::Now() - last >= idle_for;
}

void RouterPlacement::Unload(const std::string& id, const std::string& why) {
  auto it = loaded_.find(id);
  if (it == loaded_.end()) return;
  draining_.insert(id);
  std::optional<v1::Instance> instance = instances_->Get(id);
  spdlog::info("instance={} model={}: unloading ({})", id, it->second.model, why);
  loaded_.erase(it);
  if (!instance.has_value()) return;
  absl::StatusOr<v1::Job> stop = orchestrator_->StopInstance(*instance, /*force=*/false);
  if (!stop.ok()) spdlog::warn("instance={}: unload failed: {}", id, stop.status().message());
}

void RouterPlacement::ReapIdle() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> gone, idle;
  for (const auto& [id, loaded] : loaded_) {
    std::optional<v1::Instance> instance = instances_->Get(id);
    if (!instance.has_value() || !IsActiveInstanceState(instance->state())) {
      gone.push_back(id);
    } else if (options_.keep_alive_s >= 0 &&
               IsIdle(id, loaded, absl::Seconds(options_.keep_alive_s))) {
      idle.push_back(id);
    }
  }
  for (const std::string& id : gone) loaded_.erase(id);
  for (const std::string& id : idle) {
    Unload(id, absl::StrCat("idle for ", options_.keep_alive_s, " s"));
  }
  // Draining instances leave the set once the table shows them ended.
  absl::erase_if(draining_, [this](const std::string& id) {
    std::optional<v1::Instance> instance = instances_->Get(id);
    return !instance.has_value() || !IsActiveInstanceState(instance->state());
  });
}

std::vector<Router::Backend> RouterPlacement::ReadyBackends(const std::string& model) {
  std::vector<Router::Backend> backends;
  absl::MutexLock lock(&mu_);
  for (const v1::Instance& instance : instances_->Active(model)) {
    if (instance.state() != "ready" || draining_.contains(instance.id())) continue;
    backends.push_back({instance.id(), instance.model_name(), instance.endpoint()});
  }
  return backends;
}

bool RouterPlacement::IsKnownModel(const std::string& model) {
  return registry_->GetModel(model).ok();
}

absl::StatusOr<Router::Backend> RouterPlacement::Load(const std::string& model,
                                                      absl::Time deadline) {
  if (options_.max_loaded_models > 0) {
    // Room for one more: the least recently used idle model goes; if all are busy, not now.
    absl::MutexLock lock(&mu_);
    while (static_cast<int>(loaded_.size()) >= options_.max_loaded_models) {
      std::string victim;
      absl::Time oldest = absl::InfiniteFuture();
      for (const auto& [id, loaded] : loaded_) {
        if (!IsIdle(id, loaded, absl::ZeroDuration())) continue;
        const absl::Time last = std::max(router_->LastUsed(id), loaded.loaded_at);
        if (last < oldest) {
          oldest = last;
          victim = id;
        }
      }
      if (victim.empty()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("max_loaded_models (", options_.max_loaded_models,
                         ") are loaded and all are serving requests: retry shortly"));
      }
      Unload(victim, absl::StrCat("making room for ", model, " (max_loaded_models)"));
    }
  }
  // The orchestrator places it: a node holding the model in DRAM before disk, a GPU with room.
  v1::ServeRequest request;
  request.set_model_name(model);
  ASSIGN_OR_RETURN(v1::Job job, orchestrator_->Serve(request));
  ASSIGN_OR_RETURN(v1::Job done, orchestrator_->WaitJob(job.id(), deadline));
  if (done.state() != "succeeded") {
    return absl::UnavailableError(absl::StrCat("loading \"", model, "\" on node ", done.node_id(),
                                               " ", done.state(), ": ", done.message()));
  }
  {
    absl::MutexLock lock(&mu_);
    loaded_[done.instance().id()] = Loaded{model, absl::Now()};
  }
  return Router::Backend{done.instance().id(), model, done.instance().endpoint()};
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
