#pragma once

// Jobs: turns API requests into Commands for agents, and the agents' CommandUpdates into job
// states, catalog entries and replicas. Jobs persist in the Registry, so a host restart resumes
// them: every unfinished job is sent again when its node reconnects (commands are idempotent on
// the agent, and downloads resume from their partial files).
//
// Thread safety: thread-safe. Agent events are applied in order on one event thread.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "common/worker_pool.h"
#include "gswarm/v1/api.pb.h"
#include "host/agent_listener.h"
#include "host/event_bus.h"
#include "host/instance_manager.h"
#include "host/job_state.h"
#include "host/node_registry.h"
#include "host/registry.h"
#include "host/serve_planner.h"

namespace gswarm::host {

class HostMetrics;

class Orchestrator final : public AgentListener {
 public:
  // Receives every new state of a watched job, from the end of Watch() until the job ends.
  class JobSink {
   public:
    virtual ~JobSink() = default;
    virtual void OnJob(const v1::Job& job) = 0;
    // The host is shutting down with the job still running: no more states will come.
    virtual void OnShutdown(const v1::Job& job) { (void)job; }
  };

  struct Options {
    // Pull hf:// commits that an online node already holds from that node (host.prefer_peers).
    bool prefer_peers = true;
    // Register the models agents find in their Hugging Face caches when they connect
    // (host.auto_discover_models); off, only those registered already (or by POST /discover).
    bool auto_discover_models = true;
    // Told of every job that ends (GET /metrics); may be null.
    HostMetrics* metrics = nullptr;
  };

  // The parts must outlive the orchestrator; `events` may be null.
  Orchestrator(Options options, Registry* registry, NodeRegistry* nodes, InstanceManager* instances,
               EventBus* events);
  ~Orchestrator() override;

  // Loads the jobs a previous run left unfinished.
  absl::Status Recover();

  void OnAgentConnecting(const std::string& node_id) override;
  void OnAgentRefused(const std::string& node_id) override;
  void OnAgentConnected(const v1::Hello& hello) override;
  void OnCommandUpdate(const std::string& node_id, const v1::CommandUpdate& update) override;
  void OnInstancesChanged(const std::string& node_id,
                          const std::vector<v1::Instance>& instances) override;

  // The node asked for, else one holding the model: DRAM before disk, and a node whose GPU has
  // room before one whose GPU has not; the tier asked for, else the fastest there; the GPU asked
  // for, else the one with most room, else the CPU. NOT_FOUND when no online node holds the
  // model; a plan that does not fit is not an error (the router makes room and plans again).
  absl::StatusOr<ServePlan> PlanServe(const v1::ServeRequest& request) const;
  // Every node's plan, in that order of preference (one per node); never empty.
  absl::StatusOr<std::vector<ServePlan>> PlanServeEverywhere(const v1::ServeRequest& request) const;
  // Starts an instance where PlanServe says. FAILED_PRECONDITION when the model does not fit the
  // GPU's budget (says needed vs free), NOT_FOUND when no online node holds it. Planning and
  // launching are one step, so concurrent serves never count the same room twice.
  // `managed_by` is recorded on the instance (v1::Instance.managed_by): "" for the operator's.
  absl::StatusOr<v1::Job> Serve(const v1::ServeRequest& request,
                                const std::string& managed_by = "");
  // Stops one instance; the job ends when its processes are gone.
  absl::StatusOr<v1::Job> StopInstance(const v1::Instance& instance, bool force);
  // Puts a ready instance's engine to sleep at `level` (1 or 2), out of rotation first; the job
  // ends once it sleeps and the node saw its GPU memory freed. A failed sleep puts it back into
  // rotation (or the agent stopped it, when the memory stayed taken). FAILED_PRECONDITION when it
  // is not ready or its engine cannot sleep at that level.
  absl::StatusOr<v1::Job> SleepInstance(const v1::Instance& instance, int level);
  // Wakes a sleeping instance; the job ends when its engine is healthy again.
  absl::StatusOr<v1::Job> WakeInstance(const v1::Instance& instance);

  // Downloads a model (as Download) and then serves it where it landed (as Serve, with
  // `serve`'s engine, device and port): one job of kind "load" with the download's progress,
  // then the serve's instance. A serve that cannot be planned once the files are there fails the
  // job saying why (the download stays). After a host restart mid-download the serve takes the
  // defaults.
  absl::StatusOr<v1::Job> DownloadThenServe(const v1::DownloadRequest& download,
                                            const v1::ServeRequest& serve);
  // Registers the model if new, picks a node and starts the download. INVALID_ARGUMENT for a
  // bad name or source, FAILED_PRECONDITION when the name is taken by another source,
  // UNAVAILABLE when no node can take it.
  absl::StatusOr<v1::Job> Download(const v1::DownloadRequest& request);
  // Copies or moves a model between tiers of one node, or between nodes (the target pulls from
  // the source's data port). INVALID_ARGUMENT for bad tiers, NOT_FOUND when no copy exists
  // on the source tier.
  absl::StatusOr<v1::Job> Copy(const v1::CopyRequest& request);
  // Asks every online node (or `node`) to scan for models; one job per node.
  absl::StatusOr<std::vector<v1::Job>> Discover(const std::string& node);
  // Sends a command for `model` to `node` and returns its job (delete, validate).
  absl::StatusOr<v1::Job> RunOnNode(const std::string& node, const std::string& model,
                                    const std::string& kind, v1::Command command);

