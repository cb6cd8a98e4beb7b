#include "host/api_service.h"

#include "common/grpc_util.h"

namespace gswarm::host {
namespace {

// Answers a unary call: the token first, then the handler's result or error. The handler runs
// on `pool`, never on gRPC's callback thread: it may touch the disk or wait on agents.
template <typename Response, typename Call>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context,
                                 const std::string& auth_token, common::WorkerPool* pool,
                                 Response* response, Call call) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status auth = common::CheckGrpcAuthorization(auth_token, *context); !auth.ok()) {
    reactor->Finish(common::ToGrpcStatus(auth));
    return reactor;
  }
  absl::Status queued = pool->Submit([reactor, response, call = std::move(call)] {
    absl::StatusOr<Response> result = call();
    if (result.ok()) *response = *std::move(result);
    reactor->Finish(common::ToGrpcStatus(result.status()));
  });
  if (!queued.ok()) reactor->Finish(common::ToGrpcStatus(queued));
  return reactor;
}

// A server stream that ends at once with `status` (refused or not built yet).
template <typename Message>
class FinishedWriter final : public grpc::ServerWriteReactor<Message> {
 public:
  explicit FinishedWriter(const absl::Status& status) {
    this->Finish(common::ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

template <typename Message>
grpc::ServerWriteReactor<Message>* RefuseStream(grpc::CallbackServerContext* context,
                                                const std::string& auth_token,
                                                absl::string_view rpc, absl::string_view feature) {
  absl::Status status = common::CheckGrpcAuthorization(auth_token, *context);
  if (status.ok()) status = NotYetImplemented(rpc, feature);
  return new FinishedWriter<Message>(status);
}

}  // namespace

ApiService::ApiService(std::string auth_token, const ApiHandler* handler, common::WorkerPool* pool)
    : auth_token_(std::move(auth_token)), handler_(handler), pool_(pool) {}

#define GSWARM_DEFINE_UNARY_RPC(Method, Request, Response)                                        \
  grpc::ServerUnaryReactor* ApiService::Method(                                                   \
      grpc::CallbackServerContext* context, const v1::Request* request, v1::Response* response) { \
    return Answer(context, auth_token_, pool_, response,                                          \
                  [this, request] { return handler_->Method(*request); });                        \
  }
GSWARM_FOR_EACH_UNARY_RPC(GSWARM_DEFINE_UNARY_RPC)
#undef GSWARM_DEFINE_UNARY_RPC

grpc::ServerWriteReactor<v1::Job>* ApiService::WatchJob(grpc::CallbackServerContext* context,
                                                        const v1::GetJobRequest*) {
  return RefuseStream<v1::Job>(context, auth_token_, "WatchJob", "model registry and downloads");
}

grpc::ServerWriteReactor<v1::Event>* ApiService::WatchEvents(grpc::CallbackServerContext* context,
                                                             const v1::WatchEventsRequest*) {
  return RefuseStream<v1::Event>(context, auth_token_, "WatchEvents", "cluster events");
}

grpc::ServerWriteReactor<v1::LogChunk>* ApiService::GetInstanceLogs(
    grpc::CallbackServerContext* context, const v1::GetInstanceLogsRequest*) {
  return RefuseStream<v1::LogChunk>(context, auth_token_, "GetInstanceLogs", "inference instances");
}

}  // namespace gswarm::host
