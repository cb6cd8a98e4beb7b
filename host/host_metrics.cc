#include "host/host_metrics.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/units.h"
#include "host/api_handler.h"
#include "host/instance_manager.h"
#include "host/node_registry.h"
#include "host/orchestrator.h"
#include "host/router.h"

namespace gswarm::host {
namespace {

// Where a transfer's bytes came from.
std::string SourceOf(const v1::Command& command) {
  if (command.has_download()) return command.download().peer_url().empty() ? "hub" : "peer";
  if (command.has_copy()) return command.copy().peer_url().empty() ? "local" : "peer";
  return "";
}

void Nodes(metrics::Writer& out, const NodeRegistry& registry) {
  const std::vector<v1::NodeInfo> nodes = registry.List();
  const absl::Time now = absl::Now();
  out.Family("gswarm_node_up", "gauge", "1 when the node's agent is connected, 0 when offline.");
  for (const v1::NodeInfo& node : nodes) {
    out.Sample("gswarm_node_up", {{"node", node.node_id()}}, node.state() == "online" ? 1 : 0);
  }
  out.Family("gswarm_node_heartbeat_age_seconds", "gauge",
             "Seconds since the node's last heartbeat.");
  for (const v1::NodeInfo& node : nodes) {
    if (!node.has_last_heartbeat_at()) continue;
    out.Sample("gswarm_node_heartbeat_age_seconds", {{"node", node.node_id()}},
               absl::ToDoubleSeconds(now - common::FromTimestamp(node.last_heartbeat_at())));
  }
  // Tiers: disk (the model cache's file system), dram (the DRAM tier against its budget), and
  // the node's memory.
  out.Family("gswarm_tier_used_bytes", "gauge", "Bytes used per node and tier.");
  for (const v1::NodeInfo& node : nodes) {
    const v1::MemoryUsage& m = node.memory();
    out.Sample("gswarm_tier_used_bytes", {{"node", node.node_id()}, {"tier", "disk"}},
               static_cast<double>(m.disk_total_bytes() -
                                   std::min(m.disk_total_bytes(), m.disk_free_bytes())));
    out.Sample("gswarm_tier_used_bytes", {{"node", node.node_id()}, {"tier", "dram"}},
               static_cast<double>(m.dram_tier_used_bytes()));
  }
  out.Family("gswarm_tier_budget_bytes", "gauge",
             "Bytes each tier may hold per node (disk: the file system's size).");
  for (const v1::NodeInfo& node : nodes) {
    const v1::MemoryUsage& m = node.memory();
    out.Sample("gswarm_tier_budget_bytes", {{"node", node.node_id()}, {"tier", "disk"}},
               static_cast<double>(m.disk_total_bytes()));
    out.Sample("gswarm_tier_budget_bytes", {{"node", node.node_id()}, {"tier", "dram"}},
               static_cast<double>(m.dram_tier_budget_bytes()));
  }
  out.Family("gswarm_node_memory_bytes", "gauge", "The node's DRAM: total and available.");
  for (const v1::NodeInfo& node : nodes) {
    out.Sample("gswarm_node_memory_bytes", {{"node", node.node_id()}, {"kind", "total"}},
               static_cast<double>(node.memory().dram_total_bytes()));
    out.Sample("gswarm_node_memory_bytes", {{"node", node.node_id()}, {"kind", "available"}},
               static_cast<double>(node.memory().dram_available_bytes()));
  }
  out.Family("gswarm_gpu_used_bytes", "gauge", "GPU memory used, per node and GPU.");
  for (const v1::NodeInfo& node : nodes) {
    for (const v1::GpuInfo& gpu : node.memory().gpus()) {
      out.Sample("gswarm_gpu_used_bytes",
                 {{"node", node.node_id()}, {"gpu", absl::StrCat(gpu.index())}},
                 static_cast<double>(gpu.memory_used_bytes()));
    }
  }
  out.Family("gswarm_gpu_budget_bytes", "gauge",
             "GPU memory instances may use (total x client.gpu_memory_fraction).");
  for (const v1::NodeInfo& node : nodes) {
    for (const v1::GpuInfo& gpu : node.memory().gpus()) {
      out.Sample("gswarm_gpu_budget_bytes",
                 {{"node", node.node_id()}, {"gpu", absl::StrCat(gpu.index())}},
                 static_cast<double>(gpu.memory_budget_bytes()));
    }
  }
}

void Instances(metrics::Writer& out, const InstanceManager& manager) {
  const std::vector<v1::Instance> instances = manager.List();
  std::map<std::tuple<std::string, std::string, std::string, std::string>, int> by_state;
  for (const v1::Instance& instance : instances) {
    ++by_state[{instance.node_id(), instance.model_name(), instance.engine(), instance.state()}];
  }
  out.Family("gswarm_instances", "gauge", "Instances by node, model, engine and state.");
  for (const auto& [key, count] : by_state) {
    const auto& [node, model, engine, state] = key;
    out.Sample("gswarm_instances",
               {{"node", node}, {"model", model}, {"engine", engine}, {"state", state}}, count);
  }
  out.Family("gswarm_engine_restarts_total", "counter",
             "Times the agent restarted an instance's engine after it exited.");
  for (const v1::Instance& instance : instances) {
    if (instance.restarts() == 0) continue;
    out.Sample("gswarm_engine_restarts_total",
               {{"node", instance.node_id()},
                {"model", instance.model_name()},
                {"instance", instance.id()},
                {"engine", instance.engine()}},
               instance.restarts());
  }
}

}  // namespace

HostMetrics::HostMetrics()
    : requests_("gswarm_router_requests_total",
                "Requests the OpenAI router answered, by model and HTTP status.",
                {"model", "code"}),
      request_seconds_("gswarm_router_request_duration_seconds",
                       "Time from a router request's arrival to the end of its answer.", {"model"},
                       metrics::RequestBuckets()),
      first_byte_seconds_("gswarm_router_time_to_first_byte_seconds",
                          "Time from a router request's arrival to the first byte of its answer.",
                          {"model"}, metrics::RequestBuckets()),
      queue_wait_seconds_("gswarm_router_queue_wait_seconds",
                          "Time a request waited for room on an instance or for a load.", {"model"},
                          metrics::RequestBuckets()),
      load_seconds_("gswarm_model_load_duration_seconds",
                    "Time to load a model for the router, by the tier its weights came from.",
                    {"tier"}, metrics::LoadBuckets()),
      evictions_("gswarm_evictions_total", "Instances the router's pool unloaded, by reason.",
                 {"reason"}),
      demotions_("gswarm_demotions_total",
                 "Models kept in DRAM when their instance left the GPU, by reason.", {"reason"}),
      jobs_("gswarm_jobs_finished_total", "Jobs that ended, by kind and state.", {"kind", "state"}),
      transfer_bytes_("gswarm_transfer_bytes_total",
                      "Bytes downloads and copies moved, by kind and source (hub, peer, local).",
                      {"kind", "source"}),
      download_bytes_("gswarm_download_bytes_total",
                      "Bytes downloads fetched over the network, by where from (hub, peer).",
                      {"source"}) {}

void HostMetrics::RouterRequest(const std::string& model, int status, double seconds,
                                std::optional<double> first_byte_seconds) {
  requests_.Add({model, absl::StrCat(status)});
  request_seconds_.Observe({model}, seconds);
  if (first_byte_seconds.has_value()) first_byte_seconds_.Observe({model}, *first_byte_seconds);
}

void HostMetrics::QueueWait(const std::string& model, double seconds) {
  queue_wait_seconds_.Observe({model}, seconds);
}

void HostMetrics::ModelLoaded(const std::string& tier, double seconds) {
  load_seconds_.Observe({tier.empty() ? "unknown" : tier}, seconds);
}

void HostMetrics::Evicted(const std::string& reason) { evictions_.Add({reason}); }

void HostMetrics::Demoted(const std::string& reason) { demotions_.Add({reason}); }

void HostMetrics::JobEnded(const v1::Job& job, const v1::Command& command) {
  jobs_.Add({job.kind(), job.state()});
  const std::string source = SourceOf(command);
  if (!source.empty() && job.bytes_done() > 0) {
    transfer_bytes_.Add({job.kind(), source}, static_cast<double>(job.bytes_done()));
  }
  if (job.bytes_from_hub() > 0) {
    download_bytes_.Add({"hub"}, static_cast<double>(job.bytes_from_hub()));
  }
  if (job.bytes_from_peers() > 0) {
    download_bytes_.Add({"peer"}, static_cast<double>(job.bytes_from_peers()));
  }
}

void InstallMetrics(http::HttpServer& server, const HostMetrics* metrics,
                    HostMetrics::Sources sources, common::WorkerPool* blocking) {
  server.Route("GET", "/metrics", [=](std::shared_ptr<http::Exchange> exchange) {
    absl::Status submitted = blocking->Submit([=] {
      http::Response response;
      response.content_type = "text/plain; version=0.0.4; charset=utf-8";
      response.body = metrics->Render(sources);
      exchange->Reply(std::move(response));
    });
    if (!submitted.ok()) {
      http::Response busy;
      busy.status = 503;
      busy.content_type = "text/plain";
      busy.body = "the host is overloaded; scrape again later\n";
      exchange->Reply(std::move(busy));
    }
  });
}

std::string HostMetrics::Render(const Sources& sources) const {
  std::string out;
  out.reserve(64 << 10);
  requests_.Render(&out);
  request_seconds_.Render(&out);
  first_byte_seconds_.Render(&out);
  queue_wait_seconds_.Render(&out);
  load_seconds_.Render(&out);
  evictions_.Render(&out);
  demotions_.Render(&out);
  jobs_.Render(&out);
  transfer_bytes_.Render(&out);
  download_bytes_.Render(&out);
  metrics::Writer writer(&out);
  if (sources.nodes != nullptr) Nodes(writer, *sources.nodes);
  if (sources.instances != nullptr) Instances(writer, *sources.instances);
  if (sources.orchestrator != nullptr) {
    std::map<std::pair<std::string, std::string>, int> active;
    for (const v1::Job& job : sources.orchestrator->ActiveJobs())
      ++active[{job.kind(), job.state()}];
    writer.Family("gswarm_jobs", "gauge", "Jobs not yet ended, by kind and state.");
    for (const auto& [key, count] : active) {
      writer.Sample("gswarm_jobs", {{"kind", key.first}, {"state", key.second}}, count);
    }
  }
  if (sources.handler != nullptr) {
    absl::StatusOr<v1::ListModelsResponse> models = sources.handler->ListModels({});
    if (models.ok()) {
      std::map<std::string, int> by_state;
      for (const v1::Model& model : models->models()) ++by_state[model.state()];
      writer.Family("gswarm_models", "gauge", "Registered models by state.");
      for (const auto& [state, count] : by_state) {
        writer.Sample("gswarm_models", {{"state", state}}, count);
      }
      writer.Family("gswarm_model_size_bytes", "gauge", "Each registered model's size.");
      for (const v1::Model& model : models->models()) {
        writer.Sample("gswarm_model_size_bytes", {{"model", model.name()}},
                      static_cast<double>(model.size_bytes()));
      }
    }
  }
  if (sources.router != nullptr) {
    writer.Family("gswarm_router_queue_depth", "gauge",
                  "Requests waiting for room on an instance or for a load.");
    writer.Sample("gswarm_router_queue_depth", {}, sources.router->waiting());
  }
  return out;
}

}  // namespace gswarm::host
