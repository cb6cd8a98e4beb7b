#pragma once

// What the agent link tells the rest of the host, beyond liveness (NodeRegistry): a node's
// inventory on (re)connect and the progress of the commands it runs.

#include <string>
#include <vector>

#include "gswarm/v1/agent.pb.h"

namespace gswarm::host {

// Called on gRPC's callback threads: implementations must queue blocking work, not do it.
class AgentListener {
 public:
  virtual ~AgentListener() = default;
  // Before the node is marked online: from here until its Hello inventory is applied, what it
  // runs is unknown, and whatever plans on it must wait. Followed by exactly one of
  // OnAgentConnected (accepted) or OnAgentRefused.
  virtual void OnAgentConnecting(const std::string& node_id) = 0;
  virtual void OnAgentRefused(const std::string& node_id) = 0;
  virtual void OnAgentConnected(const v1::Hello& hello) = 0;
  virtual void OnCommandUpdate(const std::string& node_id, const v1::CommandUpdate& update) = 0;
  // Instances whose state changed (sent with a heartbeat).
  virtual void OnInstancesChanged(const std::string& node_id,
                                  const std::vector<v1::Instance>& instances) = 0;
};

}  // namespace gswarm::host
