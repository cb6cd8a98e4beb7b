// The orchestrator's side of serving: the snapshot serve planning looks at (serve_planner.h),
// Serve, which launches what the plan says and holds its room from then on, and the "load" job
// (a download, then a serve where it landed).

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "host/orchestrator.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {

absl::StatusOr<ServeSnapshot> Orchestrator::Snapshot(const std::string& model_name) const {
  ServeSnapshot snapshot;
  ASSIGN_OR_RETURN(snapshot.model, registry_->GetModel(model_name));
  std::vector<v1::NodeInfo> nodes = nodes_->List();
  {
    // A node whose inventory is still being applied counts as not online yet (OnAgentConnected).
    gswarm::MutexLock lock(&mu_);
    for (v1::NodeInfo& node : nodes) {
      if (node.state() == "online" && !inventory_pending_.contains(node.node_id())) {
        snapshot.nodes.push_back(std::move(node));
      }
    }
  }
  // An instance's footprint until NVML says more: what was reserved when it was planned, else
  // its model's size (one catalog read per model).
  absl::flat_hash_map<std::string, uint64_t> model_bytes;
  for (v1::Instance& instance : instances_->Active()) {
    uint64_t footprint = instances_->ReservedBytes(instance.id());
    if (footprint == 0) {
      auto [it, inserted] = model_bytes.try_emplace(instance.model_name(), 0);
      if (inserted) {
        absl::StatusOr<v1::Model> model = registry_->GetModel(instance.model_name());
        if (model.ok()) it->second = model->size_bytes();
      }
      footprint = it->second;
    }
    snapshot.instances.push_back({std::move(instance), footprint});
  }
  return snapshot;
}

absl::StatusOr<std::vector<ServePlan>> Orchestrator::PlanServeEverywhere(
    const v1::ServeRequest& request) const {
  ASSIGN_OR_RETURN(ServeSnapshot snapshot, Snapshot(request.model_name()));
  return host::PlanServeEverywhere(snapshot, request);
}

absl::StatusOr<ServePlan> Orchestrator::PlanServe(const v1::ServeRequest& request) const {
  ASSIGN_OR_RETURN(std::vector<ServePlan> plans, PlanServeEverywhere(request));
  return PreferredPlan(plans);
}

absl::StatusOr<Orchestrator::PlannedServe> Orchestrator::PlanAndHold(
    const v1::ServeRequest& request, const std::string& managed_by) {
  ASSIGN_OR_RETURN(ServePlan plan, PlanServe(request));
  if (!plan.fits) return absl::FailedPreconditionError(plan.shortage);
  PlannedServe planned{plan.node_id, {}};
  v1::ServeCommand& serve = *planned.command.mutable_serve();
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
  // Its room is held from now on: the next plan counts it, before any heartbeat does.
  v1::Instance instance;
  instance.set_id(serve.instance_id());
  instance.set_model_name(serve.model_name());
  instance.set_node_id(plan.node_id);
  instance.set_engine(serve.engine());
  instance.set_gpu_device(plan.gpu);
  instance.set_source_tier(plan.tier);
  instance.set_managed_by(managed_by);
  instances_->Plan(instance, plan.needed_bytes);
  return planned;
}

absl::StatusOr<v1::Job> Orchestrator::Serve(const v1::ServeRequest& request,
                                            const std::string& managed_by) {
  gswarm::MutexLock serve_lock(&serve_mu_);
  ASSIGN_OR_RETURN(PlannedServe planned, PlanAndHold(request, managed_by));
  const std::string instance_id = planned.command.serve().instance_id();
  v1::Job job;
  job.set_kind("serve");
  job.set_model_name(request.model_name());
  job.set_node_id(planned.node_id);
  absl::StatusOr<v1::Job> launched = Launch(std::move(job), std::move(planned.command));
  if (!launched.ok()) {
    instances_->PlanEnded(instance_id,
                          absl::StrCat("the serve was not sent: ", launched.status().message()));
  }
  return launched;
}

absl::StatusOr<v1::Job> Orchestrator::DownloadThenServe(const v1::DownloadRequest& download,
                                                        const v1::ServeRequest& serve) {
  ASSIGN_OR_RETURN(auto prepared, PrepareDownload(download));
  auto& [node_id, command] = prepared;
  v1::ServeRequest then = serve;
  then.set_model_name(download.model_name());
  then.set_node(node_id);
  v1::Job job;
  job.set_kind("load");
  job.set_model_name(download.model_name());
  job.set_node_id(node_id);
  return Launch(std::move(job), std::move(command), std::move(then));
}

