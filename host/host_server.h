#pragma once

// The host process: registry, API handler, gRPC server (GSwarm + AgentLink + health +
// reflection) and the REST gateway, built in dependency order and torn down in reverse.
//
// Thread safety: Create, then Shutdown once (the destructor shuts down too).

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "common/config.h"
#include "common/worker_pool.h"
#include "grpcpp/server.h"
#include "host/agent_link_service.h"
#include "host/api_handler.h"
#include "host/api_service.h"
#include "host/event_bus.h"
#include "host/host_metrics.h"
#include "host/http_server.h"
#include "host/instance_manager.h"
#include "host/node_registry.h"
#include "host/orchestrator.h"
#include "host/registry.h"
#include "host/rest_gateway.h"
#include "host/router.h"
#include "host/router_placement.h"

namespace gswarm::host {

class HostServer {
 public:
  // Resolves the token (see ResolveHostToken), binds both ports and starts serving.
  static absl::StatusOr<std::unique_ptr<HostServer>> Create(const common::Config& config);
  ~HostServer();

  // Closes agent streams (they reconnect to the next host), stops both servers.
  void Shutdown();

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  // The token every call must carry ("" when auth is off).
  const std::string& auth_token() const { return auth_token_; }

 private:
  HostServer() = default;

  std::string auth_token_;
  int http_port_ = 0;
  int grpc_port_ = 0;
  // First in, last out: every part below publishes to it.
  std::unique_ptr<EventBus> events_;
  std::unique_ptr<HostMetrics> metrics_;
  std::unique_ptr<NodeRegistry> nodes_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<InstanceManager> instances_;
  std::unique_ptr<Orchestrator> orchestrator_;
  std::unique_ptr<ApiHandler> handler_;
  std::unique_ptr<common::WorkerPool> api_pool_;
  std::unique_ptr<ApiService> api_service_;
  std::unique_ptr<AgentLinkService> agent_link_;
  std::unique_ptr<grpc::Server> grpc_server_;
  // The HTTP port. Torn down from the bottom: the server, then the pool its handlers use, then
  // the I/O threads (exchanges still held, with their leases, go with them), then the router.
  std::unique_ptr<RouterPlacement> placement_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<http::IoThreads> io_;
  std::unique_ptr<common::WorkerPool> http_pool_;  // REST calls and catalog lookups (SQLite)
  std::unique_ptr<RestGateway> rest_;
  std::unique_ptr<http::HttpServer> http_;
  gswarm::Notification stop_sweeper_;
  std::thread sweeper_;
  std::atomic<bool> shut_down_{false};
};

// The token the host requires: host.auth_token when set; none with host.insecure; none when
// binding only to loopback; otherwise the one in ~/.cache/gswarm/token, generated on first use.
absl::StatusOr<std::string> ResolveHostToken(const common::HostConfig& config);

}  // namespace gswarm::host
