#pragma once

// The agent's inference instances: engine processes started on command, each in its own process
// group with output to its own log, watched until ready, restarted when they crash, stopped as a
// whole group, and re-adopted by an agent that restarts without having stopped them.
//
// An instance goes starting -> ready -> stopping -> stopped, or ends "failed" (not ready within
// ready_timeout, or crashed more than max_restarts times); a crash restarts it in "starting"
// with restarts + 1. Every change goes to Options::on_change, in order.
//
// On disk: <state_dir>/<id>.json, one record per live instance (pid, pgid, process start time,
// port, the spec), written atomically at every (re)start and at ready, removed when the instance
// ends; <log_dir>/<id>.log, the engine's stdout and stderr, kept under max_log_bytes (the older
// part moves to <id>.log.1).
//
// Threads: one watcher thread per live instance (health polls, liveness, restarts). Stop() and
// the destructor join it, so on_change must not call Stop() or StopAll().
// Thread safety: thread-safe.

#include <sys/types.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/process.h"
#include "common/backoff.h"
#include "common/engine_spec.h"
#include "common/mutex.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

struct InstanceSpec {
  // "inst-<hex>", chosen by the caller; letters, digits, '.', '_' and '-' (it names files).
  std::string id;
  std::string model_name;
  // The engine's name, for reports.
  std::string engine;
  // The rendered command; argv[0] a path or a name on PATH.
  std::vector<std::string> argv;
  // Extra environment, on top of the agent's.
  std::map<std::string, std::string> env;
  // "gpuN", "gpuN,gpuM" or "cpu": CUDA_VISIBLE_DEVICES=N / N,M / "" (no GPU). "" leaves
  // CUDA_VISIBLE_DEVICES as the agent has it.
  std::string gpu_device;
  // Where the engine listens (argv is rendered with it). A wildcard host (0.0.0.0, ::) is
  // polled on 127.0.0.1; the endpoint keeps the host as given.
  std::string host = "127.0.0.1";
  int port = 0;
  std::string health_path = "/health";
  absl::Duration ready_timeout = absl::Minutes(10);
  // "dram" | "disk", for reports.
  std::string source_tier;
  // Who stops it (Instance.managed_by), for reports.
  std::string managed_by;
  // Run on stop before the group is signalled, when the process is found gone at adoption, and
  // before a restart (a container engine's `docker stop gswarm-<id>`); empty: none.
  std::vector<std::string> stop_argv;
  // The engine's sleep calls, rendered: sleep[0] for level 1, sleep[1] for level 2; empty when it
  // cannot sleep. Then its wake calls, and the reload calls after a level-2 sleep.
  std::vector<std::vector<common::EngineCall>> sleep;
  std::vector<common::EngineCall> wake;
  std::vector<common::EngineCall> reload;
};

// Where the agent reaches an engine that listens on `host`: 0.0.0.0 and :: accept connections
// on loopback, so those become 127.0.0.1 and [::1].
std::string LoopbackFor(const std::string& host);

class InstanceSupervisor {
 public:
  struct Options {
    // One <id>.json record per live instance, for re-adoption (~/.cache/gswarm/instances).
    std::string state_dir;
    // <id>.log per instance (~/.cache/gswarm/logs).
    std::string log_dir;
    // A log larger than this moves to <id>.log.1 (checked every health_interval).
    uint64_t max_log_bytes = 64 << 20;
    // Crashes restarted before the instance is "failed"; counted over the instance's life.
    int max_restarts = 3;
    // Delay before each restart.
    common::Backoff::Options restart_backoff = {.initial = absl::Seconds(1),
                                                .max = absl::Seconds(30)};
    // Stop: SIGTERM to the group, SIGKILL after this.
    absl::Duration stop_grace = absl::Seconds(10);
    // Health polls while starting, liveness checks after.
    absl::Duration health_interval = absl::Milliseconds(200);
    // Every state change (starting, ready, stopping, stopped, failed, a restart), in order,
    // called from a supervisor or caller thread with no supervisor lock held. It may call
    // Get/List/Start; not Stop/StopAll (see above).
    std::function<void(const v1::Instance&)> on_change;
  };

