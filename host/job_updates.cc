// Orchestrator's side of jobs once they run: agents' updates applied in order, results recorded
// in the catalog, cancel, and the reads and watches of the API.

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "common/status.h"
#include "common/units.h"
#include "host/host_metrics.h"
#include "host/orchestrator.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

// A job's transfer rate is measured over at least this long, and smoothed by this weight of the
// previous figure, so that the ETA a person sees does not jump around.
constexpr absl::Duration kRateWindow = absl::Milliseconds(500);
constexpr double kRateSmoothing = 0.7;

}  // namespace

void Orchestrator::ApplyUpdate(const std::string& node_id, const v1::CommandUpdate& received) {
  // Runs on the event queue, one update at a time. The job's new state is decided under mu_;
  // what it caused (instance reports, catalog rows, the database) is written outside it, and the
  // job leaves the active set only once all of that is recorded.
  // A job's later step runs under its own command id ("<job>+serve": an agent answers a command
  // id it has run with that command's result); updates apply to the job.
  v1::CommandUpdate update = received;
  update.set_command_id(received.command_id().substr(0, received.command_id().find('+')));
  if (update.state() == JobStateName(JobState::kSucceeded)) {
    // A "load" whose download is done: its files are recorded, and it goes on as the serve.
    std::optional<v1::Job> loading;
    v1::Command download;
    {
      gswarm::MutexLock lock(&mu_);
      auto it = active_.find(update.command_id());
      if (it != active_.end() && it->second.job.kind() == "load" &&
          it->second.command.has_download() && it->second.job.node_id() == node_id) {
        loading = it->second.job;
        download = it->second.command;
      }
    }
    if (loading.has_value()) {
      RecordResult(*loading, download, update);
      update = ContinueLoad(node_id, update);
    }
  }
  v1::Job job;
  v1::Command command;
  std::string from;
  bool persist = false;
  std::vector<std::weak_ptr<JobSink>> sinks;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = active_.find(update.command_id());
    if (it == active_.end()) {
      spdlog::debug("node={}: update for unknown or finished job {} ignored", node_id,
                    update.command_id());
      return;
    }
    ActiveJob& active = it->second;
    if (active.job.node_id() != node_id) {
      spdlog::warn("job={}: update from node={} ignored (the job runs on node={})", active.job.id(),
                   node_id, active.job.node_id());
      return;
    }
    from = active.job.state();
    const std::optional<JobState> to = ParseJobState(update.state());
    if (!to.has_value() || !IsAllowedJobTransition(JobStateOf(active.job), *to)) {
      spdlog::warn("job={}: update from node={} to \"{}\" refused (the job is {})", active.job.id(),
                   node_id, update.state(), from);
      return;
    }
    UpdateJob(active, *to, update);
    const absl::Time now = absl::Now();
    persist = from != update.state() || IsTerminal(*to) ||
              now - active.last_persisted >= absl::Seconds(1);
    if (persist) active.last_persisted = now;
    job = active.job;
    command = active.command;
    std::erase_if(active.sinks, [](const std::weak_ptr<JobSink>& sink) { return sink.expired(); });
    sinks = active.sinks;
  }
  const bool terminal = IsTerminal(JobStateOf(job));
  if (terminal) {
    if (job.has_instance()) {
      instances_->ApplyReport(node_id, job.instance());
    } else if (command.has_serve()) {
      instances_->PlanEnded(command.serve().instance_id(),
                            absl::StrCat("serve ", job.state(), ": ", job.message()));
    }
    if ((command.has_stop() || command.has_sleep()) && JobStateOf(job) != JobState::kSucceeded) {
      // The engine runs on, awake: a drained instance goes back into rotation (no-op otherwise,
      // e.g. one the agent stopped because its sleep freed no GPU memory).
      const std::string& id =
          command.has_stop() ? command.stop().instance_id() : command.sleep().instance_id();
      instances_
          ->Undrain(id, absl::StrCat("its ", job.kind(), " ", job.state(), ": ", job.message()))
          .IgnoreError();
    }
    if (JobStateOf(job) == JobState::kSucceeded) RecordResult(job, command, update);
    if (options_.metrics != nullptr) options_.metrics->JobEnded(job, command);
    spdlog::info("job={} {} {} on node={}: {}{}{}", job.id(), job.kind(), job.model_name(), node_id,
                 job.state(), job.message().empty() ? "" : ": ", job.message());
  }
  if (persist) {
    if (absl::Status s = registry_->PutJob(job); !s.ok()) {
      spdlog::error("job={}: persisting: {}", job.id(), s.message());
    }
  }
  if (from != job.state()) {
    PublishJob(job, from);
  } else if (persist && !terminal && job.bytes_done() > 0) {
    PublishProgress(job);  // the persist cadence: at most once a second
  }
  if (terminal) {
    gswarm::MutexLock lock(&mu_);
    active_.erase(job.id());
  }
  for (const std::weak_ptr<JobSink>& weak : sinks) {
    if (std::shared_ptr<JobSink> sink = weak.lock()) sink->OnJob(job);
  }
}