v1::CommandUpdate Orchestrator::ContinueLoad(const std::string& node_id,
                                             const v1::CommandUpdate& update) {
  std::optional<v1::ServeRequest> then;
  v1::Job job;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = active_.find(update.command_id());
    if (it == active_.end()) return update;
    then = it->second.then_serve;
    job = it->second.job;
  }
  if (!then.has_value()) {  // recovered after a host restart: the defaults
    then.emplace();
    then->set_model_name(job.model_name());
    then->set_node(node_id);
  }
  v1::CommandUpdate next = update;
  absl::StatusOr<PlannedServe> planned;
  {
    gswarm::MutexLock serve_lock(&serve_mu_);
    planned = PlanAndHold(*then, "");
  }
  if (!planned.ok()) {
    next.set_state(JobStateName(JobState::kFailed));
    next.set_message(
        absl::StrCat("downloaded, but the model cannot be served: ", planned.status().message()));
    return next;
  }
  planned->command.set_id(absl::StrCat(update.command_id(), "+serve"));
  {
    gswarm::MutexLock lock(&mu_);
    auto it = active_.find(update.command_id());
    if (it == active_.end()) return update;
    it->second.command = planned->command;
    it->second.then_serve.reset();
  }
  // Persisted with the serve as its command: a host restarted from here sends the serve again.
  if (absl::StatusOr<std::string> json = common::ToJson(planned->command); json.ok()) {
    if (absl::Status s = registry_->PutJob(job, *json); !s.ok()) {
      spdlog::error("job={}: persisting: {}", job.id(), s.message());
    }
  }
  spdlog::info("job={} load {}: downloaded on node={}; starting instance {}", update.command_id(),
               then->model_name(), node_id, planned->command.serve().instance_id());
  Dispatch(node_id, planned->command);
  next.set_state(JobStateName(JobState::kRunning));
  next.set_message("downloaded; starting the engine");
  return next;
}

absl::StatusOr<v1::Job> Orchestrator::SleepInstance(const v1::Instance& instance, int level) {
  const std::string& id = instance.id();
  if (level < 1 || level > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("sleep level ", level,
                     " is not one: 1 keeps the weights in CPU RAM, 2 drops "
                     "them (they are read again from the model's files on wake)"));
  }
  if (instance.max_sleep_level() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("instance ", id, "'s engine \"", instance.engine(),
                     "\" cannot sleep (engines with sleep and wake calls can: vllm, sglang)"));
  }
  if (static_cast<uint32_t>(level) > instance.max_sleep_level()) {
    return absl::FailedPreconditionError(absl::StrCat("instance ", id, "'s engine \"",
                                                      instance.engine(), "\" sleeps at level ",
                                                      instance.max_sleep_level(), " at most"));
  }
  // Out of rotation first, so that no request reaches an engine going to sleep (the router's
  // pool has drained its own already).
  const InstanceState state = instances_->State(id).value_or(InstanceState::kStopped);
  if (state == InstanceState::kReady) {
    RETURN_IF_ERROR(instances_->Drain(id, absl::StrCat("going to sleep (level ", level, ")")));
  } else if (state != InstanceState::kDraining) {
    return absl::FailedPreconditionError(absl::StrCat(
        "instance ", id, " is ", InstanceStateName(state), ": only a ready instance can sleep"));
  }
  v1::Command command;
  command.mutable_sleep()->set_instance_id(id);
  command.mutable_sleep()->set_level(static_cast<uint32_t>(level));
  absl::StatusOr<v1::Job> job =
      RunOnNode(instance.node_id(), instance.model_name(), "sleep", std::move(command));
  if (!job.ok()) {
    instances_->Undrain(id, absl::StrCat("the sleep could not be sent: ", job.status().message()))
        .IgnoreError();
  }
  return job;
}

absl::StatusOr<v1::Job> Orchestrator::WakeInstance(const v1::Instance& instance) {
  if (StateOf(instance) != InstanceState::kSleeping) {
    return absl::FailedPreconditionError(
        absl::StrCat("instance ", instance.id(), " is ", instance.state(), ", not sleeping"));
  }
  v1::Command command;
  command.mutable_wake()->set_instance_id(instance.id());
  return RunOnNode(instance.node_id(), instance.model_name(), "wake", std::move(command));
}

}  // namespace gswarm::host
