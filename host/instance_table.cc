#include "host/instance_table.h"

#include <algorithm>

namespace gswarm::host {

bool IsActiveInstanceState(absl::string_view state) {
  return state == "starting" || state == "ready" || state == "stopping";
}

void InstanceTable::ReplaceNode(const std::string& node_id,
                                const std::vector<v1::Instance>& instances) {
  absl::MutexLock lock(&mu_);
  absl::erase_if(instances_, [&](const auto& entry) { return entry.second.node_id() == node_id; });
  for (v1::Instance instance : instances) {
    instance.set_node_id(node_id);
    instances_[instance.id()] = std::move(instance);
  }
}

void InstanceTable::Update(const v1::Instance& instance) {
  absl::MutexLock lock(&mu_);
  instances_[instance.id()] = instance;
}

std::vector<v1::Instance> InstanceTable::List(const std::string& model_name,
                                              const std::string& node_id) const {
  std::vector<v1::Instance> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, instance] : instances_) {
      if (!model_name.empty() && instance.model_name() != model_name) continue;
      if (!node_id.empty() && instance.node_id() != node_id) continue;
      out.push_back(instance);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const v1::Instance& a, const v1::Instance& b) { return a.id() < b.id(); });
  return out;
}

std::optional<v1::Instance> InstanceTable::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = instances_.find(id);
  if (it == instances_.end()) return std::nullopt;
  return it->second;
}

std::vector<v1::Instance> InstanceTable::Active(const std::string& model_name,
                                                const std::string& node_id) const {
  std::vector<v1::Instance> active = List(model_name, node_id);
  std::erase_if(active, [](const v1::Instance& i) { return !IsActiveInstanceState(i.state()); });
  return active;
}

}  // namespace gswarm::host