void Orchestrator::UpdateJob(ActiveJob& active, JobState to, const v1::CommandUpdate& update) {
  v1::Job& job = active.job;
  job.set_state(JobStateName(to));
  job.set_message(update.message());
  // A load's serve step (whose updates carry no figures) keeps those of its download.
  if (!(job.kind() == "load" && update.bytes_total() == 0)) {
    job.set_bytes_done(update.bytes_done());
    job.set_bytes_total(update.bytes_total());
    job.set_files_done(update.files_done());
    job.set_files_total(update.files_total());
  }
  if (update.bytes_from_hub() > 0 || update.bytes_from_peers() > 0) {
    job.set_bytes_from_hub(update.bytes_from_hub());
    job.set_bytes_from_peers(update.bytes_from_peers());
  }
  const absl::Time now = absl::Now();
  *job.mutable_updated_at() = common::ToTimestamp(now);
  if (active.last_rate_at == absl::Time()) {
    active.last_rate_at = now;
    active.last_rate_bytes = update.bytes_done();
  } else if (now - active.last_rate_at >= kRateWindow) {
    const double seconds = absl::ToDoubleSeconds(now - active.last_rate_at);
    const double bytes =
        static_cast<double>(update.bytes_done()) - static_cast<double>(active.last_rate_bytes);
    // Smooth over a few updates so the ETA a person sees does not jump around.
    const double instant = std::max(0.0, bytes / seconds);
    job.set_rate_bytes_per_s(job.rate_bytes_per_s() == 0 ? instant
                                                         : kRateSmoothing * job.rate_bytes_per_s() +
                                                               (1 - kRateSmoothing) * instant);
    active.last_rate_at = now;
    active.last_rate_bytes = update.bytes_done();
  }
  if (IsTerminal(to)) {
    *job.mutable_finished_at() = job.updated_at();
    if (update.has_replica()) {
      *job.mutable_replica() = update.replica();
      job.mutable_replica()->set_node_id(job.node_id());
    }
    if (update.has_instance()) {
      *job.mutable_instance() = update.instance();
      job.mutable_instance()->set_node_id(job.node_id());
    }
  }
}

void Orchestrator::RecordResult(const v1::Job& job, const v1::Command& command,
                                const v1::CommandUpdate& update) {
  auto check = [&job](const absl::Status& status) {
    if (!status.ok()) spdlog::error("job={}: recording the result: {}", job.id(), status.message());
  };
  if (job.kind() == "discover") {
    v1::Hello inventory;
    inventory.set_node_id(job.node_id());
    *inventory.mutable_replicas() = update.replicas();
    Reconcile(inventory, /*asked=*/true);
    return;
  }
  auto remove_replica = [&](const std::string& model, const std::string& tier,
                            const std::string& why) {
    check(registry_->DeleteReplica(model, job.node_id(), tier));
    PublishReplica("removed", job.node_id(), model, tier, why);
  };
  if (job.kind() == "delete") {
    remove_replica(job.model_name(), update.has_replica() ? update.replica().tier() : "disk",
                   absl::StrCat("deleted by job ", job.id()));
    return;
  }
  // Copies the agent removed on the way: models evicted to make room, the source of a move.
  for (const v1::Replica& removed : update.replicas()) {
    remove_replica(removed.model_name(), removed.tier(),
                   absl::StrCat("removed by job ", job.id(), " (", job.kind(), ")"));
  }
  if (command.has_copy() && !command.copy().keep_source() &&
      !command.copy().source_node().empty()) {
    // A move across nodes: the target has its copy, so the source's goes now.
    v1::Command remove;
    remove.mutable_delete_()->set_model_name(job.model_name());
    remove.mutable_delete_()->set_tier(command.copy().source_tier());
    const std::string& source_node = command.copy().source_node();
    absl::StatusOr<v1::Job> started = RunOnNode(source_node, job.model_name(), "delete", remove);
    if (!started.ok()) {
      spdlog::error("job={}: removing the moved model's source on node={}: {}", job.id(),
                    source_node, started.status().message());
    }
  }
  if (update.has_model()) {
    absl::StatusOr<v1::Model> model = registry_->GetModel(job.model_name());
    if (model.ok()) {
      if (!update.model().commit().empty()) model->set_commit(update.model().commit());
      if (update.model().size_bytes() != 0) model->set_size_bytes(update.model().size_bytes());
      if (update.model().has_metadata()) *model->mutable_metadata() = update.model().metadata();
      if (update.model().files_size() > 0) *model->mutable_files() = update.model().files();
      check(registry_->PutModel(*model));
    } else {
      check(model.status());
    }
  }
  if (update.has_replica()) {
    v1::Replica replica = update.replica();
    replica.set_node_id(job.node_id());
    check(registry_->PutReplica(job.model_name(), replica));
    PublishReplica("appeared", job.node_id(), job.model_name(), replica.tier(),
                   absl::StrCat("by job ", job.id(), " (", job.kind(), ")"));
  }
}

