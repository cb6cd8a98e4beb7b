// The config's renderers: the default file, and the effective config as JSON (GET /config)
// and YAML (gswarm config), secrets masked.

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "common/config_keys.h"

namespace gswarm::common {
namespace {

using config_internal::Key;

// `json` as YAML flow style: JSON is valid YAML; a list or map gets a space after each comma and
// colon, as a person would write it (["a", "b"], {k: "v"}).
std::string FlowYaml(const nlohmann::json& json) {
  auto dump = [](const nlohmann::json& value) {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::vector<std::string> items;
  if (json.is_array()) {
    for (const nlohmann::json& item : json) items.push_back(dump(item));
    return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
  }
  if (json.is_object()) {
    for (const auto& [key, value] : json.items()) {
      items.push_back(absl::StrCat(dump(key), ": ", dump(value)));
    }
    return absl::StrCat("{", absl::StrJoin(items, ", "), "}");
  }
  return dump(json);
}

// Engine environment variables whose values are masked like the auth tokens.
bool IsSecretVariable(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (const char* word : {"TOKEN", "SECRET", "PASSWORD", "KEY"}) {
    if (absl::StrContains(upper, word)) return true;
  }
  return false;
}

nlohmann::json EngineJson(const EngineSpec& spec) {
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [name, value] : spec.env) {
    env[name] = IsSecretVariable(name) && !value.empty() ? std::string("***") : value;
  }
  nlohmann::json json = {{"command", spec.command},
                         {"health_path", spec.health_path},
                         {"ready_timeout_s", spec.ready_timeout_s},
                         {"memory_factor", spec.memory_factor},
                         {"env", std::move(env)}};
  // The optional parts only where the engine has them.
  if (!spec.stop_command.empty()) json["stop_command"] = spec.stop_command;
  if (!spec.sleep.empty()) json["sleep"] = spec.sleep;
  if (!spec.wake.empty()) json["wake"] = spec.wake;
  if (!spec.reload.empty()) json["reload"] = spec.reload;
  return json;
}

// client.engines as YAML lines under `client:`, in the order a reader wants them.
std::string EnginesYaml(const ClientConfig& client) {
  if (client.engines.empty()) return "  engines: {}\n";
  std::string out = "  engines:\n";
  for (const auto& [name, spec] : client.engines) {
    const bool plain = !name.empty() && absl::ascii_isalpha(static_cast<unsigned char>(name[0])) &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                                c == '_' || c == '.';
                       });
    const nlohmann::json json = EngineJson(spec);
    absl::StrAppend(&out, "    ", plain ? name : FlowYaml(name), ":\n",                  //
                    "      command: ", FlowYaml(json["command"]), "\n",                  //
                    "      health_path: ", FlowYaml(json["health_path"]), "\n",          //
                    "      ready_timeout_s: ", FlowYaml(json["ready_timeout_s"]), "\n",  //
                    "      memory_factor: ", FlowYaml(json["memory_factor"]), "\n",      //
                    "      env: ", FlowYaml(json["env"]), "\n");
    for (const char* calls : {"stop_command", "sleep", "wake", "reload"}) {
      if (json.contains(calls))
        absl::StrAppend(&out, "      ", calls, ": ", FlowYaml(json[calls]), "\n");
    }
  }
  return out;
}

// client.disk_locations as YAML lines under `client:`.
std::string DiskLocationsYaml(const ClientConfig& client) {
  if (client.disk_locations.empty()) return "  disk_locations: {}\n";
  std::string out = "  disk_locations:\n";
  for (const auto& [name, spec] : client.disk_locations) {
    absl::StrAppend(&out, "    ", name, ":\n");
    if (!spec.path.empty()) absl::StrAppend(&out, "      path: ", FlowYaml(spec.path), "\n");
    absl::StrAppend(&out, "      high_watermark: ", FlowYaml(spec.high_watermark), "\n");
  }
  return out;
}

}  // namespace

