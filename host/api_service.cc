#include "host/api_service.h"

#include <httplib.h>

#include <deque>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/grpc_util.h"
#include "common/mutex.h"
#include "host/once_finished.h"

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

// A call that started a job with `wait` set: answered when the job ends, from the
// orchestrator's watch on it (which holds this only weakly), so no thread waits. The reactor
// lives until gRPC is done with the call; a client that goes away cancels it.
class JobWaitReactor final : public OnceFinished<grpc::ServerUnaryReactor>,
                             public Orchestrator::JobSink,
                             public std::enable_shared_from_this<JobWaitReactor> {
 public:
  // Starts `start` (which returns the job begun, without waiting) on `pool`, then watches it.
  static JobWaitReactor* Start(grpc::CallbackServerContext* context, const std::string& token,
                               common::WorkerPool* pool, Orchestrator* orchestrator,
                               v1::JobResponse* response, bool wait,
                               std::function<absl::StatusOr<v1::JobResponse>()> start) {
    auto reactor = std::make_shared<JobWaitReactor>(response);
    reactor->self_ = reactor;
    if (absl::Status auth = common::CheckGrpcAuthorization(token, *context); !auth.ok()) {
      reactor->Answer(common::ToGrpcStatus(auth));
      return reactor.get();
    }
    std::weak_ptr<JobWaitReactor> weak = reactor;
    absl::Status queued = pool->Submit([weak, orchestrator, wait, start = std::move(start)] {
      std::shared_ptr<JobWaitReactor> alive = weak.lock();
      if (alive == nullptr) return;
      absl::StatusOr<v1::JobResponse> started = start();
      if (!started.ok()) return alive->Answer(common::ToGrpcStatus(started.status()));
      if (!wait) return alive->Answer(grpc::Status::OK, &started->job());
      absl::Status watched = orchestrator->Watch(started->job().id(), alive);
      if (!watched.ok()) alive->Answer(common::ToGrpcStatus(watched));
    });
    if (!queued.ok()) reactor->Answer(common::ToGrpcStatus(queued));
    return reactor.get();
  }

  explicit JobWaitReactor(v1::JobResponse* response) : response_(response) {}

  void OnJob(const v1::Job& job) override {
    if (!IsTerminal(JobStateOf(job))) return;
    absl::StatusOr<v1::Job> ended = EndedJob(job);
    if (!ended.ok()) return Answer(common::ToGrpcStatus(ended.status()));
    Answer(grpc::Status::OK, &*ended);
  }

  void OnShutdown(const v1::Job& job) override {
    Answer(common::ToGrpcStatus(ShuttingDownError(job.id())));
  }

  void OnCancel() override {
    Answer(grpc::Status(grpc::StatusCode::CANCELLED, "the caller went away"));
  }

  void OnDone() override { std::shared_ptr<JobWaitReactor> keep = std::move(self_); }

 private:
  // The answer is written only here, once, and before Finish: gRPC frees the response once the
  // call is done, which a cancelled call may be by the time a late job state arrives.
  void Answer(const grpc::Status& status, const v1::Job* job = nullptr) {
    FinishOnce(status, [&] {
      if (job != nullptr) *response_->mutable_job() = *job;
    });
  }

  v1::JobResponse* const response_;
  std::shared_ptr<JobWaitReactor> self_;
};