  absl::StatusOr<v1::Job> CancelJob(const std::string& id);
  absl::StatusOr<v1::Job> GetJob(const std::string& id) const;
  std::vector<v1::Job> ListJobs(const v1::ListJobsRequest& request) const;
  // Blocks until the job has ended or `deadline` passes; returns its state then. UNAVAILABLE
  // once Shutdown() was called while the job still runs.
  absl::StatusOr<v1::Job> WaitJob(const std::string& id, absl::Time deadline) const;
  // Wakes every WaitJob now and makes later ones return at once, and tells every watcher
  // (JobSink::OnShutdown): the host is going away, and the requests waiting on jobs must end
  // before the REST and gRPC servers can stop.
  void Shutdown();
  // Applies the agent events already queued and refuses later ones: after it, nothing the agents
  // sent reaches the instance manager's listeners (the router's pool), which the host can then
  // tear down. Call once the agent link is closed.
  void StopEvents();
  // Sends the job's current state to `sink` now and every change after; a sink that is gone
  // (expired) is dropped. NOT_FOUND for an unknown job.
  absl::Status Watch(const std::string& id, std::weak_ptr<JobSink> sink);
  // The jobs not yet ended.
  std::vector<v1::Job> ActiveJobs() const;
  // What serve planning looks at for `model`, now (GetCapacity reads it too). NOT_FOUND for an
  // unknown model.
  absl::StatusOr<ServeSnapshot> Snapshot(const std::string& model) const;

 private:
  struct ActiveJob {
    v1::Job job;
    v1::Command command;
    absl::Time last_persisted;
    absl::Time last_rate_at;
    uint64_t last_rate_bytes = 0;
    std::vector<std::weak_ptr<JobSink>> sinks;
    // A "load": the serve that follows the download (DownloadThenServe).
    std::optional<v1::ServeRequest> then_serve;
  };
  // A serve planned and its room held, ready to launch on `node_id`.
  struct PlannedServe {
    std::string node_id;
    v1::Command command;
  };

  absl::StatusOr<std::string> PickNode(const std::string& requested) const;
  absl::StatusOr<v1::Job> Launch(v1::Job job, v1::Command command,
                                 std::optional<v1::ServeRequest> then_serve = std::nullopt);
  // Plans `request` and holds its room (the instance is planned in the instance manager; the
  // caller launches the command or ends the plan). FAILED_PRECONDITION when it does not fit.
  absl::StatusOr<PlannedServe> PlanAndHold(const v1::ServeRequest& request,
                                           const std::string& managed_by)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(serve_mu_);
  // Where a download goes and its command (Download and DownloadThenServe).
  absl::StatusOr<std::pair<std::string, v1::Command>> PrepareDownload(
      const v1::DownloadRequest& request);
  // A "load" job's download succeeded (`update`): the job goes on as the serve, or fails saying
  // why the serve cannot start. Returns the update to apply as the job's (running or failed).
  v1::CommandUpdate ContinueLoad(const std::string& node_id, const v1::CommandUpdate& update);
  void Dispatch(const std::string& node_id, const v1::Command& command);
  void ApplyUpdate(const std::string& node_id, const v1::CommandUpdate& update);
  // The job's state (`to`, an allowed edge) and fields from the update, and its smoothed rate.
  // REQUIRES: mu_ held.
  void UpdateJob(ActiveJob& active, JobState to, const v1::CommandUpdate& update)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the registry hold what the node reported. Models found in its Hugging Face cache are
  // registered when `asked` (a discover) or host.auto_discover_models, else only if known.
  void Reconcile(const v1::Hello& hello, bool asked);
  // One connect's hold on planning (OnAgentConnecting) is over.
  void InventoryApplied(const std::string& node_id) ABSL_LOCKS_EXCLUDED(mu_);
  void RecordResult(const v1::Job& job, const v1::Command& command,
                    const v1::CommandUpdate& update);
  // The data port URLs of up to `limit` online nodes that hold `commit` of hf://`repo`.
  std::vector<std::string> PeersHolding(const std::string& repo, const std::string& commit,
                                        const std::string& except_node, size_t limit) const;
  // Publishes a job's state change.
  void PublishJob(const v1::Job& job, const std::string& from) const;
  // A "job" event with action "progress": bytes and files so far (at most once a second a job).
  void PublishProgress(const v1::Job& job) const;
  void PublishReplica(const std::string& action, const std::string& node_id,
                      const std::string& model, const std::string& tier,
                      const std::string& why) const;

  const Options options_;
  Registry* const registry_;
  NodeRegistry* const nodes_;
  InstanceManager* const instances_;
  EventBus* const events_bus_;
  // Held across a serve's plan and launch. Taken before mu_.
  gswarm::Mutex serve_mu_;
  mutable gswarm::Mutex mu_;
  absl::flat_hash_map<std::string, ActiveJob> active_ ABSL_GUARDED_BY(mu_);
  // Nodes connected whose Hello inventory the event thread has not applied yet (a count: an agent
  // may reconnect before the first is applied).
  absl::flat_hash_map<std::string, int> inventory_pending_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Agent events in arrival order, off gRPC's threads.
  common::WorkerPool events_{"agent event queue", 1, 1 << 20};
};

// http://<address the node connected from>:<its data port>, or "" when it serves none.
std::string NodeDataUrl(const v1::NodeInfo& node);
// Where the host reaches an instance's `endpoint` on `node`: an engine listening on all addresses
// (0.0.0.0, ::) or on loopback, on another machine, is reached at the address the node's agent
// connected from; any other endpoint is used as it is.
std::string NodeEndpoint(const v1::NodeInfo& node, const std::string& endpoint);

// UNAVAILABLE for a caller waiting on job `id` while the host shuts down: the job goes on.
absl::Status ShuttingDownError(const std::string& id);

}  // namespace gswarm::host
