#pragma once

// gswarm.v1.GSwarm over gRPC's callback API: checks the token, calls ApiHandler, converts the
// status. Nothing else lives here.

#include <string>

#include "gswarm/v1/api.grpc.pb.h"
#include "host/api_handler.h"

namespace gswarm::host {

class ApiService final : public v1::GSwarm::CallbackService {
 public:
  // `handler` must outlive the service.
  ApiService(std::string auth_token, const ApiHandler* handler);

#define GSWARM_UNARY_RPC(Method, Request, Response)                      \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context, \
                                   const v1::Request* request, v1::Response* response) override;
  GSWARM_UNARY_RPC(Health, HealthRequest, HealthResponse)
  GSWARM_UNARY_RPC(ListNodes, ListNodesRequest, ListNodesResponse)
  GSWARM_UNARY_RPC(GetConfig, GetConfigRequest, GetConfigResponse)
  GSWARM_UNARY_RPC(GetMemory, GetMemoryRequest, GetMemoryResponse)
  GSWARM_UNARY_RPC(RegisterModel, RegisterModelRequest, RegisterModelResponse)
  GSWARM_UNARY_RPC(ListModels, ListModelsRequest, ListModelsResponse)
  GSWARM_UNARY_RPC(GetModel, GetModelRequest, Model)
  GSWARM_UNARY_RPC(DeleteModel, DeleteModelRequest, DeleteModelResponse)
  GSWARM_UNARY_RPC(Download, DownloadRequest, JobResponse)
  GSWARM_UNARY_RPC(Discover, DiscoverRequest, DiscoverResponse)
  GSWARM_UNARY_RPC(ValidateModel, ValidateModelRequest, ValidateModelResponse)
  GSWARM_UNARY_RPC(Copy, CopyRequest, JobResponse)
  GSWARM_UNARY_RPC(EvictDram, EvictDramRequest, EvictDramResponse)
  GSWARM_UNARY_RPC(Serve, ServeRequest, JobResponse)
  GSWARM_UNARY_RPC(StopInstance, StopInstanceRequest, StopInstanceResponse)
  GSWARM_UNARY_RPC(ListInstances, ListInstancesRequest, ListInstancesResponse)
  GSWARM_UNARY_RPC(LoadModel, LoadModelRequest, JobResponse)
  GSWARM_UNARY_RPC(UnloadModel, UnloadModelRequest, StopInstanceResponse)
  GSWARM_UNARY_RPC(SwitchModel, SwitchModelRequest, SwitchModelResponse)
  GSWARM_UNARY_RPC(GetJob, GetJobRequest, Job)
  GSWARM_UNARY_RPC(ListJobs, ListJobsRequest, ListJobsResponse)
  GSWARM_UNARY_RPC(CancelJob, GetJobRequest, Job)
#undef GSWARM_UNARY_RPC

  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* context,
                                              const v1::GetJobRequest* request) override;
  grpc::ServerWriteReactor<v1::Event>* WatchEvents(grpc::CallbackServerContext* context,
                                                   const v1::WatchEventsRequest* request) override;
  grpc::ServerWriteReactor<v1::LogChunk>* GetInstanceLogs(
      grpc::CallbackServerContext* context, const v1::GetInstanceLogsRequest* request) override;

 private:
  const std::string auth_token_;
  const ApiHandler* const handler_;
};

}  // namespace gswarm::host