// WatchEvents: the events that match, as the bus delivers them. One write in flight; the rest
// wait in the subscription's bounded backlog, so a client that reads too slowly is dropped by
// the bus (RESOURCE_EXHAUSTED) instead of holding memory or slowing the host.
class EventWatchStream final : public OnceFinished<grpc::ServerWriteReactor<v1::Event>>,
                               public std::enable_shared_from_this<EventWatchStream> {
 public:
  static EventWatchStream* Start(grpc::CallbackServerContext* context,
                                 const std::string& auth_token, EventBus* bus,
                                 const v1::WatchEventsRequest& request) {
    auto stream = std::make_shared<EventWatchStream>();
    stream->self_ = stream;
    absl::Status status = common::CheckGrpcAuthorization(auth_token, *context);
    if (!status.ok()) {
      stream->FinishOnce(common::ToGrpcStatus(status));
      return stream.get();
    }
    EventFilter filter{
        {request.kinds().begin(), request.kinds().end()}, request.model_name(), request.node()};
    EventBus::Start start;
    if (request.since_seq() > 0) start.after = request.since_seq();
    start.last = request.last();
    start.follow = !request.no_follow();
    std::weak_ptr<EventWatchStream> weak = stream;
    absl::StatusOr<std::shared_ptr<EventSubscription>> subscription =
        bus->Subscribe(std::move(filter), start, [weak] {
          if (std::shared_ptr<EventWatchStream> alive = weak.lock()) alive->Pump();
        });
    if (!subscription.ok()) {
      stream->FinishOnce(common::ToGrpcStatus(subscription.status()));
      return stream.get();
    }
    {
      gswarm::MutexLock lock(&stream->mu_);
      stream->subscription_ = *std::move(subscription);
    }
    stream->Pump();
    return stream.get();
  }

  // Writes the next event if none is in flight; finishes once the subscription has ended and
  // everything it delivered is written.
  void Pump() {
    std::shared_ptr<EventSubscription> subscription;
    bool start_write = false;
    {
      gswarm::MutexLock lock(&mu_);
      if (writing_ || finished_ || subscription_ == nullptr) return;
      subscription = subscription_;
      std::optional<v1::Event> next = subscription->Next(absl::ZeroDuration());
      if (next.has_value()) {
        writing_ = start_write = true;
        current_ = *std::move(next);
      }
    }
    if (start_write) {
      StartWrite(&current_);
    } else if (subscription->ended()) {
      FinishOnce(common::ToGrpcStatus(subscription->end()));
    }
  }

  void OnWriteDone(bool ok) override {
    {
      gswarm::MutexLock lock(&mu_);
      writing_ = false;
    }
    if (!ok) return FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away"));
    Pump();
  }

  void OnCancel() override {
    bool idle;
    {
      gswarm::MutexLock lock(&mu_);
      idle = !writing_;
      if (subscription_ != nullptr) subscription_->Cancel();
    }
    if (idle) FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
  }

  void OnDone() override {
    {
      gswarm::MutexLock lock(&mu_);
      if (subscription_ != nullptr) subscription_->Cancel();
    }
    std::shared_ptr<EventWatchStream> keep = std::move(self_);
  }

 private:
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<EventSubscription> subscription_ ABSL_GUARDED_BY(mu_);
  v1::Event current_;  // the message being written; touched only by the writer
  std::shared_ptr<EventWatchStream> self_;
};

// WatchJob: every new state of one job until it ends. The orchestrator holds only a weak
// reference; the stream keeps itself alive until gRPC calls OnDone. One write in flight; states
// that arrive meanwhile collapse into the newest, which is what a progress bar wants.
class JobWatchStream final : public OnceFinished<grpc::ServerWriteReactor<v1::Job>>,
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
      gswarm::MutexLock lock(&mu_);
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
      gswarm::MutexLock lock(&mu_);
      if (ok && IsTerminal(JobStateOf(current_))) {
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
      gswarm::MutexLock lock(&mu_);
      idle = !writing_;
    }
    // With a write in flight, OnWriteDone(false) follows and finishes.
    if (idle) FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
  }

  void OnDone() override { std::shared_ptr<JobWatchStream> keep = std::move(self_); }

 private:
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  v1::Job current_;  // the message being written; touched only by the writer
  std::optional<v1::Job> pending_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<JobWatchStream> self_;
};

