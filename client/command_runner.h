#pragma once

// Runs the host's commands on this node (download, delete, discover, validate), each on a worker
// thread, and reports progress and outcome as CommandUpdates through `send`.
//
// Commands are idempotent by id: one already running is not started again (the host re-sends
// unfinished commands whenever the agent reconnects), and one already finished answers its final
// update again. Progress goes out at most every `update_interval` per command; the final update
// always goes out.
//
// Thread safety: thread-safe.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "client/disk_space.h"
#include "client/disk_tier.h"
#include "client/downloader.h"
#include "client/dram_tier.h"
#include "client/instance_supervisor.h"
#include "common/engine_spec.h"
#include "common/mutex.h"
#include "common/worker_pool.h"
#include "gswarm/v1/agent.pb.h"

namespace gswarm::client {

// A command's final update: succeeded, or failed / cancelled with the status's message.
v1::CommandUpdate Outcome(const std::string& id, const absl::Status& status);

// Polls `held` (an engine's GPU bytes now) until it is at most a tenth of `before`, every `poll`
// for up to `timeout`, and returns that figure. FAILED_PRECONDITION saying how much is still held
// otherwise.
absl::StatusOr<uint64_t> AwaitGpuFreed(uint64_t before,
                                       const std::function<std::optional<uint64_t>()>& held,
                                       absl::Duration timeout, absl::Duration poll);

class CommandRunner {
 public:
  struct Options {
    HubOptions hub;
    // Presented to peers' data ports (cross-node copies, peer downloads).
    std::string cluster_token;
    // Engines this node can run (presets and client.engines) and the default one.
    std::map<std::string, common::EngineSpec> engines;
    std::string default_engine = "vllm";
    double gpu_memory_utilization = 0.9;
    int max_concurrent_requests = 256;
    // Where engines listen (client.engine_host).
    std::string engine_host = "127.0.0.1";
    // The GPU memory an instance's engine holds now; nullopt where the node cannot measure it
    // (no NVML). Checks that a sleep freed it. May be empty.
    std::function<std::optional<uint64_t>(const v1::Instance&)> gpu_bytes;
    // How long a sleeping engine has to free 90% of its GPU memory (SleepCommand's default).
    absl::Duration sleep_verify_timeout = absl::Seconds(30);
    int max_concurrent = 4;
    absl::Duration update_interval = absl::Milliseconds(250);
    // Space promised on the disk locations (shared with the heartbeat's report); null: the
    // runner keeps its own.
    DiskSpace* disk_space = nullptr;
    // Connections per source for a big file of a Hub download (client.download_connections).
    int download_connections = 1;
  };
  // Delivers a message to the host; may drop it while disconnected (the host re-sends the
  // command on reconnect, and a finished command answers its final update again).
  using SendFn = std::function<void(v1::AgentMessage)>;

  // The tiers and the supervisor must outlive the runner.
  CommandRunner(Options options, const DiskTier* disk, DramTier* dram,
                InstanceSupervisor* supervisor, SendFn send);
  // Cancels what runs (downloads keep their partial files) and waits for it.
  ~CommandRunner();

  void Handle(const v1::Command& command);
  void Cancel(const std::string& command_id);

 private:
  struct Entry {
    std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
    bool finished = false;
    v1::CommandUpdate final_update;
  };

  void Run(const v1::Command& command, std::shared_ptr<std::atomic<bool>> cancel);
  v1::CommandUpdate Download(const v1::Command& command, const std::atomic<bool>* cancel);
  v1::CommandUpdate Delete(const v1::Command& command);
  v1::CommandUpdate Copy(const v1::Command& command, const std::atomic<bool>* cancel);
  v1::CommandUpdate Serve(const v1::Command& command, const std::atomic<bool>* cancel);
  // Instances on the supervisor (instance_commands.cc).
  v1::CommandUpdate StopInstance(const v1::Command& command);
  v1::CommandUpdate SleepInstance(const v1::Command& command);
  v1::CommandUpdate WakeInstance(const v1::Command& command);
  absl::StatusOr<InstanceSpec> PlanInstance(const v1::ServeCommand& serve) const;
  // Makes room in DRAM for `bytes` (evicting when allowed); adds what it evicted to `update`.
  // REQUIRES: dram_mu_ held, so that two copies do not plan with the same free bytes.
  absl::Status MakeDramRoom(const std::string& name, uint64_t bytes, bool evict,
                            v1::CommandUpdate& update) ABSL_EXCLUSIVE_LOCKS_REQUIRED(dram_mu_);
  // Sends progress at most every update_interval.
  std::function<void(uint64_t, uint64_t, uint32_t, uint32_t)> Throttled(const std::string& id);
  v1::CommandUpdate Discover(const v1::Command& command);
  // The disk location a download or copy writes `name` to: where the model already is, else
  // `location` ("" = primary; "custom" with `custom_path`).
  absl::StatusOr<DiskPlace> TargetPlace(const std::string& name, const std::string& location,
                                        const std::string& custom_path) const;
  // Reserves `bytes` in `place` for `what` (see DiskSpace) into `*held`, which the writer's
  // progress shrinks (Landed); returned as the downloader holds it.
  absl::StatusOr<std::shared_ptr<void>> Reserve(const DiskPlace& place, uint64_t bytes,
                                                const std::string& what,
                                                std::shared_ptr<DiskSpace::Reservation>* held);
  v1::CommandUpdate Validate(const v1::Command& command);
  void Send(const v1::CommandUpdate& update);

  const Options options_;
  const DiskTier* const disk_;
  DramTier* const dram_;
  InstanceSupervisor* const supervisor_;
  // One copy into DRAM plans and fills at a time (see DramTier::PlanRoom).
  gswarm::Mutex dram_mu_;
  const SendFn send_;
  Downloader downloader_;
  std::unique_ptr<DiskSpace> own_disk_space_;  // when options_.disk_space is null
  DiskSpace* const disk_space_;

  gswarm::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> commands_ ABSL_GUARDED_BY(mu_);
  // Last: destroyed (joined) first, while everything the tasks use still exists.
  std::unique_ptr<common::WorkerPool> pool_;
};

}  // namespace gswarm::client
