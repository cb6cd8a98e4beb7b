#include "host/rest_gateway.h"

#include <httplib.h>

#include <functional>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/grpc_util.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "host/dashboard.h"
#include "host/http_upstream.h"
#include "host/job_state.h"
#include "host/orchestrator.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

http::Response JsonReply(std::string json) {
  http::Response response;
  response.body = std::move(json) + "\n";
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
    if (!watched.ok()) wait->exchange_->Reply(RestStatusReply(watched));
  }

  void OnJob(const v1::Job& job) override {
    if (!IsTerminal(JobStateOf(job))) return;
    absl::StatusOr<v1::Job> ended = EndedJob(job);
    if (!ended.ok()) return exchange_->Reply(RestStatusReply(ended.status()));
    v1::JobResponse response;
    *response.mutable_job() = *std::move(ended);
    absl::StatusOr<std::string> json = common::ToJson(response);
    exchange_->Reply(json.ok() ? JsonReply(*std::move(json)) : RestStatusReply(json.status()));
  }

  void OnShutdown(const v1::Job& job) override {
    exchange_->Reply(RestStatusReply(ShuttingDownError(job.id())));
  }

 private:
  const std::shared_ptr<http::Exchange> exchange_;
};

// GET /events' query: kind (repeated, or comma-separated), model, node, since (a sequence
// number; or the Last-Event-ID header of a reconnecting EventSource), last (the newest N held),
// follow (default true).
// gswarm's REST error shape for an HTTP status the server answers itself.
absl::StatusCode CodeFor(int status) {
  switch (status) {
    case 400:
    case 414:
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

http::Response RestStatusReply(const absl::Status& status) {
  http::Response response;
  response.status = common::HttpStatusFor(status.code());
  response.body = common::ErrorJson(status) + "\n";
  return response;
}

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

// A failed call's answer in the shape of its path: OpenAI's under /v1/ (seed 001's
// DELETE /v1/models/{name}), GSwarm's elsewhere.
http::Response StatusReplyFor(const http::Request& request, const absl::Status& status) {
  if (!absl::StartsWith(request.path, "/v1/")) return RestStatusReply(status);
  return ErrorFor(request, common::HttpStatusFor(status.code()), std::string(status.message()));
}

RestGateway::RestGateway(std::string auth_token, const ApiHandler* handler,
                         Orchestrator* orchestrator, common::WorkerPool* blocking)
    : auth_token_(std::move(auth_token)),
      handler_(handler),
      orchestrator_(orchestrator),
      blocking_(blocking) {}

void RestGateway::InstallLogs(http::HttpServer& server) {
  // GET /instances/{id}/logs?tail=N: the engine's last lines, read from its node's data port on
  // the blocking pool (`gswarm logs -f` streams them over gRPC).
  server.Route("GET", "/instances/([^/]+)/logs", [this](std::shared_ptr<http::Exchange> exchange) {
    v1::GetInstanceLogsRequest request;
    request.set_instance_id(exchange->request().matches[0]);
    const std::string tail = exchange->request().param("tail");
    uint32_t lines = 100;
    if (!tail.empty() && (!absl::SimpleAtoi(tail, &lines) || lines == 0 || lines > 10000)) {
      return exchange->Reply(RestStatusReply(absl::InvalidArgumentError(
          absl::StrCat("tail must be a number of lines from 1 to 10000, not \"", tail, "\""))));
    }
    request.set_tail_lines(lines);
    absl::Status submitted = blocking_->Submit([this, exchange, request] {
      absl::StatusOr<std::pair<std::string, std::string>> source = handler_->LogSource(request);
      if (!source.ok()) return exchange->Reply(RestStatusReply(source.status()));
      httplib::Client client(source->first);
      client.set_connection_timeout(5, 0);
      client.set_read_timeout(10, 0);
      httplib::Headers headers;
      if (!auth_token_.empty()) headers.emplace("Authorization", "Bearer " + auth_token_);
      httplib::Result result = client.Get(source->second, headers);
      if (!result) {
        return exchange->Reply(RestStatusReply(absl::UnavailableError(absl::StrCat(
            "reading the log from ", source->first, ": ", httplib::to_string(result.error())))));
      }
      if (result->status != 200) {
        return exchange->Reply(RestStatusReply(absl::Status(
            result->status == 404 ? absl::StatusCode::kNotFound : absl::StatusCode::kUnavailable,
            absl::StrCat("the node answered HTTP ", result->status, ": ", result->body))));
      }
      http::Response response;
      response.content_type = "text/plain; charset=utf-8";
      response.body = std::move(result->body);
      exchange->Reply(std::move(response));
    });
    if (!submitted.ok())
      exchange->Reply(RestStatusReply(absl::UnavailableError("the host is overloaded")));
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
    return RestStatusReply(auth);
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
      if (!status.ok()) return exchange->Reply(StatusReplyFor(exchange->request(), status));
      constexpr bool kStartsAJob = std::is_same_v<Response, v1::JobResponse>;
      const bool wait = kStartsAJob && TakeWait(request.get());
      absl::Status submitted = blocking->Submit([call, exchange, request, orchestrator, wait] {
        absl::StatusOr<Response> response = call(*request);
        if (!response.ok())
          return exchange->Reply(StatusReplyFor(exchange->request(), response.status()));
        if constexpr (kStartsAJob) {
          if (wait) return JobWait::Start(orchestrator, exchange, response->job().id());
        } else {
          (void)orchestrator;
          (void)wait;
        }
        absl::StatusOr<std::string> json = common::ToJson(*response);
        if (!json.ok()) return exchange->Reply(StatusReplyFor(exchange->request(), json.status()));
        exchange->Reply(JsonReply(*std::move(json)));
      });
      if (!submitted.ok()) {
        exchange->Reply(StatusReplyFor(
            exchange->request(),
            absl::UnavailableError(
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
  GSWARM_ROUTE("GET", "/capacity", GetCapacity, GetCapacityRequest, GetCapacityResponse);

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
  // Seed 004's "load" of a registered model: downloaded first when no node holds it.
  GSWARM_ROUTE("POST", "/api/orchestrate/load", OrchestrateLoad, LoadModelRequest, JobResponse);
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
