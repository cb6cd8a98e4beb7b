#include "host/router_placement.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/units.h"
#include "host/host_metrics.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
using common::GiB;

namespace {

// After a stop that could not be sent, how long an instance stays before it is tried again.
constexpr absl::Duration kRetryFailedStop = absl::Seconds(5);

}  // namespace

RouterPlacement::RouterPlacement(Options options, Registry* registry, NodeRegistry* nodes,
                                 InstanceManager* instances, Orchestrator* orchestrator,
                                 EventBus* events)
    : options_(std::move(options)),
      registry_(registry),
      nodes_(nodes),
      instances_(instances),
      orchestrator_(orchestrator),
      events_(events) {
  instances_->AddListener([this](const v1::Instance& instance, InstanceState, InstanceState to) {
    OnInstance(instance, to);
  });
}

void RouterPlacement::Start(Router* router) {
  {
    gswarm::MutexLock lock(&mu_);
    router_ = router;
  }
  reaper_ = std::thread([this] { RunPolicy(); });
}

RouterPlacement::~RouterPlacement() { Stop(); }

void RouterPlacement::Stop() {
  {
    gswarm::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (reaper_.joinable()) reaper_.join();
}

void RouterPlacement::OnInstance(const v1::Instance& instance, InstanceState to) {
  // Only these two matter here. The others (planned, draining) come from the pool's own steps,
  // which may run under mu_.
  if (IsActive(to) && to != InstanceState::kReady) return;
  gswarm::MutexLock lock(&mu_);
  if (router_ == nullptr) return;  // not started: nothing to keep in step yet
  if (!IsActive(to)) {
    // Ended: it leaves the pool and the router's books.
    loaded_.erase(instance.id());
    router_->Forget(instance.id());
  } else if (to == InstanceState::kReady && !instance.managed_by().empty() &&
             !loaded_.contains(instance.id()) &&
             instances_->State(instance.id()) == InstanceState::kReady) {
    // (Notifications come after the manager's lock: re-checked, so that a late "ready" does not
    // bring back an instance that has ended since.)
    // One the router (or preload) loaded, reported ready: after a load, or by an agent after a
    // host restart (managed_by travels with the serve command and the agent keeps it).
    const bool pinned = instance.managed_by() == "preload";
    loaded_[instance.id()] = Loaded{instance.model_name(), absl::Now(),
                                    pinned ? absl::InfiniteDuration() : DefaultKeepAlive(), pinned};
  }
  dirty_ = true;  // the policy looks again: keep-alive deadlines, preloads
}

void RouterPlacement::RunPolicy() {
  for (;;) {
    const absl::Time next = std::min(ReapIdle(), KeepPreloaded());
    gswarm::MutexLock lock(&mu_);
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return dirty_ || stopping_; };
    mu_.AwaitWithDeadline(absl::Condition(&woken), next);
    if (stopping_) return;
    dirty_ = false;
  }
}

