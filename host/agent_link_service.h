#pragma once

// gswarm.v1.AgentLink on gRPC's callback API: one reactor per agent stream, no thread per agent.
// The reactor translates messages to NodeRegistry calls; all cluster logic lives there.

#include <optional>
#include <string>
#include <vector>

#include "gswarm/v1/agent.grpc.pb.h"
#include "host/agent_listener.h"
#include "host/node_registry.h"

namespace gswarm::host {

class AgentLinkService final : public v1::AgentLink::CallbackService {
 public:
  struct Options {
    std::string auth_token;  // "" : no auth
    std::string host_version;
    std::vector<v1::TierInfo> default_tiers;  // sent in Welcome
    std::optional<bool> cleanup_on_shutdown;  // sent in Welcome when set
    AgentListener* listener = nullptr;        // inventories and command updates
  };

  // `registry` must outlive the service and every stream it served.
  AgentLinkService(Options options, NodeRegistry* registry);

  grpc::ServerBidiReactor<v1::AgentMessage, v1::HostMessage>* Connect(
      grpc::CallbackServerContext* context) override;

 private:
  const Options options_;
  NodeRegistry* const registry_;
};

}  // namespace gswarm::host
