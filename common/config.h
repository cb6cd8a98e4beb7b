#pragma once

// GSwarm's configuration: ~/.gswarm.conf (YAML, `host:` and `client:` sections).
//
// Precedence, highest first: command-line flags (LoadOptions::overrides) > environment
// (GSWARM_<SECTION>_<KEY>, e.g. GSWARM_HOST_PORT, GSWARM_CLIENT_NODE_ID,
// GSWARM_HOST_STORAGE_DEVICES_DRAM_MAX_SIZE_GB; GSWARM_TOKEN sets both auth tokens) > the file >
// the defaults written in the structs below.
//
// Config is parsed once into these plain structs; each part of GSwarm receives its own section.
// Thread safety: plain values, no shared state.

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine_spec.h"
#include "nlohmann/json.hpp"

namespace gswarm::common {

struct StorageDeviceConfig {
  bool enabled = true;
  std::string path;
  // Capacity in GB (GiB); 0 means "bounded only by the device".
  double max_size_gb = 0;

  friend bool operator==(const StorageDeviceConfig&, const StorageDeviceConfig&) = default;
};

struct TlsConfig {
  std::string cert_file;  // PEM; empty: plaintext
  std::string key_file;
  std::string ca_file;  // agents and the CLI verify the host against this; empty: system roots

  friend bool operator==(const TlsConfig&, const TlsConfig&) = default;
};

struct HostConfig {
  // Address the HTTP and gRPC servers bind to.
  std::string host = "0.0.0.0";
  // HTTP: REST API, OpenAI router, metrics, dashboard.
  int port = 8100;
  // gRPC: public API and the agent link.
  int grpc_port = 8101;
  std::string model_cache_dir = "~/.cache/gswarm/models";
  std::string huggingface_cache_dir = "~/.cache/huggingface";
  // Register models found on disk at start-up.
  bool auto_discover_models = true;
  // Stop instances and empty the DRAM tier when an agent exits.
  bool cleanup_on_shutdown = true;
  // A download of an hf:// commit some online node already holds is pulled from that node's
  // data port instead of the Hub.
  bool prefer_peers = true;
  // Router: an instance the router loaded on demand is stopped after this many idle seconds
  // (negative: never).
  double keep_alive_s = 300;
  // Router: at most this many models loaded on demand at once; the least recently used idle one
  // makes room (0: no limit).
  int max_loaded_models = 0;
  // Router: models loaded at start-up and kept loaded, by model name ([A-Za-z0-9][A-Za-z0-9._-]*,
  // no ".."). In the file a YAML list or one comma-separated string; in the environment and flags
  // comma-separated: GSWARM_HOST_PRELOAD="llama2-7b, qwen2-0.5b".
  std::vector<std::string> preload;
  // Router: a request naming a model with no ready instance loads it on demand (false: 503 at
  // once).
  bool autoload = true;
  // Router: requests waiting for a busy instance, across all models; one more gets 429.
  int router_queue_size = 64;
  // Router: how long a request waits in the queue or for a model to load before 503, seconds.
  double router_queue_timeout_s = 60;
  // GET /metrics without the token (for a Prometheus that scrapes without one).
  bool metrics_public = false;
  // HTTP port: I/O threads serving every connection (0: one per core).
  int http_io_threads = 0;
  // HTTP port: the largest request body, MiB; more is refused with 413.
  double http_max_body_mb = 32;
  // HTTP port: a request's line and headers must arrive within this many seconds (slowloris);
  // else 408.
  double http_header_timeout_s = 30;
  // HTTP port: an idle keep-alive connection is closed after this many seconds.
  double http_keep_alive_timeout_s = 75;
  // The cluster's default tier layout, sent to every agent on connect.
  StorageDeviceConfig disk{true, "~/.cache/gswarm/models", 0};
  StorageDeviceConfig dram{true, "/dev/shm/gswarm_models", 64};
  // Bearer token every call but /health must carry. Empty: none, unless the host listens beyond
  // loopback, where one is generated into ~/.cache/gswarm/token (see auth.h).
  std::string auth_token;
  TlsConfig tls;
  // Serve without any token even beyond loopback (explicit opt-out).
  bool insecure = false;

  friend bool operator==(const HostConfig&, const HostConfig&) = default;
};

// One of client.disk_locations: a named place for disk copies of models.
struct DiskLocationSpec {
  std::string path;  // absolute (~ expanded); empty for "primary", which is model_cache_dir
  // Downloads and copies stop short of filling the filesystem past this share (0 < w <= 1).
  double high_watermark = 0.9;

