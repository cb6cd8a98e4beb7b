#pragma once

// The router's view of the cluster: ready instances from the instance table, the catalog from
// the registry, and on-demand loads through the orchestrator (a serve job it waits for).
//
// Thread safety: thread-safe (the parts are).

#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "host/instance_table.h"
#include "host/orchestrator.h"
#include "host/registry.h"
#include "host/router.h"

namespace gswarm::host {

// Instances the router loads on demand are its to unload: after keep_alive_s idle, and, with
// max_loaded_models, the least recently used idle one when another model must load. An instance
// with requests in flight (the router's lease) is never stopped; one being stopped is no longer
// offered to the router. Instances started explicitly (gswarm serve) are the operator's.
class RouterPlacement final : public Router::Placement {
 public:
  struct Options {
    double keep_alive_s = 300;
    int max_loaded_models = 0;
  };

  // The parts must outlive the placement.
  RouterPlacement(Options options, Registry* registry, InstanceTable* instances,
                  Orchestrator* orchestrator);
  ~RouterPlacement() override;

  // The router whose leases decide what is idle. Starts the idle reaper.
  void Start(Router* router);
  // Stops the reaper (before the router goes).
  void Stop();

  std::vector<Router::Backend> ReadyBackends(const std::string& model) override;
  bool IsKnownModel(const std::string& model) override;
  absl::StatusOr<Router::Backend> Load(const std::string& model, absl::Time deadline) override;
  std::vector<nlohmann::json> ModelEntries() override;

 private:
  struct Loaded {
    std::string model;
    absl::Time loaded_at;
  };
  // Idle: no request in flight, unused for longer than `idle_for`. REQUIRES: mu_ held.
  bool IsIdle(const std::string& id, const Loaded& loaded, absl::Duration idle_for) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes an instance out of rotation and asks its node to stop it.
  void Unload(const std::string& id, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReapIdle();

  const Options options_;
  Registry* const registry_;
  InstanceTable* const instances_;
  Orchestrator* const orchestrator_;
  Router* router_ = nullptr;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Loaded> loaded_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> draining_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread reaper_;
};

}  // namespace gswarm::host
