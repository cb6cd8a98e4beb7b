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

RouterPlacement::Loaded RouterPlacement::Joining(const v1::Instance& instance) const {
  const bool pinned = instance.managed_by() == "preload";
  return Loaded{instance.model_name(), absl::Now(),
                pinned ? absl::InfiniteDuration() : DefaultKeepAlive(), pinned};
}

void RouterPlacement::OnInstance(const v1::Instance& instance, InstanceState to) {
  // Only these three matter here. The others (planned, draining) come from the pool's own steps,
  // which may run under mu_.
  if (IsActive(to) && to != InstanceState::kReady && to != InstanceState::kSleeping) return;
  gswarm::MutexLock lock(&mu_);
  if (router_ == nullptr) return;  // not started: nothing to keep in step yet
  const std::string& id = instance.id();
  if (!IsActive(to)) {
    // Ended: it leaves the pool and the router's books.
    loaded_.erase(id);
    sleep_sent_.erase(id);
    sleep_failed_.erase(id);
    router_->Forget(id);
  } else if (to == InstanceState::kSleeping) {
    sleep_sent_.erase(id);
    // Asleep (put to sleep by the ladder, or by hand): no GPU room and no max_loaded_models slot
    // any more, and a new keep-alive from now.
    if (!instance.managed_by().empty() && instances_->State(id) == InstanceState::kSleeping) {
      Loaded& loaded = loaded_[id] = Joining(instance);
      loaded.asleep = true;
    }
  } else if (auto it = loaded_.find(id); it != loaded_.end() && it->second.asleep) {
    it->second.asleep = false;  // woke
    it->second.loaded_at = absl::Now();
  } else if (sleep_sent_.erase(id) > 0) {
    // Back in rotation awake: its sleep failed. It was evicted for room, so the policy stops it.
    sleep_failed_.insert(id);
    if (!loaded_.contains(id) && !instance.managed_by().empty()) loaded_[id] = Joining(instance);
  } else if (to == InstanceState::kReady && !instance.managed_by().empty() &&
             !loaded_.contains(instance.id()) &&
             instances_->State(instance.id()) == InstanceState::kReady) {
    // (Notifications come after the manager's lock: re-checked, so that a late "ready" does not
    // bring back an instance that has ended since.)
    // One the router (or preload) loaded, reported ready: after a load, or by an agent after a
    // host restart (managed_by travels with the serve command and the agent keeps it).
    loaded_[instance.id()] = Joining(instance);
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
  leaving.may_sleep =
      std::string_view(reason) != "keep_alive" && !it->second.asleep && !sleep_failed_.contains(id);
  if (options_.metrics != nullptr) options_.metrics->Evicted(reason);
  Publish("evicted", it->second.model, &leaving.instance,
          absl::StrCat("instance ", id, " of ", it->second.model, " unloads: ", why));
  loaded_.erase(it);
  return leaving;
}

std::optional<v1::Job> RouterPlacement::StopRetired(const Leaving& leaving) {
  const std::string& id = leaving.instance.id();
  if (const int level = leaving.may_sleep ? SleepLevelFor(leaving.instance) : 0; level > 0) {
    {
      gswarm::MutexLock lock(&mu_);
      sleep_sent_.insert(id);
    }
    absl::StatusOr<v1::Job> sleep = orchestrator_->SleepInstance(leaving.instance, level);
    if (sleep.ok()) {
      Demote(leaving.instance);
      if (options_.metrics != nullptr) options_.metrics->Demoted("sleep");
      Publish("slept", leaving.instance.model_name(), &leaving.instance,
              absl::StrCat("instance ", id, " of ", leaving.instance.model_name(),
                           " goes to sleep (level ", level, ") instead of stopping"));
      return *std::move(sleep);
    }
    spdlog::warn("instance={}: the sleep could not be sent ({}); stopping it instead", id,
                 sleep.status().message());
    gswarm::MutexLock lock(&mu_);
    sleep_sent_.erase(id);
  }
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

absl::Time RouterPlacement::ReapIdle() {
  std::vector<Leaving> idle;
  absl::Time next = absl::InfiniteFuture();
  {
    gswarm::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    std::vector<std::pair<std::string, absl::Duration>> expired;
    for (const auto& [id, loaded] : loaded_) {
      if (loaded.pinned || loaded.keep_alive == absl::InfiniteDuration()) continue;
      // Not ready or asleep (restarting, stopping): its next state change wakes the policy.
      const std::optional<InstanceState> state = instances_->State(id);
      if (state != InstanceState::kReady && state != InstanceState::kSleeping) continue;
      const absl::Time due = std::max(LastUse(id, loaded) + loaded.keep_alive, loaded.not_before);
      if (due <= now) {
        expired.emplace_back(id, loaded.keep_alive);
      } else {
        next = std::min(next, due);
      }
    }
    const std::vector<std::string> failed(sleep_failed_.begin(), sleep_failed_.end());
    for (const std::string& id : failed) {
      if (!loaded_.contains(id)) {
        sleep_failed_.erase(id);
      } else if (std::optional<Leaving> leaving =
                     Retire(id, now, "its sleep failed", "sleep_failed")) {
        sleep_failed_.erase(id);
        idle.push_back(*std::move(leaving));
      } else {
        next = std::min(next, now + options_.tick);  // in use: once its requests are done
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

absl::StatusOr<Router::Backend> RouterPlacement::Load(const std::string& model,
                                                      absl::Time deadline) {
  RETURN_IF_ERROR(MakeRoomInCount(model));
  const absl::Time start = absl::Now();
  std::string tier;  // where the weights come from
  absl::Cleanup done = [this] {
    gswarm::MutexLock lock(&mu_);
    --loading_;
  };
  // The fast way back: a sleeping instance of the model wakes.
  if (std::optional<Router::Backend> woke = WakeSleeping(model, deadline)) {
    if (options_.metrics != nullptr) {
      options_.metrics->ModelLoaded("sleep", absl::ToDoubleSeconds(absl::Now() - start));
    }
    return *std::move(woke);
  }
  // The orchestrator places it: a node holding the model in DRAM before disk, a GPU with room.
  // When the GPUs are short, idle instances leave one and the plan is made again there.
  v1::ServeRequest pinned;  // where room was made, once it was
  pinned.set_model_name(model);
  absl::Time settle_until = absl::InfinitePast();  // no more evictions before then
  absl::StatusOr<v1::Job> job;
  for (;;) {
    ASSIGN_OR_RETURN(std::vector<ServePlan> plans, orchestrator_->PlanServeEverywhere(pinned));
    // The plan counted only nodes whose inventory is in: an instance of the model that came
    // with one since the request found none (an agent back after a host restart) serves, rather
    // than a second engine beside it.
    if (std::vector<Router::Backend> ready = ReadyBackends(model); !ready.empty()) {
      spdlog::info("router: model {} is ready as instance {} (reported since the load began)",
                   model, ready.front().instance_id);
      return ready.front();
    }
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
        for (const DeviceRoom& gpu : candidate.rooms) {
          could_fit |= gpu.budget_bytes >= candidate.needed_bytes;
        }
      }
      if (!could_fit) {
        return absl::FailedPreconditionError(absl::StrCat(
            plan.shortage, "; it is larger than the whole budget there, so no eviction helps"));
      }
      Room room = MakeRoomOnDevice(model, plans, /*any_gpu=*/pinned.gpu_device().empty());
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
