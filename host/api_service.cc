#include "host/api_service.h"

#include <memory>
#include <optional>

#include "absl/synchronization/mutex.h"
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

// WatchJob: every new state of one job until it ends. The orchestrator holds only a weak
// reference; the stream keeps itself alive until gRPC calls OnDone. One write in flight; states
// that arrive meanwhile collapse into the newest, which is what a progress bar wants.
class JobWatchStream final : public grpc::ServerWriteReactor<v1::Job>,
                             public Orchestrator::JobSink,
                             public std::enable_shared_from_this<JobWatchStream> {
 public:
  static JobWatchStream* Start(grpc::CallbackServerContext* context, const std::string& auth_token,
                               Orchestrator* orchestrator, const std::string& job_id) {
    auto stream = std::make_shared<JobWatchStream>();
    stream->self_ = stream;
    absl::Status status = common::CheckGrpcAuthorization(auth_token, *context);
    if (status.ok()) status = orchestrator->Watch(job_id, stream);
    if (!status.ok()) stream->FinishOnce(common::ToGrpcStatus(status));
    return stream.get();
  }

  void OnJob(const v1::Job& job) override {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (writing_) {
        pending_ = job;
        return;
      }
      writing_ = true;
      current_ = job;
    }
    StartWrite(&current_);
  }

  void OnWriteDone(bool ok) override {
    bool write_next = false;
    bool finish = !ok;
    {
      absl::MutexLock lock(&mu_);
      if (ok && IsTerminalJobState(current_.state())) {
        finish = true;
      } else if (ok && pending_.has_value()) {
        current_ = *std::move(pending_);
        pending_.reset();
        write_next = true;
      }
      writing_ = write_next;
    }
    if (write_next) {
      StartWrite(&current_);
    } else if (finish) {
      FinishOnce(ok ? grpc::Status::OK
                    : grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away"));
    }
  }

  void OnCancel() override {
    bool idle;
    {
      absl::MutexLock lock(&mu_);
      idle = !writing_;
    }
    // With a write in flight, OnWriteDone(false) follows and finishes.
    if (idle) FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
  }

  void OnDone() override { std::shared_ptr<JobWatchStream> keep = std::move(self_); }

 private:
  void FinishOnce(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  v1::Job current_;  // the message being written; touched only by the writer
  std::optional<v1::Job> pending_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<JobWatchStream> self_;
};

}  // namespace

ApiService::ApiService(std::string auth_token, const ApiHandler* handler,
                       Orchestrator* orchestrator, common::WorkerPool* pool)
    : auth_token_(std::move(auth_token)),
      handler_(handler),
      orchestrator_(orchestrator),
      pool_(pool) {}

#define GSWARM_DEFINE_UNARY_RPC(Method, Request, Response)                                        \
  grpc::ServerUnaryReactor* ApiService::Method(                                                   \
      grpc::CallbackServerContext* context, const v1::Request* request, v1::Response* response) { \
    return Answer(context, auth_token_, pool_, response,                                          \
                  [this, request] { return handler_->Method(*request); });                        \
  }
GSWARM_FOR_EACH_UNARY_RPC(GSWARM_DEFINE_UNARY_RPC)
#undef GSWARM_DEFINE_UNARY_RPC

grpc::ServerWriteReactor<v1::Job>* ApiService::WatchJob(grpc::CallbackServerContext* context,
                                                        const v1::GetJobRequest* request) {
  return JobWatchStream::Start(context, auth_token_, orchestrator_, request->job_id());
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
