#pragma once

// The public API's logic, free of transport: gswarm.v1.GSwarm (api_service.cc) and the REST
// gateway (rest_gateway.cc) both call these methods, so the two faces cannot drift apart.
//
// Thread safety: thread-safe; every method may run on any gRPC or HTTP thread. Methods do not
// block on disk or network.

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "gswarm/v1/api.pb.h"
#include "host/instance_manager.h"
#include "host/node_registry.h"
#include "host/orchestrator.h"
#include "host/registry.h"
#include "host/router.h"
#include "host/router_placement.h"

namespace gswarm::host {

class ApiHandler {
 public:
  struct Options {
    common::Config config;  // effective config, as loaded
    bool auth_required = false;
    absl::Time started_at = absl::Now();
  };

  // The parts must outlive the handler.
  ApiHandler(Options options, NodeRegistry* nodes, Registry* registry, Orchestrator* orchestrator,
             InstanceManager* instances);

  absl::StatusOr<v1::HealthResponse> Health(const v1::HealthRequest& request) const;
  absl::StatusOr<v1::ListNodesResponse> ListNodes(const v1::ListNodesRequest& request) const;
  absl::StatusOr<v1::GetConfigResponse> GetConfig(const v1::GetConfigRequest& request) const;
  absl::StatusOr<v1::GetMemoryResponse> GetMemory(const v1::GetMemoryRequest& request) const;
  // Per online node and device, how many instances of the model fit now and on an empty device,
  // and what the router would evict for one more (`gswarm plan`).
  absl::StatusOr<v1::GetCapacityResponse> GetCapacity(const v1::GetCapacityRequest& request) const;

  // Models (disk tier) and jobs.
  absl::StatusOr<v1::RegisterModelResponse> RegisterModel(const v1::RegisterModelRequest&) const;
  absl::StatusOr<v1::ListModelsResponse> ListModels(const v1::ListModelsRequest&) const;
  absl::StatusOr<v1::Model> GetModel(const v1::GetModelRequest&) const;
  absl::StatusOr<v1::DeleteModelResponse> DeleteModel(const v1::DeleteModelRequest&) const;
  absl::StatusOr<v1::JobResponse> Download(const v1::DownloadRequest&) const;
  absl::StatusOr<v1::DiscoverResponse> Discover(const v1::DiscoverRequest&) const;
  absl::StatusOr<v1::ValidateModelResponse> ValidateModel(const v1::ValidateModelRequest&) const;
  absl::StatusOr<v1::Job> GetJob(const v1::GetJobRequest&) const;
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest&) const;
  absl::StatusOr<v1::Job> CancelJob(const v1::GetJobRequest&) const;

  // DRAM tier: copies and moves between tiers and nodes.
  absl::StatusOr<v1::JobResponse> Copy(const v1::CopyRequest&) const;
  absl::StatusOr<v1::EvictDramResponse> EvictDram(const v1::EvictDramRequest&) const;

  // GPU tier: inference instances.
  absl::StatusOr<v1::JobResponse> Serve(const v1::ServeRequest&) const;
  absl::StatusOr<v1::StopInstanceResponse> StopInstance(const v1::StopInstanceRequest&) const;
  absl::StatusOr<v1::ListInstancesResponse> ListInstances(const v1::ListInstancesRequest&) const;
  // Answer once the engine sleeps (its GPU memory freed) or is awake and healthy again.
  absl::StatusOr<v1::Instance> SleepInstance(const v1::SleepInstanceRequest&) const;
  absl::StatusOr<v1::Instance> WakeInstance(const v1::WakeInstanceRequest&) const;
  absl::StatusOr<v1::JobResponse> LoadModel(const v1::LoadModelRequest&) const;
  // Seed 004's POST /api/orchestrate/load: LoadModel, downloading the model first when missing.
  absl::StatusOr<v1::JobResponse> OrchestrateLoad(const v1::LoadModelRequest&) const;
  absl::StatusOr<v1::StopInstanceResponse> UnloadModel(const v1::UnloadModelRequest&) const;
  // Where the instance's node serves its log: base URL of its data port, and the path.
  absl::StatusOr<std::pair<std::string, std::string>> LogSource(
      const v1::GetInstanceLogsRequest& request) const;

  // The router's active-model alias (hot swap).
  absl::StatusOr<v1::SwitchModelResponse> SwitchModel(const v1::SwitchModelRequest&) const;
  // The router is built after the handler (it is installed on the REST server); set once.
  // The router (for SwitchModel) and its pool (what ListInstances and GetMemory tell of each
  // instance's traffic and unloading). Before serving.
  void set_router(Router* router, RouterPlacement* pool) {
    router_ = router;
    pool_ = pool;
  }

 private:
  // The catalog entry with its live state: available / loaded / offline, from its replicas and
  // whether their nodes are online.
  v1::Model WithState(v1::Model model) const;
  // What the router's pool knows of the instance (traffic, who unloads it and when).
  void Describe(v1::Instance* instance) const {
    if (pool_ != nullptr) pool_->Describe(instance);
  }
  // Waits for a job started on behalf of this request; ABORTED with the job's message if it did
  // not succeed.
  absl::StatusOr<v1::Job> Await(const v1::Job& job, absl::Duration timeout) const;

  const Options options_;
  NodeRegistry* const nodes_;
  Registry* const registry_;
  Orchestrator* const orchestrator_;
  InstanceManager* const instances_;
  Router* router_ = nullptr;
  RouterPlacement* pool_ = nullptr;
};

// What a caller that waited for `done` (an ended job) gets: the job when it succeeded, else
// ABORTED saying how it ended and why.
absl::StatusOr<v1::Job> EndedJob(const v1::Job& done);

}  // namespace gswarm::host