std::string DefaultConfigYaml() {
  return R"yaml(# GSwarm configuration.
# Precedence: command-line flags > environment (GSWARM_HOST_PORT, GSWARM_CLIENT_NODE_ID, ...;
# GSWARM_TOKEN sets both auth tokens) > this file > built-in defaults.

host:
  host: "0.0.0.0"            # address the HTTP and gRPC servers bind to
  port: 8100                 # HTTP: REST API, OpenAI router, metrics, dashboard
  grpc_port: 8101            # gRPC: public API and the agent link
  model_cache_dir: "~/.cache/gswarm/models"
  huggingface_cache_dir: "~/.cache/huggingface"
  auto_discover_models: true # register models agents find in their HF caches when they connect
  cleanup_on_shutdown: true  # agents stop instances and empty the DRAM tier when they exit
                             # (the cluster default: client.cleanup_on_shutdown overrides)
  prefer_peers: true         # fetch a commit another node holds from that node, not the Hub
  keep_alive_s: 300          # router: stop an on-demand instance after this idle time (-1: never)
  max_loaded_models: 0       # router: models loaded on demand at once (0: no limit)
  preload: []                # router: models to load at start-up and keep loaded, e.g. [a, b]
  autoload: true             # router: load a requested model that has no ready instance
  router_queue_size: 64      # router: requests waiting for a busy instance; beyond it 429
  router_queue_timeout_s: 60 # router: seconds a request waits (queue or load) before 503
  metrics_public: false      # GET /metrics without the token
  http_io_threads: 0         # HTTP port: I/O threads (0: one per core)
  http_max_body_mb: 32       # HTTP port: largest request body; more is 413
  http_header_timeout_s: 30  # HTTP port: a request's headers must arrive within it; else 408
  http_keep_alive_timeout_s: 75  # HTTP port: idle keep-alive connections close after it
  # Bearer token for every call but /health. Empty: none on loopback; beyond loopback one is
  # generated into ~/.cache/gswarm/token.
  auth_token: ""

  # The cluster's default tier layout, sent to every agent on connect.
  storage_devices:
    disk:
      enabled: true
      path: "~/.cache/gswarm/models"
    dram:
      enabled: true
      path: "/dev/shm/gswarm_models"
      max_size_gb: 64        # GiB; 0: bounded only by the device

  # TLS for gRPC and HTTP:
  # tls:
  #   cert_file: "/etc/gswarm/host.pem"
  #   key_file: "/etc/gswarm/host.key"

client:
  host_url: "http://localhost:8100"
  host_grpc: ""              # host:port; empty: the host of host_url, port 8101
  node_id: ""                # empty: this machine's hostname
  model_cache_dir: "~/.cache/gswarm/models"
  dram_cache_dir: "/dev/shm/gswarm_models"
  dram_cache_size: 16        # DRAM tier budget, GiB
  gpu_memory_fraction: 0.9   # share of each GPU's memory instances may use
  cpu_memory_budget: 0       # GiB of RAM engines on the CPU may take; 0: RAM less the DRAM
                             # tier's budget less 10% (at least 1 GiB)
  unified_memory: false      # GPUs share the system RAM (Jetson): every engine uses that budget
  default_gpu_memory_utilization: 0.90
  max_concurrent_requests: 256
  engine_host: "127.0.0.1"   # where engines listen; 0.0.0.0 lets a host on another node route
  auth_token: ""             # token sent to the host; GSWARM_TOKEN also sets it
  data_port: 8102            # serves this node's tiers to peers
  download_connections: 1    # parallel byte ranges per big Hub file (for a per-connection cap)
  # cleanup_on_shutdown: true  # this node's own; unset: host.cleanup_on_shutdown
  # huggingface_cache_dir: "~/.cache/huggingface"  # unset: host.huggingface_cache_dir
  heartbeat_interval_s: 2    # seconds between heartbeats to the host
  default_engine: "vllm"     # the engine `serve` starts unless told: vllm, llama-server, sglang,
                             # nim, compose, or one under engines

  # Inference engines by name: a command (a list, or one string split on spaces) with the
  # placeholders {model_path} {model_file} {model_name} {host} {port} {gpu}
  # {gpu_memory_utilization} {max_concurrent_requests} {instance_id} ({{ and }} are literal braces), the
  # health path polled until ready, a ready timeout and extra environment; an engine that can
  # sleep (free its GPU memory without exiting) also has sleep and wake calls, "METHOD /path [BODY]"
  # on its own port ({sleep_level} is 1 or 2), and reload for waking from level 2. An entry named
  # like a preset (vllm, llama-server, sglang, nim, compose) changes only the fields it gives; a
  # stop_command runs on stop before the signals (a container engine: docker stop NAME).
  # memory_factor (default 1.2): RAM an instance on the CPU (or a unified-memory node) reserves
  # per byte of weights, until its measured RSS says more.
  # engines:
  #   vllm:                    # the preset, with more time to load
  #     ready_timeout_s: 1200
  #   my-server:
  #     command: "/opt/my-server --model {model_path} --name {model_name} --port {port}"
  #     health_path: "/healthz"
  #     ready_timeout_s: 120
  #     env: {HF_HUB_OFFLINE: "1"}
  #     sleep: ["POST /sleep?level={sleep_level}"]
  #     wake: ["POST /wake_up"]
  #   my-other:
  #     command: ["my-other", "--config", "{{\"port\": {port}}}"]

  # More places for disk copies, by name ("primary" is model_cache_dir). A download names one
  # (seed 004's cache_location); downloads and copies reserve their size up front and stop
  # short of filling a disk past its high_watermark (default 0.9).
  # disk_locations:
  #   primary: {high_watermark: 0.9}
  #   secondary: {path: "/mnt/data/gswarm-models", high_watermark: 0.95}
)yaml";
}