// GetInstanceLogs: relays the log from the instance's node (its data port) chunk by chunk. The
// HTTP read runs on the log pool; chunks wait in a short queue, and the reader is slowed when
// the client reads slower than the log grows.
class LogStream final : public OnceFinished<grpc::ServerWriteReactor<v1::LogChunk>>,
                        public std::enable_shared_from_this<LogStream> {
 public:
  static LogStream* Start(grpc::CallbackServerContext* context, const std::string& token,
                          const ApiHandler* handler, common::WorkerPool* pool,
                          const v1::GetInstanceLogsRequest& request) {
    auto stream = std::make_shared<LogStream>();
    stream->self_ = stream;
    absl::Status status = common::CheckGrpcAuthorization(token, *context);
    absl::StatusOr<std::pair<std::string, std::string>> source =
        status.ok() ? handler->LogSource(request)
                    : absl::StatusOr<std::pair<std::string, std::string>>(status);
    if (!source.ok()) {
      stream->FinishOnce(common::ToGrpcStatus(source.status()));
      return stream.get();
    }
    absl::Status queued =
        pool->Submit([stream, token, source = *source, follow = request.follow()] {
          stream->Relay(source.first, source.second, token, follow);
        });
    if (!queued.ok()) stream->FinishOnce(common::ToGrpcStatus(queued));
    return stream.get();
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    const v1::LogChunk* next = nullptr;
    {
      gswarm::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) cancelled_ = true;
      if (!queue_.empty() && ok) {
        next = &queue_.front();
      } else {
        writing_ = false;
        if (end_.has_value()) finish = end_;
      }
    }
    if (next != nullptr) {
      StartWrite(next);
    } else if (finish.has_value()) {
      FinishOnce(*finish);
    }
  }

  void OnCancel() override {
    gswarm::MutexLock lock(&mu_);
    cancelled_ = true;
    // A followed log with nothing new blocks the reader in recv: close its socket.
    if (client_ != nullptr) client_->stop();
  }

  void OnDone() override { std::shared_ptr<LogStream> keep = std::move(self_); }

 private:
  void Relay(const std::string& base_url, const std::string& path, const std::string& token,
             bool follow) {
    httplib::Client client(base_url);
    bool cancelled = false;
    {
      gswarm::MutexLock lock(&mu_);
      cancelled = cancelled_;
      if (!cancelled) client_ = &client;
    }
    // (Outside the lock: FinishOnce takes it.)
    if (cancelled) return FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    client.set_connection_timeout(5, 0);
    client.set_read_timeout(follow ? 24 * 3600 : 30, 0);
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    int http_status = 0;
    std::string error_body;
    auto result = client.Get(
        path.c_str(), headers,
        [&](const httplib::Response& response) {
          http_status = response.status;
          return true;
        },
        [&](const char* data, size_t length) {
          if (http_status != 200) {
            error_body.append(data, length);
            return true;
          }
          return Push(std::string(data, length));
        });
    {
      gswarm::MutexLock lock(&mu_);
      client_ = nullptr;
    }
    grpc::Status end = grpc::Status::OK;
    if (!result && !IsCancelled()) {
      end = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                         absl::StrCat("reading the log from ", base_url, ": ",
                                      httplib::to_string(result.error())));
    } else if (http_status != 200 && http_status != 0) {
      end = grpc::Status(
          http_status == 404 ? grpc::StatusCode::NOT_FOUND : grpc::StatusCode::UNAVAILABLE,
          absl::StrCat("the node answered HTTP ", http_status, ": ", error_body));
    }
    bool finish_now;
    {
      gswarm::MutexLock lock(&mu_);
      end_ = end;
      finish_now = !writing_;
    }
    if (finish_now) FinishOnce(end);
  }

  // Queues a chunk; false (stop reading) once the client has gone.
  bool Push(std::string data) {
    const v1::LogChunk* write = nullptr;
    {
      gswarm::MutexLock lock(&mu_);
      auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return cancelled_ || queue_.size() < 16;
      };
      mu_.Await(absl::Condition(&room));
      if (cancelled_) return false;
      v1::LogChunk chunk;
      chunk.set_data(std::move(data));
      queue_.push_back(std::move(chunk));
      if (!writing_) {
        writing_ = true;
        write = &queue_.front();
      }
    }
    if (write != nullptr) StartWrite(write);
    return true;
  }

  bool IsCancelled() {
    gswarm::MutexLock lock(&mu_);
    return cancelled_;
  }

  std::deque<v1::LogChunk> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> end_ ABSL_GUARDED_BY(mu_);
  httplib::Client* client_ ABSL_GUARDED_BY(mu_) = nullptr;  // while Relay reads
  std::shared_ptr<LogStream> self_;
};

}  // namespace

ApiService::ApiService(std::string auth_token, const ApiHandler* handler,
                       Orchestrator* orchestrator, EventBus* events, common::WorkerPool* pool)
    : auth_token_(std::move(auth_token)),
      handler_(handler),
      orchestrator_(orchestrator),
      events_(events),
      pool_(pool) {}

#define GSWARM_DEFINE_UNARY_RPC(Method, Request, Response)                                        \
  grpc::ServerUnaryReactor* ApiService::Method(                                                   \
      grpc::CallbackServerContext* context, const v1::Request* request, v1::Response* response) { \
    return Answer(context, auth_token_, pool_, response,                                          \
                  [this, request] { return handler_->Method(*request); });                        \
  }
GSWARM_FOR_EACH_UNARY_RPC(GSWARM_DEFINE_UNARY_RPC)
#undef GSWARM_DEFINE_UNARY_RPC

// The request is copied: the call's own may be gone by the time the pool gets to it.
#define GSWARM_DEFINE_JOB_RPC(Method, Request)                                           \
  grpc::ServerUnaryReactor* ApiService::Method(grpc::CallbackServerContext* context,     \
                                               const v1::Request* request,               \
                                               v1::JobResponse* response) {              \
    return JobWaitReactor::Start(context, auth_token_, pool_, orchestrator_, response,   \
                                 request->wait(), [this, started = *request]() mutable { \
                                   started.set_wait(false);                              \
                                   return handler_->Method(started);                     \
                                 });                                                     \
  }
GSWARM_FOR_EACH_JOB_RPC(GSWARM_DEFINE_JOB_RPC)
#undef GSWARM_DEFINE_JOB_RPC

grpc::ServerWriteReactor<v1::Job>* ApiService::WatchJob(grpc::CallbackServerContext* context,
                                                        const v1::GetJobRequest* request) {
  return JobWatchStream::Start(context, auth_token_, orchestrator_, request->job_id());
}

grpc::ServerWriteReactor<v1::Event>* ApiService::WatchEvents(
    grpc::CallbackServerContext* context, const v1::WatchEventsRequest* request) {
  return EventWatchStream::Start(context, auth_token_, events_, *request);
}

grpc::ServerWriteReactor<v1::LogChunk>* ApiService::GetInstanceLogs(
    grpc::CallbackServerContext* context, const v1::GetInstanceLogsRequest* request) {
  return LogStream::Start(context, auth_token_, handler_, &log_pool_, *request);
}

}  // namespace gswarm::host
