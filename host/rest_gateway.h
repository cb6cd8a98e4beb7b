#pragma once

// The REST face of gswarm.v1.GSwarm on the host's HTTP port (host/http_server.h): every endpoint
// of the original GSwarm and of DESIGN.md's API table, and GET /events (Server-Sent Events).
// Bodies are the proto messages in protobuf's JSON mapping; path segments and query parameters
// fill the request's fields of the same name. Errors are {"error": {"code", "status",
// "message"}} with the matching HTTP status; under /v1/ they take OpenAI's shape.
//
// Requests are parsed on the I/O thread and the calls run on the `blocking` pool (SQLite,
// agents); a request that waits for its job (wait: true) starts it there and is answered when the
// job ends, holding no thread meanwhile.
//
// Thread safety: Install* before the server listens; the gateway must outlive the server's
// exchanges (stop the server, then the pools, first).

#include <memory>
#include <string>

#include "common/worker_pool.h"
#include "host/api_handler.h"
#include "host/http_server.h"

namespace gswarm::host {

class EventBus;
class Orchestrator;

class RestGateway {
 public:
  // Nothing is owned. An empty `auth_token` turns auth off.
  RestGateway(std::string auth_token, const ApiHandler* handler, Orchestrator* orchestrator,
              common::WorkerPool* blocking);

  // GET /metrics without the token (host.metrics_public). Before Install.
  void set_metrics_public(bool metrics_public) { metrics_public_ = metrics_public; }

  // Adds the REST routes, the auth filter (every path but /health) and the error shapes.
  void Install(http::HttpServer& server);
  // Adds GET /events (Server-Sent Events from `events`, which must outlive the streams).
  void InstallEvents(http::HttpServer& server, EventBus* events);

 private:
  // GET /instances/{id}/logs.
  void InstallLogs(http::HttpServer& server);

  const std::string auth_token_;
  const ApiHandler* const handler_;
  Orchestrator* const orchestrator_;
  common::WorkerPool* const blocking_;
  bool metrics_public_ = false;
};

// The answer for an error, in the shape of the path's API: OpenAI's under /v1/, gswarm's REST
// shape elsewhere.
http::Response ErrorFor(const http::Request& request, int status, const std::string& message);

// The REST answer for a failed status: its HTTP code and {"error": {"code", "status", "message"}}.
http::Response RestStatusReply(const absl::Status& status);

}  // namespace gswarm::host
