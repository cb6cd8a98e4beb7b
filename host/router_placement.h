#pragma once

// The router's view of the cluster: ready instances from the instance manager, the catalog from
// the registry, and on-demand loads through the orchestrator (a serve job it waits for).
//
// Instances the router loads (on demand, or at start-up for host.preload) are its to manage; the
// ones started explicitly (gswarm serve) are the operator's and are never stopped here:
// - Idle unload: an instance unused for its keep-alive (host.keep_alive_s, or the last request's
//   own "keep_alive") is stopped.
// - max_loaded_models: when as many are loaded, the least recently used idle one makes room.
// - GPU room: when the GPU a load is placed on is short, idle instances on it leave, least
//   recently used first, until the model fits; then the load waits for the node to report the
//   memory freed.
// An instance with requests in flight holds a lease (Router::TryRetire) and is never stopped
// under them; preloaded instances are kept loaded (neither unloaded when idle nor evicted). A
// model whose instance leaves a GPU is demoted rather than forgotten: when it was served from
// disk and the node's DRAM tier has room, it is copied there, so the next load starts fast.
//
// The demotion ladder (router_sleep.cc): an instance evicted for room (max_loaded_models, GPU
// room) whose engine can sleep is put to sleep instead of stopped: level 2 when the model's files
// sit in the node's DRAM tier (the wake reloads from there), else level 1 when the node's free RAM
// holds the weights, else it stops. A sleeping instance counts neither against max_loaded_models
// nor for its GPU memory; the next request for its model wakes it (a fraction of a cold start).
// It is stopped when idle past its keep-alive, when GPU room cannot be made otherwise, or when
// its wake fails; one whose sleep failed is stopped instead.
//
// Thread safety: thread-safe (the parts are).

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "common/mutex.h"
#include "host/instance_manager.h"
#include "host/node_registry.h"
#include "host/orchestrator.h"
#include "host/registry.h"
#include "host/router.h"

namespace gswarm::host {

class HostMetrics;

class RouterPlacement final : public Router::Placement {
 public:
  struct Options {
    // Idle time after which an instance the router loaded is stopped (negative: never).
    double keep_alive_s = 300;
    // Instances the router loaded, at most (0: no limit).
    int max_loaded_models = 0;
    // Models loaded at start-up (as soon as a node holding them is online) and kept loaded.
    std::vector<std::string> preload;
    // After an eviction, how long a load waits for the node to report the GPU memory freed.
    absl::Duration release_wait = absl::Seconds(30);
    // How soon the policy looks again at an instance whose unload a request raced.
    absl::Duration tick = absl::Milliseconds(500);
    // A new instance no request has used yet is not evicted for this long: the requests that
    // asked for it are on their way.
    absl::Duration grace = absl::Seconds(30);
    // Told of loads, evictions and demotions (GET /metrics); may be null.
    HostMetrics* metrics = nullptr;
  };

  // The parts must outlive the placement; `events` may be null.
  RouterPlacement(Options options, Registry* registry, NodeRegistry* nodes,
                  InstanceManager* instances, Orchestrator* orchestrator, EventBus* events);
  ~RouterPlacement() override;

  // The router whose leases decide what is idle. Starts the policy thread, which sleeps until
  // the next keep-alive deadline or preload retry, or until an instance changes state.
  void Start(Router* router);
  // Stops the reaper (before the router goes) and makes loads waiting for room give up.
  void Stop();

  std::vector<Router::Backend> ReadyBackends(const std::string& model) override;
  bool IsKnownModel(const std::string& model) override;
  // Ready in the instance manager (draining ones are not); takes only the manager's lock.
  bool Routable(const std::string& instance_id) override;
  absl::StatusOr<Router::Backend> Load(const std::string& model, absl::Time deadline) override;
  std::vector<nlohmann::json> ModelEntries() override;
  void KeepAlive(const std::string& instance_id, std::optional<absl::Duration> keep_alive) override;

  // Fills what the pool knows of `instance`: managed_by, unload_at, and from the router its
  // requests in flight and last use.
  void Describe(v1::Instance* instance) const;

  // What a load needing `needed` bytes on `room` would evict there now: the instances, in the
  // order the router takes them, and whether they free enough (`gswarm plan`).
  struct Eviction {
    std::vector<std::string> instance_ids;
    bool enough = false;
  };
  Eviction EvictionFor(const DeviceRoom& room, uint64_t needed) const;
  // Instances the router holds awake (what host.max_loaded_models counts), and that limit.
  int AwakeModels() const;
  int max_loaded_models() const { return options_.max_loaded_models; }

 private:
  struct Loaded {
    std::string model;
    absl::Time loaded_at;
    absl::Duration keep_alive;  // from host.keep_alive_s, or the last request's own
    bool pinned = false;        // host.preload: kept loaded
    // Not unloaded before this (a stop that could not be sent is retried later, not at once).
    absl::Time not_before = absl::InfinitePast();
    bool asleep = false;  // its engine sleeps: it holds no GPU room and no max_loaded_models slot
  };
  // An instance taken out of the pool, to be put to sleep (sleep_level > 0) or stopped outside
  // the lock.
  struct Leaving {
    v1::Instance instance;
    Loaded loaded;
    bool may_sleep = false;  // evicted for room (not idle), and not after a failed sleep
  };
  // An instance that can leave now, and what it frees.
  struct Candidate {
    std::string id;
    absl::Time last_used;
    uint64_t bytes = 0;
  };
  struct PreloadState {
    absl::Time retry_at = absl::InfinitePast();
    int attempts = 0;
  };
  // What MakeRoomOnDevice did.
  struct Room {
    std::string node_id;  // where room is being made; empty: nowhere can it be made
    std::string gpu;
    std::vector<v1::Job> stops;  // to wait for
    bool raced = false;          // a request took a chosen instance first: plan again
  };

