#include "host/router_placement.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace gswarm::host {

RouterPlacement::RouterPlacement(Registry* registry, InstanceTable* instances,
                                 Orchestrator* orchestrator)
    : registry_(registry), instances_(instances), orchestrator_(orchestrator) {}

std::vector<Router::Backend> RouterPlacement::ReadyBackends(const std::string& model) {
  std::vector<Router::Backend> backends;
  for (const v1::Instance& instance : instances_->Active(model)) {
    if (instance.state() != "ready") continue;
    backends.push_back({instance.id(), instance.model_name(), instance.endpoint()});
  }
  return backends;
}

bool RouterPlacement::IsKnownModel(const std::string& model) {
  return registry_->GetModel(model).ok();
}

absl::StatusOr<Router::Backend> RouterPlacement::Load(const std::string& model,
                                                      absl::Time deadline) {
  // The orchestrator places it: a node holding the model in DRAM before disk, a GPU with room.
  v1::ServeRequest request;
  request.set_model_name(model);
  ASSIGN_OR_RETURN(v1::Job job, orchestrator_->Serve(request));
  ASSIGN_OR_RETURN(v1::Job done, orchestrator_->WaitJob(job.id(), deadline));
  if (done.state() != "succeeded") {
    return absl::UnavailableError(absl::StrCat("loading \"", model, "\" on node ", done.node_id(),
                                               " ", done.state(), ": ", done.message()));
  }
  return Router::Backend{done.instance().id(), model, done.instance().endpoint()};
}

std::vector<nlohmann::json> RouterPlacement::ModelEntries() {
  std::vector<nlohmann::json> entries;
  for (const v1::Model& model : registry_->ListModels()) {
    uint64_t load_time_ms = model.load_time_ms();
    for (const v1::Instance& instance : instances_->Active(model.name())) {
      if (instance.state() == "ready") load_time_ms = instance.load_time_ms();
    }
    entries.push_back({{"id", model.name()},
                       {"object", "model"},
                       {"created", model.created_at().seconds()},
                       {"owned_by", "gswarm"},
                       {"size_mb", model.size_bytes() >> 20},
                       {"load_time_ms", load_time_ms}});
  }
  return entries;
}

}  // namespace gswarm::host
