#pragma once

// The REST face of gswarm.v1.GSwarm on the host's HTTP port (cpp-httplib): every endpoint of the
// original GSwarm and of DESIGN.md's API table. Bodies are the proto messages in protobuf's JSON
// mapping; path segments and query parameters fill the request's fields of the same name.
// Errors are {"error": {"code", "status", "message"}} with the matching HTTP status.
//
// Thread safety: Bind/Start/Stop from one thread; requests are served on httplib's pool.

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "host/api_handler.h"

namespace httplib {
class Server;
}

namespace gswarm::host {

class EventBus;

class RestGateway {
 public:
  // `handler` must outlive the gateway. An empty `auth_token` turns auth off. Serves HTTPS when
  // tls.cert_file is set.
  static absl::StatusOr<std::unique_ptr<RestGateway>> Create(const common::TlsConfig& tls,
                                                             std::string auth_token,
                                                             const ApiHandler* handler);
  ~RestGateway();

  // The HTTP server, to add routes (the router's) before Start.
  httplib::Server& server() { return *server_; }

  // Adds GET /events (Server-Sent Events from `events`, which must outlive the gateway). Each
  // open stream holds a worker thread.
  void InstallEvents(EventBus* events);

  // Threads serving connections (128 unless set): each keep-alive connection, router stream and
  // request waiting in the router's queue holds one. Before Start.
  void set_worker_threads(int threads);

  // Binds host:port (port 0: any free port) and returns the port bound.
  absl::StatusOr<int> Bind(const std::string& host, int port);
  // Serves on a background thread until Stop().
  void Start();
  void Stop();

 private:
  RestGateway(std::unique_ptr<httplib::Server> server, std::string auth_token,
              const ApiHandler* handler);
  void InstallRoutes();

  const std::string auth_token_;
  const ApiHandler* const handler_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace gswarm::host