void RouterPlacement::Publish(const std::string& action, const std::string& model,
                              const v1::Instance* instance, const std::string& message) const {
  if (events_ == nullptr) return;
  v1::Event event = MakeEvent("router", action, message);
  event.set_model_name(model);
  if (instance != nullptr) {
    event.set_instance_id(instance->id());
    event.set_node_id(instance->node_id());
  }
  events_->Publish(std::move(event));
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

bool RouterPlacement::Evictable(const std::string& id, const Loaded& loaded, absl::Time now) const {
  if (loaded.pinned || now < loaded.not_before || router_->InFlight(id) > 0) return false;
  // Starting (a crashed engine restarting) or already stopping: not something to unload now.
  if (instances_->State(id) != InstanceState::kReady) return false;
  const bool never_used = router_->LastUsed(id) == absl::InfinitePast();
  return !never_used || now - loaded.loaded_at >= options_.grace;
}

std::optional<RouterPlacement::Leaving> RouterPlacement::Retire(const std::string& id,
                                                                absl::Time idle_since,
                                                                const std::string& why,
                                                                const char* reason) {
  auto it = loaded_.find(id);
  if (it == loaded_.end()) return std::nullopt;
  const bool drained =
      router_->TryRetire(id, idle_since, [&] { return instances_->Drain(id, why).ok(); });
  if (!drained) return std::nullopt;  // in use, or not ready (any more): it stays
  std::optional<v1::Instance> instance = instances_->Get(id);
  spdlog::info("instance={} model={}: unloading ({})", id, it->second.model, why);
  Leaving leaving{instance.value_or(v1::Instance()), it->second};
  leaving.instance.set_id(id);
  if (options_.metrics != nullptr) options_.metrics->Evicted(reason);
  Publish("evicted", it->second.model, &leaving.instance,
          absl::StrCat("instance ", id, " of ", it->second.model, " unloads: ", why));
  loaded_.erase(it);
  return leaving;
}

std::optional<v1::Job> RouterPlacement::StopRetired(const Leaving& leaving) {
  const std::string& id = leaving.instance.id();
  absl::StatusOr<v1::Job> stop = orchestrator_->StopInstance(leaving.instance, /*force=*/false);
  if (!stop.ok()) {
    spdlog::warn("instance={}: unload failed, it stays: {}", id, stop.status().message());
    absl::Status back = instances_->Undrain(
        id, absl::StrCat("the stop could not be sent: ", stop.status().message()));
    gswarm::MutexLock lock(&mu_);
    // Ready again (and not ended meanwhile): back in rotation, but not retired again before a
    // while, or an idle instance on an unreachable node would be retried without pause.
    if (back.ok() && instances_->State(id) == InstanceState::kReady) {
      Loaded& loaded = loaded_[id] = leaving.loaded;
      loaded.not_before = absl::Now() + kRetryFailedStop;
    }
    return std::nullopt;
  }
  Demote(leaving.instance);
  return *std::move(stop);
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

absl::Time RouterPlacement::ReapIdle() {
  std::vector<Leaving> idle;
  absl::Time next = absl::InfiniteFuture();
  {
    gswarm::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    std::vector<std::pair<std::string, absl::Duration>> expired;
    for (const auto& [id, loaded] : loaded_) {
      if (loaded.pinned || loaded.keep_alive == absl::InfiniteDuration()) continue;
      // Not ready (restarting, stopping): its next state change wakes the policy.
      if (instances_->State(id) != InstanceState::kReady) continue;
      const absl::Time due = std::max(LastUse(id, loaded) + loaded.keep_alive, loaded.not_before);
      if (due <= now) {
        expired.emplace_back(id, loaded.keep_alive);
      } else {
        next = std::min(next, due);
      }
    }
    for (const auto& [id, keep_alive] : expired) {
      std::optional<Leaving> leaving =
          Retire(id, now - keep_alive, absl::StrCat("idle for ", absl::FormatDuration(keep_alive)),
                 "keep_alive");
      if (leaving.has_value()) {
        idle.push_back(*std::move(leaving));
      } else {
        next = std::min(next, now + options_.tick);  // a request got there first: look again
      }
    }
  }
  for (const Leaving& leaving : idle) StopRetired(leaving);
  return next;
}

absl::Time RouterPlacement::KeepPreloaded() {
  std::vector<std::string> due;
  absl::Time next = absl::InfiniteFuture();
  {
    gswarm::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    for (const std::string& model : options_.preload) {
      if (!instances_->Active(model).empty()) {
        preload_.erase(model);  // up: a later loss retries quickly again
        continue;
      }
      PreloadState& state = preload_[model];
      if (now >= state.retry_at) {
        // Soon at first (nodes connect, downloads finish), then less often, at most every 30 s.
        state.retry_at = now + std::min(absl::Seconds(30), absl::Seconds(state.attempts + 1));
        ++state.attempts;
        due.push_back(model);
      }
      next = std::min(next, state.retry_at);
    }
  }
  for (const std::string& model : due) router_->StartLoad(model);
  return next;
}

std::vector<Router::Backend> RouterPlacement::ReadyBackends(const std::string& model) {
  std::vector<Router::Backend> backends;
  for (const v1::Instance& instance : instances_->Active(model)) {
    if (StateOf(instance) != InstanceState::kReady) continue;
    backends.push_back({instance.id(), instance.model_name(), Reachable(instance)});
  }
  return backends;
}

std::string RouterPlacement::Reachable(const v1::Instance& instance) const {
  std::optional<v1::NodeInfo> node = nodes_->Get(instance.node_id());
  return node.has_value() ? NodeEndpoint(*node, instance.endpoint()) : instance.endpoint();
}

bool RouterPlacement::IsKnownModel(const std::string& model) { return registry_->HasModel(model); }

bool RouterPlacement::Routable(const std::string& instance_id) {
  return instances_->State(instance_id) == InstanceState::kReady;
}

void RouterPlacement::KeepAlive(const std::string& instance_id,
                                std::optional<absl::Duration> keep_alive) {
  gswarm::MutexLock lock(&mu_);
  auto it = loaded_.find(instance_id);
  if (it != loaded_.end() && !it->second.pinned) {
    const absl::Duration wanted = keep_alive.value_or(DefaultKeepAlive());
    // A shorter keep-alive may be due before the policy's next look.
    if (wanted < it->second.keep_alive) dirty_ = true;
    it->second.keep_alive = wanted;
  }
}

void RouterPlacement::Describe(v1::Instance* instance) const {
  if (router_ == nullptr) return;
  instance->set_requests_in_flight(static_cast<uint32_t>(router_->InFlight(instance->id())));
  if (const absl::Time used = router_->LastUsed(instance->id()); used != absl::InfinitePast()) {
    *instance->mutable_last_used_at() = common::ToTimestamp(used);
  }
  gswarm::MutexLock lock(&mu_);
  auto it = loaded_.find(instance->id());
  if (it == loaded_.end()) return;
  const Loaded& loaded = it->second;
  instance->set_managed_by(loaded.pinned ? "preload" : "router");
  if (!loaded.pinned && loaded.keep_alive != absl::InfiniteDuration()) {
    *instance->mutable_unload_at() =
        common::ToTimestamp(LastUse(instance->id(), loaded) + loaded.keep_alive);
  }
}

absl::Status RouterPlacement::MakeRoomInCount(const std::string& model) {
  std::vector<Leaving> victims;
  {
    gswarm::MutexLock lock(&mu_);
    if (options_.max_loaded_models > 0) {
      const absl::Time now = absl::Now();
      absl::flat_hash_set<std::string> tried;  // each at most once: a refusal does not pass here
      while (static_cast<int>(loaded_.size()) + loading_ >= options_.max_loaded_models) {
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

RouterPlacement::Room RouterPlacement::MakeRoomOnGpu(const std::string& model,
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
      for (const GpuRoom& gpu : plan.gpus) {
        if (!any_gpu && gpu.device != plan.gpu) continue;
        // What could leave: ready instances the router loaded that may go now.
        std::vector<Candidate> candidates;
        for (const GpuRoom::Holder& holder : gpu.instances) {
          auto it = loaded_.find(holder.instance_id);
          if (holder.ready && it != loaded_.end() &&
              Evictable(holder.instance_id, it->second, now)) {
            candidates.push_back(
                {holder.instance_id, LastUse(holder.instance_id, it->second), holder.bytes});
          }
        }
        std::sort(candidates.begin(), candidates.end(),
                  [](const Candidate& a, const Candidate& b) { return a.last_used < b.last_used; });
        std::vector<Candidate> leaving;
        uint64_t freed = 0;
        for (const Candidate& candidate : candidates) {
          if (gpu.free_bytes + freed >= plan.needed_bytes) break;
          leaving.push_back(candidate);
          freed += candidate.bytes;
        }
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

absl::StatusOr<Router::Backend> RouterPlacement::Load(const std::string& model,
                                                      absl::Time deadline) {
  RETURN_IF_ERROR(MakeRoomInCount(model));
  const absl::Time start = absl::Now();
  std::string tier;  // where the weights come from
  absl::Cleanup done = [this] {
    gswarm::MutexLock lock(&mu_);
    --loading_;
  };
  // The orchestrator places it: a node holding the model in DRAM before disk, a GPU with room.
  // When the GPUs are short, idle instances leave one and the plan is made again there.
  v1::ServeRequest pinned;  // where room was made, once it was
  pinned.set_model_name(model);
  absl::Time settle_until = absl::InfinitePast();  // no more evictions before then
  absl::StatusOr<v1::Job> job;
  for (;;) {
    ASSIGN_OR_RETURN(std::vector<ServePlan> plans, orchestrator_->PlanServeEverywhere(pinned));
    const ServePlan& plan = PreferredPlan(plans);
    if (plan.fits) {
      v1::ServeRequest request = pinned;
      request.set_node(plan.node_id);
      request.set_gpu_device(plan.gpu);
      request.set_source_device(plan.tier);
      tier = plan.tier;
      job = orchestrator_->Serve(request, IsPreloaded(model) ? "preload" : "router");
      // Another load may have taken the room between the plan and the serve: plan again.
      if (job.ok() || !absl::IsFailedPrecondition(job.status())) break;
    } else if (absl::Now() >= settle_until) {
      bool could_fit = false;
      for (const ServePlan& candidate : plans) {
        for (const GpuRoom& gpu : candidate.gpus) {
          could_fit |= gpu.budget_bytes >= candidate.needed_bytes;
        }
      }
      if (!could_fit) {
        return absl::FailedPreconditionError(absl::StrCat(
            plan.shortage, "; it is larger than any GPU's whole budget, so no eviction helps"));
      }
      Room room = MakeRoomOnGpu(model, plans, /*any_gpu=*/pinned.gpu_device().empty());
      if (room.node_id.empty() && !room.raced) {
        return absl::ResourceExhaustedError(absl::StrCat(
            plan.shortage,
            "; no idle instance the router loaded can make room there (instances with requests "
            "in flight, just loaded, kept by host.preload or started with gswarm serve stay)"));
      }
      if (!room.node_id.empty()) {
        pinned.set_node(room.node_id);
        pinned.set_gpu_device(room.gpu);
      }
      for (const v1::Job& stop : room.stops) {
        absl::StatusOr<v1::Job> stopped = orchestrator_->WaitJob(stop.id(), deadline);
        if (!stopped.ok()) return stopped.status();
      }
      if (!room.raced) {
        settle_until = absl::Now() + options_.release_wait;
        continue;  // plan again at once: the stops reported the memory freed
      }
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
  if (JobStateOf(finished) != JobState::kSucceeded) {
    return absl::UnavailableError(absl::StrCat("loading \"", model, "\" on node ",
                                               finished.node_id(), " ", finished.state(), ": ",
                                               finished.message()));
  }
  {
    // The instance's "ready" normally put it in the pool already (OnInstance); one that has
    // ended since is not added back.
    gswarm::MutexLock lock(&mu_);
    std::optional<v1::Instance> now = instances_->Get(finished.instance().id());
    if (!loaded_.contains(finished.instance().id()) && now.has_value() && IsActive(StateOf(*now))) {
      loaded_[finished.instance().id()] =
          Loaded{model, absl::Now(), DefaultKeepAlive(), IsPreloaded(model)};
      dirty_ = true;  // its keep-alive deadline is new to the policy
    }
  }
  if (options_.metrics != nullptr) {
    options_.metrics->ModelLoaded(tier, absl::ToDoubleSeconds(absl::Now() - start));
  }
  Publish("loaded", model, &finished.instance(),
          absl::StrCat("model ", model, " loaded: instance ", finished.instance().id(), " on ",
                       finished.node_id()));
  return Router::Backend{finished.instance().id(), model, Reachable(finished.instance())};
}

std::vector<nlohmann::json> RouterPlacement::ModelEntries() {
  std::vector<nlohmann::json> entries;
  for (const v1::Model& model : registry_->ListModels()) {
    uint64_t load_time_ms = model.load_time_ms();
    for (const v1::Instance& instance : instances_->Active(model.name())) {
      if (StateOf(instance) == InstanceState::kReady) load_time_ms = instance.load_time_ms();
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
