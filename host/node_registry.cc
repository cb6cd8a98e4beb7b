#include "host/node_registry.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/auth.h"
#include "common/status.h"
#include "common/units.h"
#include "host/event_bus.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

std::string NewSessionId() { return common::GenerateToken().substr(0, 16); }

}  // namespace

absl::Status ValidateNodeId(absl::string_view node_id) {
  auto allowed = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  };
  if (node_id.empty() || node_id.size() > 128 ||
      !absl::ascii_isalnum(static_cast<unsigned char>(node_id.front())) ||
      !std::all_of(node_id.begin(), node_id.end(), allowed) || absl::StrContains(node_id, "..")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node id \"", node_id,
        "\" is not valid: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or "
        "digit (set client.node_id or --node-id)"));
  }
  return absl::OkStatus();
}

NodeRegistry::NodeRegistry(Options options) : options_(std::move(options)) {}

absl::Duration NodeRegistry::TimeoutFor(const Node& node) const {
  absl::Duration interval = absl::Milliseconds(node.info.heartbeat_interval_ms());
  return std::max(options_.min_timeout, interval * options_.missed_heartbeats);
}

void NodeRegistry::SetState(Node& node, absl::string_view state, absl::string_view reason) {
  const std::string old_state = node.info.state();
  node.info.set_state(std::string(state));
  node.info.set_state_reason(std::string(reason));
  if (old_state == state) {
    spdlog::info("node={}: {} ({})", node.info.node_id(), state, reason);
  } else {
    spdlog::info("node={}: {} -> {} ({})", node.info.node_id(),
                 old_state.empty() ? "new" : old_state, state, reason);
  }
  if (options_.events != nullptr) {
    v1::Event event = MakeEvent(
        "node", std::string(state),
        absl::StrCat("node ", node.info.node_id(), ": ", old_state.empty() ? "new" : old_state,
                     " -> ", state, " (", reason, ")"));
    event.set_node_id(node.info.node_id());
    event.set_from_state(old_state.empty() ? "new" : old_state);
    event.set_to_state(std::string(state));
    event.set_reason(std::string(reason));
    options_.events->Publish(std::move(event));
  }
}

absl::StatusOr<std::string> NodeRegistry::Connect(const v1::Hello& hello, std::string peer,
                                                  std::shared_ptr<Session> session) {
  if (absl::Status valid = ValidateNodeId(hello.node_id()); !valid.ok()) return valid;
  std::shared_ptr<Session> replaced;
  std::string session_id = NewSessionId();
  {
    gswarm::MutexLock lock(&mu_);
    Node& node = nodes_[hello.node_id()];
    if (node.session != nullptr) {
      replaced = std::move(node.session);
      spdlog::warn("node={}: a new session from {} replaces session {} from {}", hello.node_id(),
                   peer, node.session_id, node.info.peer_address());
    }
    const absl::Time now = options_.now();
    v1::NodeInfo& info = node.info;
    info.set_node_id(hello.node_id());
    info.set_hostname(hello.hostname());
    info.set_version(hello.version());
    info.set_cpu_cores(hello.cpu_cores());
    info.set_dram_total_bytes(hello.dram_total_bytes());
    *info.mutable_gpus() = hello.gpus();
    *info.mutable_tiers() = hello.tiers();
    *info.mutable_memory() = hello.memory();
    *info.mutable_engine_memory_factors() = hello.engine_memory_factors();
    info.set_heartbeat_interval_ms(hello.heartbeat_interval_ms());
    info.set_data_port(hello.data_port());
    info.set_session_id(session_id);
    info.set_peer_address(peer);
    *info.mutable_connected_at() = common::ToTimestamp(now);
    *info.mutable_last_heartbeat_at() = common::ToTimestamp(now);
    node.session_id = session_id;
    node.session = std::move(session);
    node.last_heartbeat = now;
    SetState(node, "online", absl::StrCat("connected from ", peer, ", session ", session_id));
  }
  if (replaced != nullptr) {
    replaced->Close(absl::AbortedError(
        absl::StrCat("session replaced: another agent connected as node \"", hello.node_id(),
                     "\" from ", peer, " (is a second agent running with this node id?)")));
  }
  return session_id;
}

bool NodeRegistry::Heartbeat(const std::string& node_id, const std::string& session_id,
                             const v1::Heartbeat& heartbeat) {
  gswarm::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end() || it->second.session_id != session_id) return false;
  Node& node = it->second;
  const absl::Time now = options_.now();
  if (node.info.state() != "online") SetState(node, "online", "heartbeats resumed");
  node.last_heartbeat = now;
  *node.info.mutable_last_heartbeat_at() = common::ToTimestamp(now);
  // A heartbeat sent early to report instance changes may carry no memory figures.
  if (heartbeat.has_memory()) {
    *node.info.mutable_memory() = heartbeat.memory();
    *node.info.mutable_gpus() = heartbeat.memory().gpus();
  }
  return true;
}

void NodeRegistry::Disconnect(const std::string& node_id, const std::string& session_id,
                              absl::string_view reason) {
  gswarm::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end() || it->second.session_id != session_id) return;
  it->second.session.reset();
  if (it->second.info.state() != "offline") SetState(it->second, "offline", reason);
}

bool NodeRegistry::Send(const std::string& node_id, v1::HostMessage message) {
  std::shared_ptr<Session> session;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = nodes_.find(node_id);
    if (it == nodes_.end() || it->second.session == nullptr) return false;
    session = it->second.session;
  }
  session->Send(std::move(message));
  return true;
}

int NodeRegistry::SweepStale() {
  gswarm::MutexLock lock(&mu_);
  const absl::Time now = options_.now();
  int changed = 0;
  for (auto& [id, node] : nodes_) {
    if (node.info.state() != "online") continue;
    const absl::Duration silent = now - node.last_heartbeat;
    if (silent <= TimeoutFor(node)) continue;
    SetState(node, "offline",
             absl::StrFormat("missed %d heartbeats: last one %.1f s ago",
                             options_.missed_heartbeats, absl::ToDoubleSeconds(silent)));
    ++changed;
  }
  return changed;
}

std::vector<v1::NodeInfo> NodeRegistry::List() const {
  gswarm::MutexLock lock(&mu_);
  std::vector<v1::NodeInfo> out;
  out.reserve(nodes_.size());
  for (const auto& [id, node] : nodes_) out.push_back(node.info);
  std::sort(out.begin(), out.end(),
            [](const v1::NodeInfo& a, const v1::NodeInfo& b) { return a.node_id() < b.node_id(); });
  return out;
}

std::optional<v1::NodeInfo> NodeRegistry::Get(const std::string& node_id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second.info;
}

std::optional<v1::NodeInfo> NodeRegistry::GetOnline(const std::string& node_id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end() || it->second.info.state() != "online") return std::nullopt;
  return it->second.info;
}

void NodeRegistry::CloseAll(const absl::Status& reason) {
  std::vector<std::shared_ptr<Session>> sessions;
  {
    gswarm::MutexLock lock(&mu_);
    for (auto& [id, node] : nodes_) {
      if (node.session != nullptr) sessions.push_back(node.session);
    }
  }
  for (auto& session : sessions) session->Close(reason);
}

}  // namespace gswarm::host
