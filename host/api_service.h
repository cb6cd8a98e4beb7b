#pragma once

// gswarm.v1.GSwarm over gRPC's callback API: checks the token, calls ApiHandler, converts the
// status. Nothing else lives here.

#include <string>

#include "common/worker_pool.h"
#include "gswarm/v1/api.grpc.pb.h"
#include "host/api_handler.h"
#include "host/event_bus.h"
#include "host/orchestrator.h"

// Every unary RPC of gswarm.v1.GSwarm as X(Method, Request, Response): one list for the
// declarations here and the definitions in api_service.cc.
#define GSWARM_FOR_EACH_UNARY_RPC(X)                            \
  X(Health, HealthRequest, HealthResponse)                      \
  X(ListNodes, ListNodesRequest, ListNodesResponse)             \
  X(GetConfig, GetConfigRequest, GetConfigResponse)             \
  X(GetMemory, GetMemoryRequest, GetMemoryResponse)             \
  X(GetCapacity, GetCapacityRequest, GetCapacityResponse)       \
  X(RegisterModel, RegisterModelRequest, RegisterModelResponse) \
  X(ListModels, ListModelsRequest, ListModelsResponse)          \
  X(GetModel, GetModelRequest, Model)                           \
  X(DeleteModel, DeleteModelRequest, DeleteModelResponse)       \
  X(Discover, DiscoverRequest, DiscoverResponse)                \
  X(ValidateModel, ValidateModelRequest, ValidateModelResponse) \
  X(EvictDram, EvictDramRequest, EvictDramResponse)             \
  X(StopInstance, StopInstanceRequest, StopInstanceResponse)    \
  X(ListInstances, ListInstancesRequest, ListInstancesResponse) \
  X(SleepInstance, SleepInstanceRequest, Instance)              \
  X(WakeInstance, WakeInstanceRequest, Instance)                \
  X(UnloadModel, UnloadModelRequest, StopInstanceResponse)      \
  X(SwitchModel, SwitchModelRequest, SwitchModelResponse)       \
  X(GetJob, GetJobRequest, Job)                                 \
  X(ListJobs, ListJobsRequest, ListJobsResponse)                \
  X(CancelJob, GetJobRequest, Job)

// The RPCs that start a job and answer with it, as X(Method, Request): with `wait` set they are
// answered from a watch on the job when it ends, so no thread waits for it.
#define GSWARM_FOR_EACH_JOB_RPC(X) \
  X(Download, DownloadRequest)     \
  X(Copy, CopyRequest)             \
  X(Serve, ServeRequest)           \
  X(LoadModel, LoadModelRequest)

namespace gswarm::host {

class ApiService final : public v1::GSwarm::CallbackService {
 public:
  // The parts must outlive the service; unary handlers run on `pool`.
  ApiService(std::string auth_token, const ApiHandler* handler, Orchestrator* orchestrator,
             EventBus* events, common::WorkerPool* pool);

#define GSWARM_DECLARE_UNARY_RPC(Method, Request, Response)              \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context, \
                                   const v1::Request* request, v1::Response* response) override;
  GSWARM_FOR_EACH_UNARY_RPC(GSWARM_DECLARE_UNARY_RPC)
#define GSWARM_DECLARE_JOB_RPC(Method, Request) \
  GSWARM_DECLARE_UNARY_RPC(Method, Request, JobResponse)
  GSWARM_FOR_EACH_JOB_RPC(GSWARM_DECLARE_JOB_RPC)
#undef GSWARM_DECLARE_JOB_RPC
#undef GSWARM_DECLARE_UNARY_RPC

  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* context,
                                              const v1::GetJobRequest* request) override;
  grpc::ServerWriteReactor<v1::Event>* WatchEvents(grpc::CallbackServerContext* context,
                                                   const v1::WatchEventsRequest* request) override;
  grpc::ServerWriteReactor<v1::LogChunk>* GetInstanceLogs(
      grpc::CallbackServerContext* context, const v1::GetInstanceLogsRequest* request) override;

 private:
  const std::string auth_token_;
  const ApiHandler* const handler_;
  Orchestrator* const orchestrator_;
  EventBus* const events_;
  common::WorkerPool* const pool_;
  // Log streams relay an agent's HTTP answer for as long as the reader follows it: their own
  // threads, so that followers never starve the API's.
  common::WorkerPool log_pool_{"log streams", 4, 64};
};

}  // namespace gswarm::host
