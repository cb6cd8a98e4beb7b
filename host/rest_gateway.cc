#include "host/rest_gateway.h"

#include <httplib.h>

#include <functional>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "boost/asio/post.hpp"
#include "boost/asio/steady_timer.hpp"
#include "common/auth.h"
#include "common/grpc_util.h"
#include "common/mutex.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "host/dashboard.h"
#include "host/event_bus.h"
#include "host/http_upstream.h"
#include "host/job_state.h"
#include "host/orchestrator.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

constexpr absl::Duration kSseKeepAlive = absl::Seconds(15);

http::Response JsonReply(std::string json) {
  http::Response response;
  response.body = std::move(json) + "\n";
  return response;
}

http::Response StatusReply(const absl::Status& status) {
  http::Response response;
  response.status = common::HttpStatusFor(status.code());
  response.body = common::ErrorJson(status) + "\n";
  return response;
}

// Query parameters become JSON fields: "true"/"false" are booleans, everything else a string
// (protobuf's JSON parser accepts numbers written as strings).
std::string QueryAsJson(const http::Request& req) {
  nlohmann::json fields = nlohmann::json::object();
  for (const auto& [key, value] : req.params) {
    if (value == "true" || value == "false") {
      fields[key] = value == "true";
    } else {
      fields[key] = value;
    }
  }
  return common::DumpJson(fields);
}

// Fills a request from the body (POST, DELETE) or the query string (GET), then sets the named
// path fields from the route's capture groups.
template <typename Request>
absl::Status ParseRequest(const http::Request& req, const std::vector<std::string>& path_fields,
                          Request* request) {
  if (!req.body.empty()) {
    RETURN_IF_ERROR(common::FromJson(req.body, request));
  }
  if (!req.params.empty()) {
    Request from_query;
    RETURN_IF_ERROR(common::FromJson(QueryAsJson(req), &from_query));
    request->MergeFrom(from_query);
  }
  const google::protobuf::Descriptor* descriptor = request->GetDescriptor();
  const google::protobuf::Reflection* reflection = request->GetReflection();
  for (size_t i = 0; i < path_fields.size() && i < req.matches.size(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->FindFieldByName(path_fields[i]);
    if (field != nullptr) reflection->SetString(request, field, req.matches[i]);
  }
  return absl::OkStatus();
}

// Whether the request asks to wait for its job (`wait: true`); clears it, so that the call
// only starts the job.
bool TakeWait(google::protobuf::Message* request) {
  const google::protobuf::FieldDescriptor* field =
      request->GetDescriptor()->FindFieldByName("wait");
  if (field == nullptr || field->type() != google::protobuf::FieldDescriptor::TYPE_BOOL ||
      !request->GetReflection()->GetBool(*request, field)) {
    return false;
  }
  request->GetReflection()->SetBool(request, field, false);
  return true;
}

// A request with `wait: true`: answered when its job ends, holding no thread meanwhile. The
// exchange keeps it alive until then (or until the client goes).
class JobWait : public Orchestrator::JobSink {
 public:
  explicit JobWait(std::shared_ptr<http::Exchange> exchange) : exchange_(std::move(exchange)) {}

  static void Start(Orchestrator* orchestrator, std::shared_ptr<http::Exchange> exchange,
                    const std::string& job_id) {
    auto wait = std::make_shared<JobWait>(exchange);
    exchange->OnCancel([wait] {});
    absl::Status watched = orchestrator->Watch(job_id, wait);
    if (!watched.ok()) wait->exchange_->Reply(StatusReply(watched));
  }

  void OnJob(const v1::Job& job) override {
    if (!IsTerminal(JobStateOf(job))) return;
    absl::StatusOr<v1::Job> ended = EndedJob(job);
    if (!ended.ok()) return exchange_->Reply(StatusReply(ended.status()));
    v1::JobResponse response;
    *response.mutable_job() = *std::move(ended);
    absl::StatusOr<std::string> json = common::ToJson(response);
    exchange_->Reply(json.ok() ? JsonReply(*std::move(json)) : StatusReply(json.status()));
  }

  void OnShutdown(const v1::Job& job) override {
    exchange_->Reply(StatusReply(ShuttingDownError(job.id())));
  }

 private:
  const std::shared_ptr<http::Exchange> exchange_;
};

// GET /events' query: kind (repeated, or comma-separated), model, node, since (a sequence
// number; or the Last-Event-ID header of a reconnecting EventSource), last (the newest N held),
// follow (default true).
absl::StatusOr<std::pair<EventFilter, EventBus::Start>> ParseEventQuery(const http::Request& req) {
  EventFilter filter;
  EventBus::Start start;
  for (const char* key : {"kind", "kinds"}) {
    for (const std::string& value : req.params_named(key)) {
      for (absl::string_view kind : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        filter.kinds.emplace_back(kind);
      }
    }
  }
  filter.model_name = req.param("model");
  filter.node_id = req.param("node");
  RETURN_IF_ERROR(filter.Validate());
  auto number = [&](const std::string& text, const char* what) -> absl::StatusOr<uint64_t> {
    uint64_t value = 0;
    if (!absl::SimpleAtoi(text, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be a non-negative integer, not \"", text, "\""));
    }
    return value;
  };
  std::string since = req.param("since");
  if (since.empty()) since = req.header("Last-Event-ID");
  if (!since.empty()) {
    ASSIGN_OR_RETURN(uint64_t after, number(since, "since"));
    if (after > 0) start.after = after;
  }
  if (req.has_param("last")) {
    ASSIGN_OR_RETURN(start.last, number(req.param("last"), "last"));
  }
  const std::string follow = req.param("follow");
  if (!follow.empty() && follow != "true" && follow != "false") {
    return absl::InvalidArgumentError(
        absl::StrCat("follow must be true or false, not \"", follow, "\""));
  }
  start.follow = follow != "false";
  return std::make_pair(std::move(filter), start);
}

