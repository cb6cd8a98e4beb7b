#pragma once

// The host's view of every inference instance, as the agents report them: in their inventory on
// connect (which replaces what the host knew of that node) and on every state change.
//
// Thread safety: thread-safe.

#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::host {

class InstanceTable {
 public:
  // The node's complete list, from its Hello.
  void ReplaceNode(const std::string& node_id, const std::vector<v1::Instance>& instances);
  // One instance's new state. Stopped ones are kept a while for `gswarm ps -a` style listings.
  void Update(const v1::Instance& instance);

  std::vector<v1::Instance> List(const std::string& model_name = "",
                                 const std::string& node_id = "") const;
  std::optional<v1::Instance> Get(const std::string& id) const;
  // Instances that are starting or ready (they hold the model's files open).
  std::vector<v1::Instance> Active(const std::string& model_name,
                                   const std::string& node_id = "") const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, v1::Instance> instances_ ABSL_GUARDED_BY(mu_);
};

bool IsActiveInstanceState(absl::string_view state);

}  // namespace gswarm::host
