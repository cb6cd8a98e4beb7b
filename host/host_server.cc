#include "host/host_server.h"

#include <sys/resource.h>

#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/grpc_util.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/units.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "host/dashboard.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

std::string JoinHostPort(const std::string& host, int port) {
  // IPv6 literals need brackets in a gRPC address.
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

// The cluster's default tier layout for the agents' Welcome: what host.storage_devices sets
// explicitly (an unset path is empty and an unset size 0, so that an agent's own built-in
// defaults stay when nobody configured either side).
std::vector<v1::TierInfo> DefaultTiers(const common::Config& config) {
  auto given = [&](const std::string& key) { return config.explicit_keys.contains(key); };
  std::vector<v1::TierInfo> tiers;
  for (const auto& [name, device] :
       {std::pair{"disk", &config.host.disk}, std::pair{"dram", &config.host.dram}}) {
    const std::string prefix = absl::StrCat("host.storage_devices.", name, ".");
    v1::TierInfo& tier = tiers.emplace_back();
    tier.set_tier(name);
    tier.set_enabled(device->enabled);
    if (given(prefix + "path")) tier.set_path(device->path);
    if (given(prefix + "max_size_gb")) {
      tier.set_capacity_bytes(static_cast<uint64_t>(device->max_size_gb * common::kGiB));
    }
  }
  return tiers;
}

// Each open stream through the router holds two descriptors (client and engine): lift the soft
// limit to the hard one, as servers do.
void RaiseFileLimit() {
  struct rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) == 0) {
    spdlog::debug("open files limit raised from {} to {}", before, limit.rlim_cur);
  }
}

http::HttpServer::Options HttpOptions(const common::HostConfig& host) {
  http::HttpServer::Options options;
  options.max_body_bytes = static_cast<size_t>(host.http_max_body_mb * 1024 * 1024);
  options.header_timeout = absl::Seconds(host.http_header_timeout_s);
  options.keep_alive_timeout = absl::Seconds(host.http_keep_alive_timeout_s);
  options.tls = host.tls;
  return options;
}

}  // namespace

absl::StatusOr<std::string> ResolveHostToken(const common::HostConfig& config) {
  if (!config.auth_token.empty()) return config.auth_token;
  if (config.insecure) {
    if (!common::IsLoopbackAddress(config.host)) {
      spdlog::warn(
          "auth is OFF (--insecure) while listening on {}: anyone who can reach this "
          "host can drive it",
          config.host);
    }
    return std::string();
  }
  if (common::IsLoopbackAddress(config.host)) return std::string();
  bool created = false;
  const std::string path = common::TokenFilePath();
  absl::StatusOr<std::string> token = common::LoadOrCreateTokenFile(path, &created);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        absl::StrCat("host listens on ", config.host,
                                     " and needs a token, but: ", token.status().message(),
                                     " (set host.auth_token, or --insecure to run without)"));
  }
  spdlog::info(
      "auth: {} token in {}; local CLI and agents read it from there, give it to "
      "remote agents as client.auth_token or GSWARM_TOKEN",
      created ? "generated a" : "using the", path);
  return token;
}