// One Server-Sent Event: the sequence number as its id (a reconnecting EventSource resumes
// from it), the kind as its type, the event in protobuf's JSON mapping as its data.
std::string SseFrame(const v1::Event& event) {
  absl::StatusOr<std::string> json = common::ToJson(event);
  return absl::StrCat("id: ", event.seq(), "\nevent: ", event.kind(),
                      "\ndata: ", json.ok() ? *json : "{}", "\n\n");
}

// One open GET /events: events are written as they arrive, one write in flight at a time (what
// arrives meanwhile waits in the subscription's bounded backlog); a comment line goes out when
// nothing has for kSseKeepAlive, so a client that left is noticed.
class EventStream : public std::enable_shared_from_this<EventStream> {
 public:
  explicit EventStream(std::shared_ptr<http::Exchange> exchange)
      : exchange_(std::move(exchange)), timer_(exchange_->executor()) {}

  void Run(std::shared_ptr<EventSubscription> subscription) {
    {
      gswarm::MutexLock lock(&mu_);
      subscription_ = std::move(subscription);
    }
    // The exchange holds the stream until the client goes or the stream ends.
    exchange_->OnCancel([self = shared_from_this()] { self->Stop(); });
    http::Response head;
    head.content_type = "text/event-stream";
    head.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};
    exchange_->Start(std::move(head));
    Pump();
    ArmKeepAlive();
  }

  // More events, or the end (the subscription's wake).
  void Pump() {
    std::shared_ptr<EventSubscription> subscription;
    {
      gswarm::MutexLock lock(&mu_);
      if (stopped_ || subscription_ == nullptr) return;
      if (writing_) {
        again_ = true;
        return;
      }
      writing_ = true;
      subscription = subscription_;
    }
    std::string frames;
    for (const v1::Event& event : subscription->TakeAll()) frames += SseFrame(event);
    const bool ended = frames.empty() && subscription->ended();
    if (ended) {
      const absl::Status end = subscription->end();
      frames = end.ok() ? "event: end\ndata: {}\n\n"
                        : absl::StrCat("event: end\ndata: ", common::ErrorJson(end), "\n\n");
    }
    if (frames.empty()) return Written(true);
    {
      gswarm::MutexLock lock(&mu_);
      sent_ = true;
    }
    exchange_->Write(std::move(frames), [self = shared_from_this(), ended](bool ok) {
      if (ended) return self->Finish();
      self->WrittenEvents(ok);
    });
  }

 private:
  // A write finished: whatever arrived meanwhile (or the end) goes next.
  void Written(bool ok) {
    if (!ok) return Stop();
    bool again;
    {
      gswarm::MutexLock lock(&mu_);
      writing_ = false;
      again = std::exchange(again_, false);
    }
    if (again) Pump();
  }

  // After a write of events: more may be waiting, or the end.
  void WrittenEvents(bool ok) {
    {
      gswarm::MutexLock lock(&mu_);
      again_ = true;
    }
    Written(ok);
  }

  void ArmKeepAlive() {
    timer_.expires_after(absl::ToChronoNanoseconds(kSseKeepAlive));
    timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      std::shared_ptr<EventStream> self = weak.lock();
      if (ec || self == nullptr) return;
      bool write = false;
      {
        gswarm::MutexLock lock(&self->mu_);
        if (self->stopped_) return;
        write = !self->writing_ && !std::exchange(self->sent_, false);
        if (write) self->writing_ = true;
      }
      if (write) {
        self->exchange_->Write(": keep-alive\n\n", [self](bool ok) { self->Written(ok); });
      }
      self->ArmKeepAlive();
    });
  }

  void Finish() {
    Stop();
    exchange_->End();
  }

  void Stop() {
    std::shared_ptr<EventSubscription> subscription;
    {
      gswarm::MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
      subscription = std::move(subscription_);
    }
    if (subscription != nullptr) subscription->Cancel();
    boost::asio::post(timer_.get_executor(),
                      [self = shared_from_this()] { self->timer_.cancel(); });
  }

  const std::shared_ptr<http::Exchange> exchange_;
  boost::asio::steady_timer timer_;
  gswarm::Mutex mu_;
  std::shared_ptr<EventSubscription> subscription_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool again_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Something was written since the last keep-alive check.
  bool sent_ ABSL_GUARDED_BY(mu_) = false;
};

