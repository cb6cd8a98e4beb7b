#pragma once

// What the host exports at GET /metrics: counters and histograms the router, its pool and the
// orchestrator update as things happen, and the cluster's state (nodes, tiers, GPUs, models,
// instances, jobs, the router's queue) read at scrape time. Names follow Prometheus' conventions:
// gswarm_ prefix, base units (_bytes, _seconds), _total for counters.
//
// Thread safety: thread-safe. The update methods are cheap (a lock and a hash lookup); Render
// reads SQLite (the catalog), so it runs off the I/O threads.

#include <optional>
#include <string>

#include "common/worker_pool.h"
#include "gswarm/v1/agent.pb.h"
#include "gswarm/v1/common.pb.h"
#include "host/http_server.h"
#include "host/metrics.h"

namespace gswarm::host {

class ApiHandler;
class InstanceManager;
class NodeRegistry;
class Orchestrator;
class Router;

class HostMetrics {
 public:
  HostMetrics();

  // A router request answered with `status`; `first_byte`: when its answer started (streams).
  void RouterRequest(const std::string& model, int status, double seconds,
                     std::optional<double> first_byte_seconds);
  // A request waited `seconds` in the router's queue or for a load.
  void QueueWait(const std::string& model, double seconds);
  // A model the router's pool loaded, from `tier` (where its weights came from).
  void ModelLoaded(const std::string& tier, double seconds);
  void Evicted(const std::string& reason);
  void Demoted(const std::string& reason);
  // A job that ended: by kind and state, and its bytes by source (hub, peer, local).
  void JobEnded(const v1::Job& job, const v1::Command& command);

  // Where the scrape-time state comes from; none is owned, any may be null.
  struct Sources {
    const NodeRegistry* nodes = nullptr;
    const InstanceManager* instances = nullptr;
    const Orchestrator* orchestrator = nullptr;
    const ApiHandler* handler = nullptr;
    const Router* router = nullptr;
  };
  // The exposition (text format 0.0.4).
  std::string Render(const Sources& sources) const;

 private:
  metrics::Counter requests_;
  metrics::Histogram request_seconds_;
  metrics::Histogram first_byte_seconds_;
  metrics::Histogram queue_wait_seconds_;
  metrics::Histogram load_seconds_;
  metrics::Counter evictions_;
  metrics::Counter demotions_;
  metrics::Counter jobs_;
  metrics::Counter transfer_bytes_;
  metrics::Counter download_bytes_;
};

// GET /metrics: the exposition, rendered on `blocking` (it reads the catalog). `metrics`, the
// sources and the pool must outlive the server's exchanges.
void InstallMetrics(http::HttpServer& server, const HostMetrics* metrics,
                    HostMetrics::Sources sources, common::WorkerPool* blocking);

}  // namespace gswarm::host
