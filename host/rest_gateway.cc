#include "host/rest_gateway.h"

#include <httplib.h>

#include <functional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/grpc_util.h"
#include "common/paths.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

constexpr absl::Duration kSseKeepAlive = absl::Seconds(15);

void Reply(httplib::Response& res, const absl::Status& status) {
  res.status = common::HttpStatusFor(status.code());
  res.set_content(common::ErrorJson(status) + "\n", "application/json");
}

// Query parameters become JSON fields: "true"/"false" are booleans, everything else a string
// (protobuf's JSON parser accepts numbers written as strings).
std::string QueryAsJson(const httplib::Request& req) {
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
absl::Status ParseRequest(const httplib::Request& req, const std::vector<std::string>& path_fields,
                          Request* request) {
  const bool has_body = !req.body.empty();
  if (has_body) {
    RETURN_IF_ERROR(common::FromJson(req.body, request));
  }
  if (!req.params.empty()) {
    Request from_query;
    RETURN_IF_ERROR(common::FromJson(QueryAsJson(req), &from_query));
    request->MergeFrom(from_query);
  }
  const google::protobuf::Descriptor* descriptor = request->GetDescriptor();
  const google::protobuf::Reflection* reflection = request->GetReflection();
  for (size_t i = 0; i < path_fields.size() && i + 1 < req.matches.size(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->FindFieldByName(path_fields[i]);
    if (field != nullptr) reflection->SetString(request, field, req.matches[i + 1].str());
  }
  return absl::OkStatus();
}

// GET /events' query: kind (repeated, or comma-separated), model, node, since (a sequence
// number; or the Last-Event-ID header of a reconnecting EventSource), last (the newest N held),
// follow (default true).
absl::StatusOr<std::pair<EventFilter, EventBus::Start>> ParseEventQuery(
    const httplib::Request& req) {
  EventFilter filter;
  EventBus::Start start;
  for (const char* key : {"kind", "kinds"}) {
    for (auto [it, end] = req.params.equal_range(key); it != end; ++it) {
      for (absl::string_view kind : absl::StrSplit(it->second, ',', absl::SkipEmpty())) {
        filter.kinds.emplace_back(kind);
      }
    }
  }
  filter.model_name = req.get_param_value("model");
  filter.node_id = req.get_param_value("node");
  RETURN_IF_ERROR(filter.Validate());
  auto number = [&](const std::string& text, const char* what) -> absl::StatusOr<uint64_t> {
    uint64_t value = 0;
    if (!absl::SimpleAtoi(text, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be a non-negative integer, not \"", text, "\""));
    }
    return value;
  };
  std::string since = req.get_param_value("since");
  if (since.empty()) since = req.get_header_value("Last-Event-ID");
  if (!since.empty()) {
    ASSIGN_OR_RETURN(uint64_t after, number(since, "since"));
    if (after > 0) start.after = after;
  }
  if (req.has_param("last")) {
    ASSIGN_OR_RETURN(start.last, number(req.get_param_value("last"), "last"));
  }
  const std::string follow = req.get_param_value("follow");
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

}  // namespace

void RestGateway::InstallEvents(EventBus* events) {
  server_->Get("/events", [events](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<std::pair<EventFilter, EventBus::Start>> query = ParseEventQuery(req);
    if (!query.ok()) return Reply(res, query.status());
    absl::StatusOr<std::shared_ptr<EventSubscription>> subscription =
        events->Subscribe(std::move(query->first), query->second);
    if (!subscription.ok()) return Reply(res, subscription.status());
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [subscription = *subscription](size_t, httplib::DataSink& sink) {
          // A comment line now and then: a client that went away is noticed when it fails.
          std::optional<v1::Event> event = subscription->Next(kSseKeepAlive);
          std::string frame;
          if (event.has_value()) {
            frame = SseFrame(*event);
          } else if (subscription->ended()) {
            const absl::Status end = subscription->end();
            frame = absl::StrCat("event: end\ndata: ", common::ErrorJson(end), "\n\n");
            if (end.ok()) frame = "event: end\ndata: {}\n\n";
            sink.write(frame.data(), frame.size());
            sink.done();
            return true;
          } else {
            frame = ": keep-alive\n\n";
          }
          if (!sink.write(frame.data(), frame.size())) {
            subscription->Cancel();
            return false;
          }
          return true;
        },
        [subscription = *subscription](bool) { subscription->Cancel(); });
  });
}

absl::StatusOr<std::unique_ptr<RestGateway>> RestGateway::Create(const common::TlsConfig& tls,
                                                                 std::string auth_token,
                                                                 const ApiHandler* handler) {
  std::unique_ptr<httplib::Server> server;
  if (tls.cert_file.empty()) {
    server = std::make_unique<httplib::Server>();
  } else {
    const std::string cert = common::ExpandUser(tls.cert_file);
    const std::string key = common::ExpandUser(tls.key_file);
    auto ssl = std::make_unique<httplib::SSLServer>(cert.c_str(), key.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot serve HTTPS with certificate ", cert, " and key ", key,
                       ": unreadable, not PEM, or the key does not match (check host.tls)"));
    }
    server = std::move(ssl);
  }
  return std::unique_ptr<RestGateway>(
      new RestGateway(std::move(server), std::move(auth_token), handler));
}