// gswarm's REST error shape for an HTTP status the server answers itself.
absl::StatusCode CodeFor(int status) {
  switch (status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 404:
      return absl::StatusCode::kNotFound;
    case 408:
      return absl::StatusCode::kDeadlineExceeded;
    case 413:
    case 431:
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 503:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

http::Response ErrorFor(const http::Request& request, int status, const std::string& message) {
  if (absl::StartsWith(request.path, "/v1/")) {
    return OpenAiError(status, message, status >= 500 ? "server_error" : "invalid_request_error",
                       nullptr);
  }
  http::Response response;
  response.status = status;
  const absl::StatusCode code = CodeFor(status);
  response.body =
      common::DumpJson(nlohmann::json{
          {"error",
           {{"code", status}, {"status", absl::StatusCodeToString(code)}, {"message", message}}}}) +
      "\n";
  return response;
}

RestGateway::RestGateway(std::string auth_token, const ApiHandler* handler,
                         Orchestrator* orchestrator, common::WorkerPool* blocking)
    : auth_token_(std::move(auth_token)),
      handler_(handler),
      orchestrator_(orchestrator),
      blocking_(blocking) {}

void RestGateway::InstallEvents(http::HttpServer& server, EventBus* events) {
  server.Route("GET", "/events", [events](std::shared_ptr<http::Exchange> exchange) {
    absl::StatusOr<std::pair<EventFilter, EventBus::Start>> query =
        ParseEventQuery(exchange->request());
    if (!query.ok()) return exchange->Reply(StatusReply(query.status()));
    auto stream = std::make_shared<EventStream>(exchange);
    std::weak_ptr<EventStream> weak = stream;
    absl::StatusOr<std::shared_ptr<EventSubscription>> subscription =
        events->Subscribe(std::move(query->first), query->second, [weak] {
          if (std::shared_ptr<EventStream> stream = weak.lock()) stream->Pump();
        });
    if (!subscription.ok()) return exchange->Reply(StatusReply(subscription.status()));
    stream->Run(*std::move(subscription));
  });
}

void RestGateway::InstallLogs(http::HttpServer& server) {
  // GET /instances/{id}/logs?tail=N: the engine's last lines, read from its node's data port on
  // the blocking pool (`gswarm logs -f` streams them over gRPC).
  server.Route("GET", "/instances/([^/]+)/logs", [this](std::shared_ptr<http::Exchange> exchange) {
    v1::GetInstanceLogsRequest request;
    request.set_instance_id(exchange->request().matches[0]);
    const std::string tail = exchange->request().param("tail");
    uint32_t lines = 100;
    if (!tail.empty() && (!absl::SimpleAtoi(tail, &lines) || lines == 0 || lines > 10000)) {
      return exchange->Reply(StatusReply(absl::InvalidArgumentError(
          absl::StrCat("tail must be a number of lines from 1 to 10000, not \"", tail, "\""))));
    }
    request.set_tail_lines(lines);
    absl::Status submitted = blocking_->Submit([this, exchange, request] {
      absl::StatusOr<std::pair<std::string, std::string>> source = handler_->LogSource(request);
      if (!source.ok()) return exchange->Reply(StatusReply(source.status()));
      httplib::Client client(source->first);
      client.set_connection_timeout(5, 0);
      client.set_read_timeout(10, 0);
      httplib::Headers headers;
      if (!auth_token_.empty()) headers.emplace("Authorization", "Bearer " + auth_token_);
      httplib::Result result = client.Get(source->second, headers);
      if (!result) {
        return exchange->Reply(StatusReply(absl::UnavailableError(absl::StrCat(
            "reading the log from ", source->first, ": ", httplib::to_string(result.error())))));
      }
      if (result->status != 200) {
        return exchange->Reply(StatusReply(absl::Status(
            result->status == 404 ? absl::StatusCode::kNotFound : absl::StatusCode::kUnavailable,
            absl::StrCat("the node answered HTTP ", result->status, ": ", result->body))));
      }
      http::Response response;
      response.content_type = "text/plain; charset=utf-8";
      response.body = std::move(result->body);
      exchange->Reply(std::move(response));
    });
    if (!submitted.ok())
      exchange->Reply(StatusReply(absl::UnavailableError("the host is overloaded")));
  });
}

void RestGateway::Install(http::HttpServer& server) {
  InstallLogs(server);
  // Every route but /health, the dashboard's files (and /metrics with host.metrics_public)
  // needs the token when one is configured
  // (the page asks for it, and sends it with every call it makes).
  server.set_filter([this](const http::Request& req) -> std::optional<http::Response> {
    if (req.path == "/health" || IsDashboardPath(req.path)) return std::nullopt;
    if (metrics_public_ && req.path == "/metrics") return std::nullopt;
    const std::string header = req.header("Authorization");
    std::optional<absl::string_view> authorization;
    if (req.has_header("Authorization")) authorization = header;
    absl::Status auth = common::CheckAuthorization(auth_token_, authorization);
    if (auth.ok()) return std::nullopt;
    if (absl::StartsWith(req.path, "/v1/")) {
      return OpenAiError(401, std::string(auth.message()), "invalid_request_error",
                         "invalid_api_key");
    }
    return StatusReply(auth);
  });
  server.set_error_renderer([](const http::Request& req, int status, std::string message) {
    return ErrorFor(req, status, message);
  });

  const ApiHandler* handler = handler_;
  Orchestrator* orchestrator = orchestrator_;
  common::WorkerPool* blocking = blocking_;
  // Binds one endpoint to one handler method. `path_fields` name the request fields the
  // pattern's capture groups fill, in order. Parsing runs on the I/O thread, the call on the
  // blocking pool; a job's wait on nothing.
  auto route = [&server, orchestrator, blocking]<typename Request, typename Response>(
                   const std::string& method, const std::string& pattern,
                   std::function<absl::StatusOr<Response>(const Request&)> call,
                   std::vector<std::string> path_fields = {}) {
    auto serve = [call = std::move(call), path_fields = std::move(path_fields), orchestrator,
                  blocking](std::shared_ptr<http::Exchange> exchange) {
      auto request = std::make_shared<Request>();
      absl::Status status = ParseRequest(exchange->request(), path_fields, request.get());
      if (!status.ok()) return exchange->Reply(StatusReply(status));
      constexpr bool kStartsAJob = std::is_same_v<Response, v1::JobResponse>;
      const bool wait = kStartsAJob && TakeWait(request.get());
      absl::Status submitted = blocking->Submit([call, exchange, request, orchestrator, wait] {
        absl::StatusOr<Response> response = call(*request);
        if (!response.ok()) return exchange->Reply(StatusReply(response.status()));
        if constexpr (kStartsAJob) {
          if (wait) return JobWait::Start(orchestrator, exchange, response->job().id());
        } else {
          (void)orchestrator;
          (void)wait;
        }
        absl::StatusOr<std::string> json = common::ToJson(*response);
        if (!json.ok()) return exchange->Reply(StatusReply(json.status()));
        exchange->Reply(JsonReply(*std::move(json)));
      });
      if (!submitted.ok()) {
        exchange->Reply(StatusReply(absl::UnavailableError(
            absl::StrCat("the host is overloaded (", submitted.message(), "); retry later"))));
      }
    };
    server.Route(method, pattern, std::move(serve));
  };
#define GSWARM_ROUTE(method, pattern, Method, Request, Response, ...)                          \
  route.template operator()<v1::Request, v1::Response>(method, pattern,                        \
                                                       [handler](const v1::Request& request) { \
                                                         return handler->Method(request);      \
                                                       } __VA_OPT__(, ) __VA_ARGS__)

  const std::string kName = "([^/]+)";
  GSWARM_ROUTE("GET", "/health", Health, HealthRequest, HealthResponse);
  GSWARM_ROUTE("GET", "/nodes", ListNodes, ListNodesRequest, ListNodesResponse);
  GSWARM_ROUTE("GET", "/config", GetConfig, GetConfigRequest, GetConfigResponse);
  GSWARM_ROUTE("GET", "/memory/(models|dram|gpu|nodes)", GetMemory, GetMemoryRequest,
               GetMemoryResponse, {"view"});
  GSWARM_ROUTE("DELETE", "/memory/dram/" + kName, EvictDram, EvictDramRequest, EvictDramResponse,
               {"model_name"});

  for (const std::string prefix : {"/api/models", "/models"}) {
    GSWARM_ROUTE("POST", prefix, RegisterModel, RegisterModelRequest, RegisterModelResponse);
    GSWARM_ROUTE("GET", prefix, ListModels, ListModelsRequest, ListModelsResponse);
    GSWARM_ROUTE("GET", prefix + "/" + kName, GetModel, GetModelRequest, Model, {"model_name"});
    GSWARM_ROUTE("DELETE", prefix + "/" + kName, DeleteModel, DeleteModelRequest,
                 DeleteModelResponse, {"model_name"});
  }
  GSWARM_ROUTE("POST", "/models/validate", ValidateModel, ValidateModelRequest,
               ValidateModelResponse);
  GSWARM_ROUTE("GET", "/models/" + kName + "/validate", ValidateModel, ValidateModelRequest,
               ValidateModelResponse, {"model_name"});
  GSWARM_ROUTE("POST", "/api/models/" + kName + "/load", LoadModel, LoadModelRequest, JobResponse,
               {"model_name"});
  // Seed 001's "unload a model": its instances stop (the router loads it again on demand).
  GSWARM_ROUTE("DELETE", "/v1/models/" + kName, UnloadModel, UnloadModelRequest,
               StopInstanceResponse, {"model_name"});
  GSWARM_ROUTE("POST", "/api/models/" + kName + "/unload", UnloadModel, UnloadModelRequest,
               StopInstanceResponse, {"model_name"});

  GSWARM_ROUTE("POST", "/download", Download, DownloadRequest, JobResponse);
  GSWARM_ROUTE("POST", "/discover", Discover, DiscoverRequest, DiscoverResponse);
  GSWARM_ROUTE("POST", "/copy", Copy, CopyRequest, JobResponse);

  GSWARM_ROUTE("POST", "/serve", Serve, ServeRequest, JobResponse);
  GSWARM_ROUTE("POST", "/stop_serve", StopInstance, StopInstanceRequest, StopInstanceResponse);
  GSWARM_ROUTE("DELETE", "/instances/" + kName, StopInstance, StopInstanceRequest,
               StopInstanceResponse, {"instance_id"});
  GSWARM_ROUTE("POST", "/instances/" + kName + "/sleep", SleepInstance, SleepInstanceRequest,
               Instance, {"instance_id"});
  GSWARM_ROUTE("POST", "/instances/" + kName + "/wake", WakeInstance, WakeInstanceRequest, Instance,
               {"instance_id"});
  GSWARM_ROUTE("GET", "/serving", ListInstances, ListInstancesRequest, ListInstancesResponse);
  GSWARM_ROUTE("GET", "/serving/" + kName, ListInstances, ListInstancesRequest,
               ListInstancesResponse, {"model_name"});

  // /v1/ (the OpenAI router and /v1/models/switch) is the Router's: see Router::Install.

  GSWARM_ROUTE("GET", "/jobs", ListJobs, ListJobsRequest, ListJobsResponse);
  GSWARM_ROUTE("GET", "/jobs/" + kName, GetJob, GetJobRequest, Job, {"job_id"});
  GSWARM_ROUTE("DELETE", "/jobs/" + kName, CancelJob, GetJobRequest, Job, {"job_id"});
#undef GSWARM_ROUTE
}

}  // namespace gswarm::host