nlohmann::json ConfigToJson(const Config& config) {
  nlohmann::json out = nlohmann::json::object();
  for (const Key& key : config_internal::AllKeys()) {
    nlohmann::json* node = &out;
    for (absl::string_view part : absl::StrSplit(key.path, '.')) node = &(*node)[std::string(part)];
    *node = config_internal::ValueJson(key, config);
  }
  nlohmann::json& engines = out["client"]["engines"] = nlohmann::json::object();
  for (const auto& [name, spec] : config.client.engines) engines[name] = EngineJson(spec);
  nlohmann::json& locations = out["client"]["disk_locations"] = nlohmann::json::object();
  for (const auto& [name, spec] : config.client.disk_locations) {
    locations[name] = {{"high_watermark", spec.high_watermark}};
    if (!spec.path.empty()) locations[name]["path"] = spec.path;
  }
  return out;
}

std::string ConfigToYaml(const Config& config) {
  std::string out;
  std::vector<absl::string_view> open;   // the sections the previous key sat in
  const Key* last_client_key = nullptr;  // client.engines follows it
  for (const Key& key : config_internal::AllKeys()) {
    if (absl::StartsWith(key.path, "client.")) last_client_key = &key;
  }
  for (const Key& key : config_internal::AllKeys()) {
    std::vector<absl::string_view> parts = absl::StrSplit(key.path, '.');
    absl::string_view name = parts.back();
    parts.pop_back();
    size_t common = 0;
    while (common < open.size() && common < parts.size() && open[common] == parts[common]) {
      ++common;
    }
    open.resize(common);
    for (size_t i = common; i < parts.size(); ++i) {
      if (i == 0 && !out.empty()) out += "\n";
      absl::StrAppend(&out, std::string(2 * i, ' '), parts[i], ":\n");
      open.push_back(parts[i]);
    }
    // Strings come out double-quoted and escaped, lists as ["a", "b"].
    absl::StrAppend(&out, std::string(2 * parts.size(), ' '), name, ": ",
                    FlowYaml(config_internal::ValueJson(key, config)), "\n");
    if (&key == last_client_key)
      out += EnginesYaml(config.client) + DiskLocationsYaml(config.client);
  }
  return out;
}

}  // namespace gswarm::common