  friend bool operator==(const DiskLocationSpec&, const DiskLocationSpec&) = default;
};

struct ClientConfig {
  // The host's HTTP address, as in the original GSwarm.
  std::string host_url = "http://localhost:8100";
  // The host's gRPC address host:port; empty: the host of host_url with port 8101.
  std::string host_grpc;
  // Empty: this machine's hostname.
  std::string node_id;
  std::string model_cache_dir = "~/.cache/gswarm/models";
  std::string dram_cache_dir = "/dev/shm/gswarm_models";
  // DRAM tier budget in GB (GiB).
  double dram_cache_size = 16;
  // Share of each GPU's memory instances may use.
  double gpu_memory_fraction = 0.9;
  // RAM (GiB) that engines on the CPU may take, and on a unified-memory node every engine. 0: the
  // node's RAM less the DRAM tier's budget less a headroom (10%, at least 1 GiB).
  double cpu_memory_budget = 0;
  // The GPUs share the system RAM (Jetson-class boards): every instance draws on
  // cpu_memory_budget, whichever device it runs on.
  bool unified_memory = false;
  double default_gpu_memory_utilization = 0.90;
  int max_concurrent_requests = 256;
  // Where engines listen: 127.0.0.1 keeps them to this node, so only a host on this node can
  // route to them; 0.0.0.0 lets a host on another node reach them (at the address this agent
  // connects from).
  std::string engine_host = "127.0.0.1";
  // Stop this node's instances and empty its DRAM tier when the agent exits. Unset here, the
  // same file's host.cleanup_on_shutdown (gswarm start), else the host's (sent on connect).
  bool cleanup_on_shutdown = true;
  // The Hugging Face cache this node scans for models (HF_HUB_CACHE and HF_HOME win). Unset
  // here, the same file's host.huggingface_cache_dir (gswarm start).
  std::string huggingface_cache_dir = "~/.cache/huggingface";
  std::string auth_token;
  // Port serving this node's tiers to peers.
  int data_port = 8102;
  // Connections per source for a file of 64 MiB or more from the Hub: above 1, byte ranges in
  // parallel (for a network that limits each connection); 1 keeps one stream per file, whose
  // hash state is checkpointed for resumes.
  int download_connections = 1;
  double heartbeat_interval_s = 2;
  // Engines configured under client.engines, by name. An entry named like a preset (vllm,
  // llama-server, sglang) starts from the preset and overrides the fields it gives; the presets
  // themselves are not listed here (see EffectiveEngines).
  std::map<std::string, EngineSpec> engines;
  // The engine `serve` uses when none is named; a preset or a configured engine.
  std::string default_engine = "vllm";
  // Places for disk copies besides model_cache_dir ("primary", whose entry may set only its
  // high_watermark), by name: {path, high_watermark}. Downloads name one (seed 004's
  // cache_location); every one is scanned for models.
  std::map<std::string, DiskLocationSpec> disk_locations;

  friend bool operator==(const ClientConfig&, const ClientConfig&) = default;
};

struct Config {
  HostConfig host;
  ClientConfig client;
  // The file the config came from ("" when none was read).
  std::string path;
  // Non-fatal findings (unknown keys), each naming file, line and key.
  std::vector<std::string> warnings;
  // The keys given in the file, the environment or a flag ("client.dram_cache_size"): the rest
  // hold their defaults.
  std::set<std::string> explicit_keys;

  // Two configs with the same values are equal, however the values were given.
  friend bool operator==(const Config& a, const Config& b) {
    return a.host == b.host && a.client == b.client && a.path == b.path && a.warnings == b.warnings;
  }
};

struct LoadOptions {
  // --config; empty: $GSWARM_CONFIG, then ~/.gswarm.conf.
  std::string path;
  // When the file is missing: write the defaults there (mode 0600) if it is the default path
  // (or $GSWARM_CONFIG); an explicit `path` that does not exist is always an error.
  bool create_if_missing = false;
  // Command-line flags as (key, value), keys as in the file: {"host.port", "9000"}.
  std::vector<std::pair<std::string, std::string>> overrides;
  // The environment to read GSWARM_* from; nullptr: the process environment.
  const std::map<std::string, std::string>* env = nullptr;
};

// Loads, layers and validates the configuration. Errors name the file, line and key:
//   "/home/u/.gswarm.conf:4: host.port: 70000 is out of range (1-65535)".
absl::StatusOr<Config> LoadConfig(const LoadOptions& options);

// Parses one YAML document over the defaults and validates it. `source` names it in messages.
absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source);

// Sets one key ("client.dram_cache_size") from its text form, as a flag or env var would.
absl::Status SetConfigValue(Config& config, std::string_view key, std::string_view value,
                            std::string_view source);

// The file written on first run: the seed's sample layout with GSwarm's own keys, commented.
std::string DefaultConfigYaml();

// The effective config as JSON ({"host": {...}, "client": {...}}), secrets masked as "***".
nlohmann::json ConfigToJson(const Config& config);

// The same as YAML text, for `gswarm config`.
std::string ConfigToYaml(const Config& config);

// A valid key of client.disk_locations: 1-64 of [A-Za-z0-9._-], not "custom" (a per-download
// path) nor "." or "..".
bool IsDiskLocationName(std::string_view name);

// The engines an agent can start: the presets, with the configured engines over them.
std::map<std::string, EngineSpec> EffectiveEngines(const ClientConfig& client);

// "host:port" for the agent and CLI to dial: client.host_grpc, else host_url's host with 8101.
std::string HostGrpcTarget(const ClientConfig& client);

// The same, except that when host_url names this machine (loopback) the port is host.grpc_port:
// on the host's own machine the CLI and a local agent find it wherever its config moved it.
std::string HostGrpcTarget(const Config& config);

}  // namespace gswarm::common
