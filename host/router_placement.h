#pragma once

// The router's view of the cluster: ready instances from the instance table, the catalog from
// the registry, and on-demand loads through the orchestrator (a serve job it waits for).
//
// Thread safety: thread-safe (the parts are).

#include <string>
#include <vector>

#include "host/instance_table.h"
#include "host/orchestrator.h"
#include "host/registry.h"
#include "host/router.h"

namespace gswarm::host {

class RouterPlacement final : public Router::Placement {
 public:
  // The parts must outlive the placement.
  RouterPlacement(Registry* registry, InstanceTable* instances, Orchestrator* orchestrator);

  std::vector<Router::Backend> ReadyBackends(const std::string& model) override;
  bool IsKnownModel(const std::string& model) override;
  absl::StatusOr<Router::Backend> Load(const std::string& model, absl::Time deadline) override;
  std::vector<nlohmann::json> ModelEntries() override;

 private:
  Registry* const registry_;
  InstanceTable* const instances_;
  Orchestrator* const orchestrator_;
};

}  // namespace gswarm::host