absl::StatusOr<v1::Job> Orchestrator::CancelJob(const std::string& id) {
  std::string node_id;
  std::string command_id;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it == active_.end()) {
      ASSIGN_OR_RETURN(v1::Job job, registry_->GetJob(id));
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " has already ended (", job.state(), ")"));
    }
    node_id = it->second.job.node_id();
    command_id = it->second.command.id();
  }
  if (!nodes_->GetOnline(node_id).has_value()) {
    // Nobody to tell: the job ends here, through the queue that orders every job update; the
    // agent drops the command if it comes back.
    v1::CommandUpdate cancelled;
    cancelled.set_command_id(id);
    cancelled.set_state(JobStateName(JobState::kCancelled));
    cancelled.set_message("cancelled while its node was offline");
    gswarm::Notification applied;
    RETURN_IF_ERROR(events_.Submit([&] {
      ApplyUpdate(node_id, cancelled);
      applied.Notify();
    }));
    applied.WaitForNotification();
    return GetJob(id);
  }
  v1::HostMessage message;
  message.mutable_cancel()->set_command_id(command_id);
  nodes_->Send(node_id, std::move(message));
  return GetJob(id);
}

absl::StatusOr<v1::Job> Orchestrator::GetJob(const std::string& id) const {
  {
    gswarm::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) return it->second.job;
  }
  return registry_->GetJob(id);
}

std::vector<v1::Job> Orchestrator::ActiveJobs() const {
  gswarm::MutexLock lock(&mu_);
  std::vector<v1::Job> jobs;
  jobs.reserve(active_.size());
  for (const auto& [id, active] : active_) jobs.push_back(active.job);
  return jobs;
}

std::vector<v1::Job> Orchestrator::ListJobs(const v1::ListJobsRequest& request) const {
  Registry::JobFilter filter;
  filter.state = request.state();
  filter.model_name = request.model_name();
  filter.limit = request.limit() == 0 ? 100 : request.limit();
  std::vector<v1::Job> jobs = registry_->ListJobs(filter);
  // The database may lag a second behind on progress: show what the host knows now.
  gswarm::MutexLock lock(&mu_);
  for (v1::Job& job : jobs) {
    auto it = active_.find(job.id());
    if (it != active_.end()) job = it->second.job;
  }
  return jobs;
}

absl::StatusOr<v1::Job> Orchestrator::WaitJob(const std::string& id, absl::Time deadline) const {
  {
    gswarm::MutexLock lock(&mu_);
    auto ended = [this, &id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return shutting_down_ || !active_.contains(id);
    };
    mu_.AwaitWithDeadline(absl::Condition(&ended), deadline);
    if (shutting_down_ && active_.contains(id)) {
      return ShuttingDownError(id);
    }
  }
  return GetJob(id);
}

void Orchestrator::StopEvents() { events_.Stop(); }

void Orchestrator::Shutdown() {
  std::vector<std::pair<std::shared_ptr<JobSink>, v1::Job>> watching;
  {
    gswarm::MutexLock lock(&mu_);
    shutting_down_ = true;  // waiters re-check their condition when mu_ is released
    for (auto& [id, active] : active_) {
      for (const std::weak_ptr<JobSink>& weak : active.sinks) {
        if (std::shared_ptr<JobSink> sink = weak.lock()) watching.emplace_back(sink, active.job);
      }
      active.sinks.clear();
    }
  }
  for (const auto& [sink, job] : watching) sink->OnShutdown(job);
}

absl::Status ShuttingDownError(const std::string& id) {
  return absl::UnavailableError(absl::StrCat("host is shutting down; job ", id,
                                             " goes on when it is back (GET /jobs/", id, ")"));
}

absl::Status Orchestrator::Watch(const std::string& id, std::weak_ptr<JobSink> sink) {
  {
    gswarm::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) {
      if (shutting_down_) {
        return ShuttingDownError(id);
      }
      // The current state first, under mu_, so that no newer one can overtake it.
      if (std::shared_ptr<JobSink> alive = sink.lock()) alive->OnJob(it->second.job);
      it->second.sinks.push_back(std::move(sink));
      return absl::OkStatus();
    }
  }
  // Already over (an ended job is in the database before it leaves the active set): one final
  // state, read without mu_, then the sink is done.
  ASSIGN_OR_RETURN(v1::Job job, registry_->GetJob(id));
  if (std::shared_ptr<JobSink> alive = sink.lock()) alive->OnJob(job);
  return absl::OkStatus();
}

}  // namespace gswarm::host
