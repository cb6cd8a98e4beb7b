#pragma once

// The node agent's link to the host: dials out (agents behind NAT work), says Hello with the
// node's hardware and memory, heartbeats every interval, and reconnects with exponential backoff
// and jitter whenever the stream ends, until stopped.
//
// Thread safety: Start and Stop from one thread; the rest is internal. Uses gRPC's synchronous
// client API: an agent has one stream, so a reader thread and a heartbeat thread are cheap.

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "client/command_runner.h"
#include "client/data_server.h"
#include "client/disk_space.h"
#include "client/disk_tier.h"
#include "client/dram_tier.h"
#include "client/instance_supervisor.h"
#include "client/memory_probe.h"
#include "common/backoff.h"
#include "common/config.h"
#include "common/engine_spec.h"
#include "common/mutex.h"
#include "grpcpp/security/credentials.h"
#include "gswarm/v1/agent.grpc.pb.h"

namespace gswarm::client {

struct AgentOptions {
  std::string host_target;                                // host:port of the host's gRPC server
  std::string auth_token;                                 // "" : none presented
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null: plaintext
  std::string node_id;                                    // validated by the host
  std::string hostname;
  // Where peers fetch this node's models (0: serve none). Bound to loopback when there is no
  // cluster token, so that files are never open to the network without one.
  uint32_t data_port = 0;
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // With no message from the host for this long, the stream is presumed dead and redialled
  // (covers a frozen host, which keeps the TCP connection open).
  absl::Duration host_silence_limit = absl::Seconds(10);
  common::Backoff::Options backoff;
  // Ceiling of the delay while the host is unreachable (UNAVAILABLE): a restarted host has every
  // agent back within about this long of answering. Refusals (a wrong token, a replaced
  // session) back off up to backoff.max.
  absl::Duration unavailable_max_delay = absl::Seconds(1);
  std::vector<v1::TierInfo> tiers;
  // Whether this node's own config sets its disk path, DRAM path and DRAM budget
  // (client.model_cache_dir, dram_cache_dir, dram_cache_size, or host.storage_devices in the
  // same file under `gswarm start`). What it does not set follows the cluster default the host
  // sends on connect (host.storage_devices): the DRAM budget at once; a path, which the node has
  // used since it started, is reported instead.
  bool own_disk_path = true;
  bool own_dram_path = true;
  bool own_dram_budget = true;
  // The disk tier (Hello reports the Hugging Face cache's models too: the host decides whether
  // to register them, host.auto_discover_models).
  DiskTier::Options disk;
  DramTier::Options dram;
  // Stop the instances and empty the DRAM tier when the agent stops (client.cleanup_on_shutdown,
  // or the same file's host.cleanup_on_shutdown); `own_cleanup` false: the host's value, sent on
  // connect, decides.
  bool cleanup_on_shutdown = true;
  bool own_cleanup = true;
  // How commands reach the Hub (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).
  HubOptions hub;
  // Engines (presets and client.engines), the default one, and what instances get.
  std::map<std::string, common::EngineSpec> engines;
  std::string default_engine = "vllm";
  // RAM engines on the CPU may take (client.cpu_memory_budget; 0: from the node's RAM, see
  // CpuMemoryBudget), and whether the GPUs share it (client.unified_memory).
  uint64_t cpu_memory_budget_bytes = 0;
  // client.download_connections.
  int download_connections = 1;
  bool unified_memory = false;
  double gpu_memory_utilization = 0.9;
  int max_concurrent_requests = 256;
  std::string engine_host = "127.0.0.1";  // client.engine_host
  // Instance records (for re-adoption) and logs: ~/.cache/gswarm/instances, .../logs.
  std::string instance_state_dir;
  std::string instance_log_dir;
};

class Agent {
 public:
  // Builds the options from the client section of the config: node id defaults to the hostname,
  // the target to HostGrpcTarget(), the token to client.auth_token or the local token file.
  static absl::StatusOr<AgentOptions> OptionsFromConfig(const common::Config& config);

  Agent(AgentOptions options, std::unique_ptr<MemoryProbe> probe);
  ~Agent();

  void Start();
  // Half-closes the stream so the host sees a clean goodbye, then joins. Bounded by a deadline.
  void Stop();

  // True while a session is established (Welcome received).
  bool connected() const { return connected_.load(); }

 private:
  void Run();
  // The host's cluster defaults (Welcome.default_tiers) for what this node's config leaves
  // open: the DRAM budget follows them; a differing tier path is logged (see AgentOptions).
  void ApplyClusterDefaults(const v1::Welcome& welcome);
  // The memory probe's sample with the DRAM tier's live budget.
  v1::MemoryUsage SampleMemory();
  // One stream from dial to end; returns why it ended.
  absl::Status RunSession();
  void HeartbeatLoop(grpc::ClientContext* context);
  v1::Hello MakeHello();
  // Writes to the current stream; false (message dropped) when there is none.
  bool SendToHost(const v1::AgentMessage& message);

  const AgentOptions options_;
  // options_.cleanup_on_shutdown, or the host's when this node leaves it open.
  std::atomic<bool> cleanup_on_shutdown_{options_.cleanup_on_shutdown};
  std::unique_ptr<MemoryProbe> probe_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentLink::Stub> stub_;
  std::thread thread_;
  std::atomic<bool> connected_{false};

  gswarm::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool session_over_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_from_host_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;

  // One writer at a time on the stream: heartbeats and command updates share it.
  gswarm::Mutex write_mu_;
  grpc::ClientReaderWriter<v1::AgentMessage, v1::HostMessage>* stream_ ABSL_GUARDED_BY(write_mu_) =
      nullptr;

  DiskTier disk_;
  DiskSpace disk_space_;  // reservations on disk_'s locations
  DramTier dram_;
  std::unique_ptr<DataServer> data_server_;
  std::unique_ptr<InstanceSupervisor> supervisor_;
  // Last: its workers send through the members above, so it goes first.
  std::unique_ptr<CommandRunner> runner_;
};

}  // namespace gswarm::client