  explicit InstanceSupervisor(Options options);
  // Stops watching (joins the watchers); does NOT stop the instances (see StopAll) and keeps
  // their records, so that the next agent can Adopt them.
  ~InstanceSupervisor();
  InstanceSupervisor(const InstanceSupervisor&) = delete;
  InstanceSupervisor& operator=(const InstanceSupervisor&) = delete;

  // Starts the engine and returns the instance in "starting"; readiness is watched in the
  // background (health polled until HTTP 200; after ready_timeout: "failed" with the last log
  // lines in state_reason, and the group killed). Before anything starts: INVALID_ARGUMENT for
  // a bad spec, ALREADY_EXISTS for an id still live, FAILED_PRECONDITION "port 8080 is in use on
  // this node (pick another or omit it)", NOT_FOUND for a program that cannot be found.
  absl::StatusOr<v1::Instance> Start(const InstanceSpec& spec);

  // SIGTERM to the process group, SIGKILL after stop_grace (at once when `force`); returns once
  // no process of the group is left, in "stopped". An instance that already ended is returned
  // as it is. NOT_FOUND for an unknown id.
  absl::StatusOr<v1::Instance> Stop(const std::string& id, bool force);
  // Stops every live instance, in parallel (cleanup_on_shutdown).
  void StopAll();

  // Puts a ready instance to sleep at `level` (1 or 2): its engine's sleep calls in order, each
  // answered 2xx, then "sleeping" with Instance.sleep_level. The engine keeps running and
  // answering its health path. FAILED_PRECONDITION when the instance is not ready or its engine
  // cannot sleep at that level; a call that fails leaves the instance "ready" and says which call
  // answered what. The caller checks that GPU memory was freed (the supervisor cannot see it).
  // (instance_sleep.cc)
  absl::StatusOr<v1::Instance> Sleep(const std::string& id, int level);
  // Wakes a sleeping instance: the wake calls (then reload after level 2), and the health path
  // until 200 within its ready_timeout; "ready" again, with the wake's duration in the reason.
  // FAILED_PRECONDITION when it is not sleeping; a failed call leaves it "sleeping".
  absl::StatusOr<v1::Instance> Wake(const std::string& id);

  // Every instance this supervisor knows, ended ones included, by id.
  std::vector<v1::Instance> List() const;
  std::optional<v1::Instance> Get(const std::string& id) const;
  // Records the GPU memory the instance's process group holds (attributed by the agent from
  // NVML). Returns the instance when the figure changed, nullopt otherwise.
  std::optional<v1::Instance> SetGpuMemory(const std::string& id, uint64_t bytes);
  // Records the RAM the instance's process group holds (its RSS). A resident set moves a little
  // all the time: the instance is returned (to be reported) only when the figure moved by more
  // than 5% or 16 MiB since the last one recorded, or from or to 0.
  std::optional<v1::Instance> SetRamMemory(const std::string& id, uint64_t bytes);

  // For an agent that starts after one that did not clean up: reads the records in state_dir.
  // A live leader (same pid and start time) whose health path answers 200 is adopted "ready";
  // one alive but not answering (still loading) is adopted "starting" and given what is left of
  // its ready_timeout. A record whose process is gone is removed (and any orphans of its group
  // killed), and an engine of this node that no record owns is killed. Returns the adopted
  // instances; ids already known here are skipped.
  std::vector<v1::Instance> Adopt();
  // The variable each engine gets naming its record (<state_dir>/<id>.json): how Adopt finds an
  // engine whose agent died before recording it.
  static constexpr absl::string_view kOwnerVariable = "GSWARM_INSTANCE_RECORD";

  // A free TCP port (bind to port 0); the caller renders argv with it.
  static absl::StatusOr<int> FreePort();
  // Whether something listens on `port` on this node.
  static bool PortInUse(int port);
  // <log_dir>/<id>.log
  std::string LogPath(const std::string& id) const;