  absl::Duration DefaultKeepAlive() const;
  // The pool's entry for an instance the router or preload loaded (managed_by), from now.
  Loaded Joining(const v1::Instance& instance) const;
  bool IsPreloaded(const std::string& model) const;
  // When the instance was last used (or loaded, if later).
  absl::Time LastUse(const std::string& id, const Loaded& loaded) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first of `candidates` that free enough for `needed` bytes on `room`; `freed`: theirs.
  static std::vector<Candidate> Enough(const std::vector<Candidate>& candidates,
                                       const DeviceRoom& room, uint64_t needed, uint64_t* freed);
  // Whether the instance may leave to make room now: no request in flight, not kept, and not a
  // new one whose first requests have yet to reach it (options_.grace).
  bool Evictable(const std::string& id, const Loaded& loaded, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the instance out of the pool if no request used it after `idle_since` (atomically
  // with leasing: Router::TryRetire); nullopt if a request got there first. `why` is for people,
  // `reason` a metric label (keep_alive, max_loaded_models, gpu_room).
  // Where the router reaches the instance from this host (NodeEndpoint).
  std::string Reachable(const v1::Instance& instance) const;
  std::optional<Leaving> Retire(const std::string& id, absl::Time idle_since,
                                const std::string& why, const char* reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the node to put a retired instance to sleep (Leaving::sleep_level) or to stop it, and
  // demotes its model to DRAM when there is room. If neither can be sent, the instance goes back
  // into the pool.
  std::optional<v1::Job> StopRetired(const Leaving& leaving) ABSL_LOCKS_EXCLUDED(mu_);
  void Demote(const v1::Instance& instance) ABSL_LOCKS_EXCLUDED(mu_);
  // The ladder's rung for an instance leaving for room (router_sleep.cc): 2, 1, or 0 (stop).
  int SleepLevelFor(const v1::Instance& instance) const ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes a sleeping instance of `model` (making GPU room on its GPU first when short) and
  // returns it; nullopt when there is none, or when its wake failed (it is stopped then, and the
  // caller loads the model cold).
  std::optional<Router::Backend> WakeSleeping(const std::string& model, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Instances the pool has awake (not asleep): what max_loaded_models counts.
  int AwakeCount() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // max_loaded_models: unloads the least recently used evictable instances until there is room
  // for one more, and counts the load. RESOURCE_EXHAUSTED when none can go.
  absl::Status MakeRoomInCount(const std::string& model);
  // Room on a device (a GPU, or the CPU's RAM budget) of the first of `plans` (nodes in
  // preference order) where idle instances can free enough: they leave least recently used
  // first, only as many as `needed` requires, on the plan's device (or with `any_gpu`, the GPU
  // where the least has to leave).
  Room MakeRoomOnDevice(const std::string& model, const std::vector<ServePlan>& plans,
                        bool any_gpu);
  // The instances on `room` that could leave now, in the order they would: ready ones the router
  // loaded that may go (they go to sleep where they can), least recently used first; then
  // sleeping ones (they stop), when sleeping is not enough.
  std::vector<Candidate> EvictionOrder(const DeviceRoom& room, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An instance changed state (InstanceManager's listener): ended ones leave the pool, and ready
  // ones the router or preload loaded join it, also after a host restart (the agents report
  // managed_by).
  // Called without mu_ for ready and ended instances; for the rest (which the pool's own
  // Drain under mu_ causes) it returns at once.
  void OnInstance(const v1::Instance& instance, InstanceState to);
  void RunPolicy();
  // Unloads instances idle past their keep-alive, and those whose sleep failed; returns when the
  // next one is due.
  absl::Time ReapIdle();
  // Starts loads of preloaded models that have no instance; returns when the next retry is due.
  absl::Time KeepPreloaded();
  // A "router" event.
  void Publish(const std::string& action, const std::string& model, const v1::Instance* instance,
               const std::string& message) const;

  const Options options_;
  Registry* const registry_;
  NodeRegistry* const nodes_;
  InstanceManager* const instances_;
  Orchestrator* const orchestrator_;
  EventBus* const events_;
  Router* router_ = nullptr;  // set once by Start, before the policy thread and any input

  mutable gswarm::Mutex mu_;
  absl::flat_hash_map<std::string, Loaded> loaded_ ABSL_GUARDED_BY(mu_);
  int loading_ ABSL_GUARDED_BY(mu_) = 0;  // loads between MakeRoomInCount and their end
  // Something changed that the policy should look at before its next deadline.
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, PreloadState> preload_ ABSL_GUARDED_BY(mu_);
  // Demotions under way, "model@node" -> the copy job.
  absl::flat_hash_map<std::string, std::string> demoting_ ABSL_GUARDED_BY(mu_);
  // Sleeps sent and not yet reported; instances whose sleep failed, which the policy stops (they
  // were evicted for room).
  absl::flat_hash_set<std::string> sleep_sent_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> sleep_failed_ ABSL_GUARDED_BY(mu_);
  gswarm::Notification stop_;
  std::thread reaper_;
};

}  // namespace gswarm::host
