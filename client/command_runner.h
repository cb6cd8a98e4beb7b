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
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/disk_tier.h"
#include "client/downloader.h"
#include "common/worker_pool.h"
#include "gswarm/v1/agent.pb.h"

namespace gswarm::client {

class CommandRunner {
 public:
  struct Options {
    HubOptions hub;
    int max_concurrent = 4;
    absl::Duration update_interval = absl::Milliseconds(250);
  };
  // Delivers a message to the host; may drop it while disconnected (the host re-sends the
  // command on reconnect, and a finished command answers its final update again).
  using SendFn = std::function<void(v1::AgentMessage)>;

  // `disk` must outlive the runner.
  CommandRunner(Options options, const DiskTier* disk, SendFn send);
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
  v1::CommandUpdate Discover(const v1::Command& command);
  v1::CommandUpdate Validate(const v1::Command& command);
  void Send(const v1::CommandUpdate& update);

  const Options options_;
  const DiskTier* const disk_;
  const SendFn send_;
  Downloader downloader_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> commands_ ABSL_GUARDED_BY(mu_);
  // Last: destroyed (joined) first, while everything the tasks use still exists.
  std::unique_ptr<common::WorkerPool> pool_;
};

}  // namespace gswarm::client