 private:
  // One instance. Guarded by mu_, except `spec` (read-only once shared).
  struct Entry {
    InstanceSpec spec;
    v1::Instance info;
    // The current process; a restart replaces it.
    std::shared_ptr<ProcessGroup> proc;
    absl::Time attempt_start;
    absl::Time ready_deadline;
    // The watcher must return at once: Stop() owns the instance now, or the supervisor is going.
    bool quit = false;
    // A Stop() is under way; `done` once the instance has ended.
    bool stopping = false;
    bool done = false;
    // A Sleep() or Wake() is under way (one at a time).
    bool switching = false;
    std::thread watcher;
  };
  enum class Outcome { kReady, kExited, kNotReady, kQuit };

  // An entry for `spec` with the Instance fields the spec determines filled in.
  static std::shared_ptr<Entry> NewEntry(const InstanceSpec& spec);

  // Watcher threads (instance_watcher.cc).
  // The body: readiness, then liveness, then restarts, until the instance
  // ends or quit is set.
  void Watch(std::shared_ptr<Entry> e, bool ready);
  Outcome AwaitReady(Entry& e, ProcessGroup& proc, std::string* last_answer);
  Outcome AwaitExit(Entry& e, ProcessGroup& proc);
  // After a crash: "failed" past max_restarts, else a backoff and a new process. Returns whether
  // a new process runs.
  bool Restart(Entry& e, common::Backoff& backoff, const std::string& exit);
  // Runs the spec's stop command (if any) to its end, for at most stop_grace, its output going
  // to the instance's log; `why` says when, in the log.
  void RunStopCommand(const InstanceSpec& spec, const char* why);
  // Sleeps up to `d`; true when the watcher must quit.
  bool SleepOrQuit(Entry& e, absl::Duration d);
  // Sleep and wake (instance_sleep.cc): the instance in `expected` state with no other switch
  // under way and passing `check` (its spec), marked switching; or why not.
  absl::StatusOr<std::shared_ptr<Entry>> BeginSwitch(
      const std::string& id, const char* expected, const char* verb,
      const std::function<absl::Status(const InstanceSpec&)>& check = nullptr);
  // The rest: instance_supervisor.cc.
  // Starts the spec's process, appending a header line to the log.
  absl::StatusOr<std::shared_ptr<ProcessGroup>> Launch(const InstanceSpec& spec, int attempt);
  // Whether GET <health url> answers 200 within `timeout`; otherwise "GET <url>: <why not>" in
  // `answer`.
  static bool Healthy(const InstanceSpec& spec, absl::Duration timeout, std::string* answer);
  // Makes `proc`, started at `start`, the entry's current process.
  void SetProcess(Entry& e, std::shared_ptr<ProcessGroup> proc, absl::Time start)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The one place states change: logs, stamps and queues the change for on_change.
  void Transition(Entry& e, const std::string& state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls on_change for queued changes unless another thread already is (which then does).
  void DeliverEvents() ABSL_LOCKS_EXCLUDED(mu_);

  // <state_dir>/<id>.json (see instance_record.h): written at every start and at ready by one
  // thread at a time (Start before the watcher exists, then the watcher), removed when the
  // instance ends.
  void WriteRecord(Entry& e) ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveRecord(const std::string& id) const;
  std::string RecordPath(const std::string& id) const;
  // Kills the process groups of engines this node started (their environment names a record of
  // state_dir) that no entry owns: started by an agent that died before recording them.
  void KillUnrecordedEngines();
  std::optional<v1::Instance> AdoptRecord(const std::string& path);

  const Options options_;
  // Serializes Start, so that the port check and the process start are one step.
  gswarm::Mutex start_mu_;
  mutable gswarm::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::Instance> events_ ABSL_GUARDED_BY(mu_);
  bool delivering_ ABSL_GUARDED_BY(mu_) = false;
  // The last generation stamped on a change (v1::Instance.generation): microseconds since the
  // epoch or one more than the last, so it keeps growing across agent restarts.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Watchers of replaced entries, and one that asked to stop itself: joined by the destructor.
  std::vector<std::thread> finished_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gswarm::client
