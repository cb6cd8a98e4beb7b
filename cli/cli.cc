#include "cli/cli.h"

#include <iostream>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/api_client.h"
#include "cli/event_commands.h"
#include "cli/instance_commands.h"
#include "cli/model_commands.h"
#include "cli/output.h"
#include "cli/server_commands.h"
#include "cli/tier_commands.h"
#include "cli/top_command.h"
#include "common/config.h"
#include "common/logging.h"
#include "gswarm/v1/api.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace gswarm::cli {
namespace {

// Flags shared by every subcommand (CLI11 lets them stand before or after the verb).
struct GlobalFlags {
  std::string config_path;
  std::string host;  // gRPC address of the host, for verbs and `gswarm client`
  std::string token;
  std::string log_level = "info";
  bool json = false;
};

// Flags of the long-running commands, each mapped to a config key.
struct ServerFlags {
  std::string bind;
  int port = -1;
  int grpc_port = -1;
  bool insecure = false;
  std::string node_id;
  int data_port = -1;
};

// Loads the config with flags layered on top. Server commands create the default file.
absl::StatusOr<common::Config> LoadWithFlags(const GlobalFlags& global, const ServerFlags& server,
                                             bool is_server) {
  common::LoadOptions options;
  options.path = global.config_path;
  options.create_if_missing = is_server;
  auto set = [&](const char* key, std::string value) {
    options.overrides.emplace_back(key, value);
  };
  if (!server.bind.empty()) set("host.host", server.bind);
  if (server.port >= 0) set("host.port", std::to_string(server.port));
  if (server.grpc_port >= 0) set("host.grpc_port", std::to_string(server.grpc_port));
  if (server.insecure) set("host.insecure", "true");
  if (!server.node_id.empty()) set("client.node_id", server.node_id);
  if (server.data_port >= 0) set("client.data_port", std::to_string(server.data_port));
  if (!global.host.empty()) set("client.host_grpc", global.host);
  if (!global.token.empty()) {
    set("client.auth_token", global.token);
    if (is_server) set("host.auth_token", global.token);
  }
  return common::LoadConfig(options);
}

std::string Percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  return absl::StrFormat("%.0f%%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

int ShowHealth(ApiClient& api, bool json) {
  int exit_code = 0;
  std::optional<v1::HealthResponse> health = Fetch<v1::HealthResponse>(
      api, &v1::GSwarm::Stub::Health, v1::HealthRequest(), json, &exit_code);
  if (!health.has_value()) return exit_code;
  const v1::ClusterMemory& m = health->memory();
  Table table({"STATUS", health->status()});
  table.AddRow({"version", health->version()});
  table.AddRow({"uptime", HumanDuration(health->uptime_s())});
  table.AddRow({"nodes", absl::StrCat(health->nodes_online(), " online / ", health->nodes_total(),
                                      " total")});
  table.AddRow({"dram", absl::StrCat(HumanBytes(m.dram_available_bytes()), " available of ",
                                     HumanBytes(m.dram_total_bytes()))});
  table.AddRow({"disk", absl::StrCat(HumanBytes(m.disk_free_bytes()), " free of ",
                                     HumanBytes(m.disk_total_bytes()))});
  table.AddRow(
      {"gpus", m.gpu_count() == 0
                   ? "none"
                   : absl::StrCat(m.gpu_count(), " (",
                                  UsedOf(m.gpu_used_bytes(), m.gpu_total_bytes()), " used)")});
  table.AddRow({"auth", health->auth_required() ? "token required" : "off"});
  std::cout << table.Render();
  return 0;
}

int ShowNodes(ApiClient& api, bool json) {
  int exit_code = 0;
  std::optional<v1::ListNodesResponse> nodes = Fetch<v1::ListNodesResponse>(
      api, &v1::GSwarm::Stub::ListNodes, v1::ListNodesRequest(), json, &exit_code);
  if (!nodes.has_value()) return exit_code;
  if (nodes->nodes().empty()) {
    std::cout << "No nodes have connected yet. Start an agent with `gswarm client --host "
                 "HOST:8101` (or run `gswarm start` for host and agent together).\n";
    return 0;
  }
  Table table({"NODE", "STATE", "HOSTNAME", "CPUS", "DRAM AVAIL", "DISK FREE", "GPUS",
               "LAST HEARTBEAT", "REASON"});
  for (const v1::NodeInfo& node : nodes->nodes()) {
    const v1::MemoryUsage& m = node.memory();
    table.AddRow(
        {node.node_id(), node.state(), node.hostname(), std::to_string(node.cpu_cores()),
         absl::StrCat(HumanBytes(m.dram_available_bytes()), " / ",
                      HumanBytes(m.dram_total_bytes())),
         absl::StrCat(HumanBytes(m.disk_free_bytes()), " / ", HumanBytes(m.disk_total_bytes())),
         std::to_string(node.gpus_size()), Ago(node.last_heartbeat_at()),
         node.state() == "online" ? "" : node.state_reason()});
  }
  std::cout << table.Render();
  return 0;
}

int ShowMemory(ApiClient& api, bool json) {
  v1::GetMemoryRequest request;
  request.set_view("nodes");
  int exit_code = 0;
  std::optional<v1::GetMemoryResponse> memory =
      Fetch<v1::GetMemoryResponse>(api, &v1::GSwarm::Stub::GetMemory, request, json, &exit_code);
  if (!memory.has_value()) return exit_code;
  Table table({"NODE", "STATE", "DRAM USED", "DRAM TIER", "DISK USED", "GPU USED / BUDGET"});
  for (const v1::NodeMemory& node : memory->nodes()) {
    const v1::MemoryUsage& m = node.memory();
    std::string gpus;
    for (const v1::GpuInfo& gpu : m.gpus()) {
      absl::StrAppend(&gpus, gpus.empty() ? "" : ", ", "gpu", gpu.index(), " ",
                      UsedOf(gpu.memory_used_bytes(), gpu.memory_budget_bytes()));
    }
    const uint64_t dram_used =
        m.dram_total_bytes() - std::min(m.dram_total_bytes(), m.dram_available_bytes());
    const uint64_t disk_used =
        m.disk_total_bytes() - std::min(m.disk_total_bytes(), m.disk_free_bytes());
    table.AddRow({node.node_id(), node.state(),
                  absl::StrCat(UsedOf(dram_used, m.dram_total_bytes()), " (",
                               Percent(dram_used, m.dram_total_bytes()), ")"),
                  UsedOf(m.dram_tier_used_bytes(), m.dram_tier_budget_bytes()),
                  absl::StrCat(UsedOf(disk_used, m.disk_total_bytes()), " (",
                               Percent(disk_used, m.disk_total_bytes()), ")"),
                  gpus.empty() ? "no GPUs" : gpus});
  }
  std::cout << table.Render();
  return 0;
}

int ShowConfig(const common::Config& config, bool json) {
  if (json) {
    nlohmann::json out = {{"path", config.path}, {"config", common::ConfigToJson(config)}};
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::cout << "# effective config (flags > GSWARM_* environment > "
            << (config.path.empty() ? "defaults; no file" : config.path) << " > defaults)\n"
            << common::ConfigToYaml(config) << "\n";
  return 0;
}

}  // namespace

int RunCli(int argc, char** argv) {
  CLI::App app{
      "GSwarm: moves model weights between disk, DRAM and GPU on every node of a cluster and "
      "runs inference engines on command.\n\n"
      "  gswarm start                 host and a local agent: one machine, zero setup\n"
      "  gswarm host                  the host alone (REST :8100, gRPC :8101)\n"
      "  gswarm client --host H:8101  an agent on each GPU node\n"
      "  gswarm nodes                 what the host sees\n",
      "gswarm"};
  app.require_subcommand(1);
  app.fallthrough();
  GlobalFlags global;
  ServerFlags server;
  app.add_option("--config", global.config_path,
                 "Config file (default $GSWARM_CONFIG, else ~/.gswarm.conf)");
  app.add_option("--host", global.host,
                 "The host's gRPC address HOST:PORT (default client.host_grpc, else the host of "
                 "client.host_url with port 8101)")
      ->envname("GSWARM_HOST");
  app.add_option("--token", global.token,
                 "Auth token to present (default GSWARM_TOKEN, client.auth_token, or "
                 "~/.cache/gswarm/token)");
  app.add_option("--log-level", global.log_level, "trace, debug, info, warn, error or off")
      ->envname("GSWARM_LOG_LEVEL");
  app.add_flag("--json", global.json, "Print JSON (protobuf's mapping) instead of tables");

  auto add_host_flags = [&](CLI::App* cmd) {
    cmd->add_option("--bind", server.bind, "Address to listen on (host.host, default 0.0.0.0)");
    cmd->add_option("--port", server.port, "HTTP port: REST, router, metrics (host.port, 8100)");
    cmd->add_option("--grpc-port", server.grpc_port, "gRPC port (host.grpc_port, 8101)");
    cmd->add_flag("--insecure", server.insecure,
                  "Require no token even when listening beyond loopback");
  };
  auto add_agent_flags = [&](CLI::App* cmd) {
    cmd->add_option("--node-id", server.node_id,
                    "This node's id (client.node_id, default hostname)");
    cmd->add_option("--data-port", server.data_port, "Port serving this node's tiers to peers");
  };
  CLI::App* start = app.add_subcommand("start", "Run the host and a local agent in one process");
  add_host_flags(start);
  add_agent_flags(start);
  CLI::App* host = app.add_subcommand("host", "Run the host: registry, API, REST, agent link");
  add_host_flags(host);
  CLI::App* client =
      app.add_subcommand("client", "Run a node agent that connects to the host (--host HOST:PORT)");
  add_agent_flags(client);
  CLI::App* nodes = app.add_subcommand("nodes", "List the nodes, their state and memory");
  CLI::App* health = app.add_subcommand("health", "Show the host's health and cluster totals");
  CLI::App* config = app.add_subcommand("config", "Print the effective local config");
  CLI::App* memory =
      app.add_subcommand("memory", "Show DRAM, DRAM tier, disk and GPU use per node");
  CLI::App* version = app.add_subcommand("version", "Print GSwarm's version");
  ModelCommands models(app);
  TierCommands tiers(app);
  InstanceCommands instances(app);
  EventCommands events(app);
  TopCommand top(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (version->parsed()) {
    if (global.json) {
      std::cout << nlohmann::json{{"version", GSWARM_VERSION}}.dump() << "\n";
    } else {
      std::cout << "gswarm " << GSWARM_VERSION << "\n";
    }
    return 0;
  }

  const bool is_server = start->parsed() || host->parsed() || client->parsed();
  if (is_server) {
    // Before any thread exists, so that only the main thread's sigwait receives them.
    BlockTerminationSignals();
  }
  if (absl::Status s = common::InitLogging(is_server ? global.log_level : "warn"); !s.ok()) {
    return PrintError(s.message());
  }
  absl::StatusOr<common::Config> loaded = LoadWithFlags(global, server, is_server);
  if (!loaded.ok()) return PrintError(loaded.status().message());
  for (const std::string& warning : loaded->warnings) spdlog::warn("{}", warning);

  if (start->parsed()) return RunStart(*loaded);
  if (host->parsed()) return RunHost(*loaded);
  if (client->parsed()) return RunClient(*loaded);
  if (config->parsed()) return ShowConfig(*loaded, global.json);

  absl::StatusOr<std::unique_ptr<ApiClient>> api = ApiClient::Create(*loaded);
  if (!api.ok()) return PrintError(api.status().message());
  if (nodes->parsed()) return ShowNodes(**api, global.json);
  if (health->parsed()) return ShowHealth(**api, global.json);
  if (memory->parsed()) return ShowMemory(**api, global.json);
  if (models.Parsed()) return models.Run(**api, global.json);
  if (tiers.Parsed()) return tiers.Run(**api, global.json);
  if (instances.Parsed()) return instances.Run(**api, global.json);
  if (events.Parsed()) return events.Run(**api, global.json);
  if (top.Parsed()) return top.Run(**api, global.json);
  return PrintError("no command given; see gswarm --help");
}

}  // namespace gswarm::cli