RestGateway::RestGateway(std::unique_ptr<httplib::Server> server, std::string auth_token,
                         const ApiHandler* handler)
    : auth_token_(std::move(auth_token)), handler_(handler), server_(std::move(server)) {
  InstallRoutes();
}

RestGateway::~RestGateway() { Stop(); }

void RestGateway::set_worker_threads(int threads) {
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
}

void RestGateway::InstallRoutes() {
  httplib::Server& server = *server_;
  const ApiHandler* handler = handler_;
  set_worker_threads(128);
  // Without TCP_NODELAY each small response waits on the peer's delayed ACK (~40 ms a hop);
  // httplib's default of 5 requests per connection makes busy clients reconnect constantly.
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(100000);

  // Every route but /health needs the token when one is configured.
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    // get_header_value returns a copy: keep it alive while the view is read.
    const std::string header = req.get_header_value("Authorization");
    std::optional<absl::string_view> authorization;
    if (req.has_header("Authorization")) authorization = header;
    absl::Status auth = common::CheckAuthorization(auth_token_, authorization);
    if (auth.ok()) return httplib::Server::HandlerResponse::Unhandled;
    Reply(res, auth);
    return httplib::Server::HandlerResponse::Handled;
  });
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      Reply(res, absl::NotFoundError(absl::StrCat("no endpoint ", req.method, " ", req.path,
                                                  " (see the API table in the README)")));
    } else {
      Reply(res, absl::UnknownError(absl::StrCat("HTTP ", res.status)));
    }
  });
  server.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr error) {
        const std::string what = common::ExceptionMessage(error);
        spdlog::error("{} {}: {}", req.method, req.path, what);
        Reply(res, absl::InternalError(absl::StrCat("internal error: ", what)));
      });

  // Binds one endpoint to one handler method. `path_fields` name the request fields the
  // pattern's capture groups fill, in order.
  auto route = [&server]<typename Request, typename Response>(
                   const std::string& method, const std::string& pattern,
                   std::function<absl::StatusOr<Response>(const Request&)> call,
                   std::vector<std::string> path_fields = {}) {
    auto serve = [call = std::move(call), path_fields = std::move(path_fields)](
                     const httplib::Request& req, httplib::Response& res) {
      Request request;
      absl::Status status = ParseRequest(req, path_fields, &request);
      if (!status.ok()) return Reply(res, status);
      absl::StatusOr<Response> response = call(request);
      if (!response.ok()) return Reply(res, response.status());
      absl::StatusOr<std::string> json = common::ToJson(*response);
      if (!json.ok()) return Reply(res, json.status());
      res.set_content(*json + "\n", "application/json");
    };
    if (method == "GET") server.Get(pattern, serve);
    if (method == "POST") server.Post(pattern, serve);
    if (method == "DELETE") server.Delete(pattern, serve);
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
  GSWARM_ROUTE("POST", "/api/models/" + kName + "/unload", UnloadModel, UnloadModelRequest,
               StopInstanceResponse, {"model_name"});

  GSWARM_ROUTE("POST", "/download", Download, DownloadRequest, JobResponse);
  GSWARM_ROUTE("POST", "/discover", Discover, DiscoverRequest, DiscoverResponse);
  GSWARM_ROUTE("POST", "/copy", Copy, CopyRequest, JobResponse);

  GSWARM_ROUTE("POST", "/serve", Serve, ServeRequest, JobResponse);
  GSWARM_ROUTE("POST", "/stop_serve", StopInstance, StopInstanceRequest, StopInstanceResponse);
  GSWARM_ROUTE("DELETE", "/instances/" + kName, StopInstance, StopInstanceRequest,
               StopInstanceResponse, {"instance_id"});
  GSWARM_ROUTE("GET", "/serving", ListInstances, ListInstancesRequest, ListInstancesResponse);
  GSWARM_ROUTE("GET", "/serving/" + kName, ListInstances, ListInstancesRequest,
               ListInstancesResponse, {"model_name"});

  // /v1/ (the OpenAI router and /v1/models/switch) is the Router's: see Router::Install.

  GSWARM_ROUTE("GET", "/jobs", ListJobs, ListJobsRequest, ListJobsResponse);
  GSWARM_ROUTE("GET", "/jobs/" + kName, GetJob, GetJobRequest, Job, {"job_id"});
  GSWARM_ROUTE("DELETE", "/jobs/" + kName, CancelJob, GetJobRequest, Job, {"job_id"});
#undef GSWARM_ROUTE
}

absl::StatusOr<int> RestGateway::Bind(const std::string& host, int port) {
  // httplib's default adds SO_REUSEPORT, which would let a second host share the port silently.
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const char*>(&yes), sizeof(yes));
  });
  int bound =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", host, ":", port,
                     ": the address is in use or not available (set host.port or pass --port)"));
  }
  return bound;
}

void RestGateway::Start() {
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // Stop() before the listen loop runs would be lost and leave it running: wait for it.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!server_->is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
}

void RestGateway::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace gswarm::host