absl::StatusOr<std::unique_ptr<HostServer>> HostServer::Create(const common::Config& config) {
  const common::HostConfig& host = config.host;
  std::unique_ptr<HostServer> server(new HostServer());
  ASSIGN_OR_RETURN(server->auth_token_, ResolveHostToken(host));

  server->events_ = std::make_unique<EventBus>(EventBus::Options{});
  server->metrics_ = std::make_unique<HostMetrics>();
  NodeRegistry::Options node_options;
  node_options.events = server->events_.get();
  server->nodes_ = std::make_unique<NodeRegistry>(std::move(node_options));
  const std::string db_path = common::StateDir() + "/host.db";
  ASSIGN_OR_RETURN(server->registry_, Registry::Open(db_path));
  server->instances_ = std::make_unique<InstanceManager>(server->events_.get());
  server->orchestrator_ = std::make_unique<Orchestrator>(
      Orchestrator::Options{config.host.prefer_peers, config.host.auto_discover_models,
                            server->metrics_.get()},
      server->registry_.get(), server->nodes_.get(), server->instances_.get(),
      server->events_.get());
  RETURN_IF_ERROR(server->orchestrator_->Recover());
  server->handler_ = std::make_unique<ApiHandler>(
      ApiHandler::Options{config, !server->auth_token_.empty(), absl::Now()}, server->nodes_.get(),
      server->registry_.get(), server->orchestrator_.get(), server->instances_.get());
  // API calls that wait (on SQLite, on agents) run here, not on gRPC's callback threads.
  server->api_pool_ = std::make_unique<common::WorkerPool>("API worker pool", 8, 1024);
  server->api_service_ = std::make_unique<ApiService>(
      server->auth_token_, server->handler_.get(), server->orchestrator_.get(),
      server->events_.get(), server->api_pool_.get());
  server->agent_link_ = std::make_unique<AgentLinkService>(
      AgentLinkService::Options{server->auth_token_, GSWARM_VERSION, DefaultTiers(config),
                                config.explicit_keys.contains("host.cleanup_on_shutdown")
                                    ? std::optional<bool>(host.cleanup_on_shutdown)
                                    : std::nullopt,
                                server->orchestrator_.get()},
      server->nodes_.get());

  // The router and its pool exist before either server takes a request.
  RaiseFileLimit();
  server->io_ = std::make_unique<http::IoThreads>(host.http_io_threads);
  ASSIGN_OR_RETURN(server->http_, http::HttpServer::Create(server->io_.get(), HttpOptions(host)));
  server->http_pool_ = std::make_unique<common::WorkerPool>("HTTP worker pool", 16, 4096);
  server->rest_ =
      std::make_unique<RestGateway>(server->auth_token_, server->handler_.get(),
                                    server->orchestrator_.get(), server->http_pool_.get());
  RouterPlacement::Options pool;
  pool.keep_alive_s = host.keep_alive_s;
  pool.max_loaded_models = host.max_loaded_models;
  pool.preload = host.preload;
  pool.metrics = server->metrics_.get();
  server->placement_ = std::make_unique<RouterPlacement>(
      std::move(pool), server->registry_.get(), server->nodes_.get(), server->instances_.get(),
      server->orchestrator_.get(), server->events_.get());
  Router::Options routing;
  routing.max_concurrent_per_instance = config.client.max_concurrent_requests;
  routing.max_queue = host.router_queue_size;
  routing.queue_timeout = absl::Seconds(host.router_queue_timeout_s);
  routing.autoload = host.autoload;
  routing.events = server->events_.get();
  routing.active_model_file = common::StateDir() + "/active_model";
  routing.blocking = server->http_pool_.get();
  routing.metrics = server->metrics_.get();
  server->router_ = std::make_unique<Router>(routing, server->placement_.get());
  server->rest_->set_metrics_public(host.metrics_public);
  server->rest_->Install(*server->http_);
  InstallDashboard(*server->http_);
  InstallMetrics(*server->http_, server->metrics_.get(),
                 HostMetrics::Sources{server->nodes_.get(), server->instances_.get(),
                                      server->orchestrator_.get(), server->handler_.get(),
                                      server->router_.get()},
                 server->http_pool_.get());
  server->router_->Install(*server->http_);
  server->rest_->InstallEvents(*server->http_, server->events_.get());
  server->handler_->set_router(server->router_.get(), server->placement_.get());
  server->placement_->Start(server->router_.get());
  if (host.max_loaded_models > 0 &&
      static_cast<int>(host.preload.size()) >= host.max_loaded_models) {
    spdlog::warn(
        "host.preload names {} models and host.max_loaded_models is {}: no room is left "
        "for models loaded on demand (they will be refused with 429)",
        host.preload.size(), host.max_loaded_models);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Without this, a second host on the same port would share it silently (SO_REUSEPORT).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   common::HostCredentials(host));
  builder.AddListeningPort(JoinHostPort(host.host, host.grpc_port), credentials,
                           &server->grpc_port_);
  builder.RegisterService(server->api_service_.get());
  builder.RegisterService(server->agent_link_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen for gRPC on ", JoinHostPort(host.host, host.grpc_port),
        ": the address is in use or not available (set host.grpc_port or pass --grpc-port)"));
  }

  ASSIGN_OR_RETURN(server->http_port_, server->http_->Listen(host.host, host.port));

  // Offline detection runs on its own clock, not on any agent's stream.
  HostServer* raw = server.get();
  server->sweeper_ = std::thread([raw] {
    while (!raw->stop_sweeper_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      raw->nodes_->SweepStale();
    }
  });

  spdlog::info("gswarm host {} listening: HTTP{} {} gRPC {}{}", GSWARM_VERSION,
               host.tls.cert_file.empty() ? "" : "S", JoinHostPort(host.host, server->http_port_),
               JoinHostPort(host.host, server->grpc_port_),
               server->auth_token_.empty() ? " (auth off)" : " (token required)");
  return server;
}

HostServer::~HostServer() { Shutdown(); }

void HostServer::Shutdown() {
  if (shut_down_.exchange(true)) return;
  spdlog::info("host shutting down");
  // Requests waiting on jobs (wait: true) would keep rest_->Stop() and grpc_server_->Shutdown()
  // from returning: end them first.
  if (orchestrator_) orchestrator_->Shutdown();
  if (events_) events_->Close();  // event streams end now, not at their next keep-alive
  if (placement_) placement_->Stop();
  if (sweeper_.joinable()) {
    stop_sweeper_.Notify();
    sweeper_.join();
  }
  // Requests waiting in the router's queue are answered, then every connection closes; the pool
  // finishes the calls it holds (their answers go nowhere), then the I/O threads stop.
  if (router_) router_->Shutdown();
  if (http_) http_->Stop();
  if (http_pool_) http_pool_->Stop();
  if (io_) io_->Stop();
  if (nodes_) nodes_->CloseAll(absl::UnavailableError("host is shutting down"));
  if (grpc_server_)
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // Agents' reports still queued are applied now, while the router's pool (their listener) is
  // alive; nothing arrives after the gRPC server has stopped.
  if (orchestrator_) orchestrator_->StopEvents();
}

}  // namespace gswarm::host
