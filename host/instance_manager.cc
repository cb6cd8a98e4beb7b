#include "host/instance_manager.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

// What an event and a log line call the state before an instance's first one.
constexpr char kNew[] = "new";

}  // namespace

InstanceManager::InstanceManager(EventBus* events) : events_(events) {}

void InstanceManager::AddListener(Listener listener) {
  gswarm::MutexLock lock(&listeners_mu_);
  listeners_.push_back(std::move(listener));
}

bool InstanceManager::Transition(Record& record, InstanceState to, const std::string& reason,
                                 bool forced, std::vector<Change>* changes) {
  const InstanceState from = record.state;
  const bool fresh = record.info.state().empty();
  const v1::Instance& info = record.info;
  const char* from_name = fresh ? kNew : InstanceStateName(from);
  if (!fresh && !IsAllowedTransition(from, to)) {
    if (!forced) {
      spdlog::warn("node={} model={} instance={}: refused {} -> {} ({})", info.node_id(),
                   info.model_name(), info.id(), from_name, InstanceStateName(to), reason);
      return false;
    }
    spdlog::warn(
        "node={} model={} instance={}: the agent reports {} -> {}, an edge the host does "
        "not expect; the agent's report stands",
        info.node_id(), info.model_name(), info.id(), from_name, InstanceStateName(to));
  }
  record.state = to;
  record.info.set_state(std::string(InstanceStateName(to)));
  record.info.set_state_reason(reason);
  // The reason's first line: an engine's failure carries its last log lines after it.
  const std::string why = reason.substr(0, reason.find('\n'));
  auto level = to == InstanceState::kFailed ? spdlog::level::warn : spdlog::level::info;
  spdlog::log(level, "node={} model={} instance={}: {} -> {}{}{}{}", info.node_id(),
              info.model_name(), info.id(), from_name, InstanceStateName(to),
              why.empty() ? "" : " (", why, why.empty() ? "" : ")");
  if (events_ != nullptr) {
    v1::Event event =
        MakeEvent("instance", "state",
                  absl::StrCat("instance ", info.id(), " of ", info.model_name(), " on ",
                               info.node_id(), ": ", from_name, " -> ", InstanceStateName(to),
                               why.empty() ? "" : absl::StrCat(" (", why, ")")));
    event.set_node_id(info.node_id());
    event.set_model_name(info.model_name());
    event.set_instance_id(info.id());
    event.set_from_state(std::string(from_name));
    event.set_to_state(std::string(InstanceStateName(to)));
    event.set_reason(why);
    events_->Publish(std::move(event));
  }
  changes->push_back({record.info, fresh ? to : from, to});
  if (!IsActive(to)) ended_.push_back(record.info.id());
  return true;
}

void InstanceManager::Notify(const std::vector<Change>& changes) {
  if (changes.empty()) return;
  std::vector<Listener> listeners;
  {
    gswarm::MutexLock lock(&listeners_mu_);
    listeners = listeners_;
  }
  for (const Change& change : changes) {
    for (const Listener& listener : listeners) listener(change.instance, change.from, change.to);
  }
}

void InstanceManager::PruneEnded() {
  while (ended_.size() > kKeepEnded) {
    auto it = records_.find(ended_.front());
    if (it != records_.end() && !IsActive(it->second.state)) records_.erase(it);
    ended_.pop_front();
  }
}

void InstanceManager::ApplyInventory(const std::string& node_id,
                                     const std::vector<v1::Instance>& instances) {
  std::vector<Change> changes;
  {
    gswarm::MutexLock lock(&mu_);
    std::vector<std::string> reported;
    for (const v1::Instance& instance : instances) reported.push_back(instance.id());
    // What the node no longer has ended while the host was not looking; planned ones wait for
    // their serve, which is sent again.
    for (auto it = records_.begin(); it != records_.end();) {
      Record& record = it->second;
      const bool listed =
          std::find(reported.begin(), reported.end(), record.info.id()) != reported.end();
      if (record.info.node_id() != node_id || listed || record.state == InstanceState::kPlanned) {
        ++it;
        continue;
      }
      if (IsActive(record.state)) {
        Transition(record, InstanceState::kStopped,
                   "gone from the agent's inventory when it reconnected", /*forced=*/true,
                   &changes);
      }
      records_.erase(it++);
    }
  }
  Notify(changes);
  for (const v1::Instance& instance : instances) ApplyReport(node_id, instance);
}

bool InstanceManager::ApplyReport(const std::string& node_id, v1::Instance report) {
  report.set_node_id(node_id);
  const std::optional<InstanceState> reported = ParseInstanceState(report.state());
  if (!reported.has_value()) {
    spdlog::warn("node={} instance={}: report with unknown state \"{}\" ignored", node_id,
                 report.id(), report.state());
    return false;
  }
  std::vector<Change> changes;
  {
    gswarm::MutexLock lock(&mu_);
    Record& record = records_[report.id()];
    const uint64_t held = record.info.generation();
    if (report.generation() != 0 && held != 0 && report.generation() < held) {
      ++stale_;
      spdlog::debug("node={} instance={}: stale report ({} at generation {} < {}) dropped", node_id,
                    report.id(), report.state(), report.generation(), held);
      return false;
    }
    InstanceState to = *reported;
    // The host took it out of rotation: it stays out while the engine still runs (awake; a
    // sleeping one is out of rotation anyway: the host drained it to put it to sleep).
    if (record.state == InstanceState::kDraining &&
        (to == InstanceState::kStarting || to == InstanceState::kReady)) {
      to = InstanceState::kDraining;
    }
    const bool fresh = record.info.state().empty();
    const std::string reason = report.state_reason();
    const std::string kept_state = record.info.state();
    const std::string kept_reason = record.info.state_reason();
    record.info = std::move(report);
    record.info.set_state(kept_state);
    record.info.set_state_reason(kept_reason);
    if (fresh || to != record.state) {
      Transition(record, to, reason, /*forced=*/true, &changes);
    } else if (to != InstanceState::kDraining) {
      record.info.set_state_reason(reason);
    }
    PruneEnded();
  }
  Notify(changes);
  return true;
}

void InstanceManager::Plan(v1::Instance instance, uint64_t reserved_bytes) {
  std::vector<Change> changes;
  {
    gswarm::MutexLock lock(&mu_);
    Record& record = records_[instance.id()];
    if (!record.info.state().empty() && IsActive(record.state)) return;  // already on its way
    const std::string kept_state = record.info.state();
    record.info = std::move(instance);
    record.info.set_state(kept_state);
    record.reserved_bytes = reserved_bytes;
    Transition(record, InstanceState::kPlanned,
               absl::StrCat("serve sent to ", record.info.node_id()), /*forced=*/false, &changes);
  }
  Notify(changes);
}

void InstanceManager::PlanEnded(const std::string& instance_id, const std::string& why) {
  std::vector<Change> changes;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = records_.find(instance_id);
    if (it == records_.end() || it->second.state != InstanceState::kPlanned) return;
    Transition(it->second, InstanceState::kFailed, why, /*forced=*/false, &changes);
    PruneEnded();
  }
  Notify(changes);
}

absl::Status InstanceManager::Drain(const std::string& instance_id, const std::string& why) {
  std::vector<Change> changes;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = records_.find(instance_id);
    if (it == records_.end()) {
      return absl::NotFoundError(absl::StrCat("instance ", instance_id, " is unknown"));
    }
    if (!Transition(it->second, InstanceState::kDraining, why, /*forced=*/false, &changes)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "instance ", instance_id, " is ", it->second.info.state(), ", not ready: cannot drain"));
    }
  }
  Notify(changes);
  return absl::OkStatus();
}

absl::Status InstanceManager::Undrain(const std::string& instance_id, const std::string& why) {
  std::vector<Change> changes;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = records_.find(instance_id);
    if (it == records_.end() || it->second.state != InstanceState::kDraining) {
      return absl::FailedPreconditionError(
          absl::StrCat("instance ", instance_id, " is not draining"));
    }
    Transition(it->second, InstanceState::kReady, why, /*forced=*/false, &changes);
  }
  Notify(changes);
  return absl::OkStatus();
}

std::vector<v1::Instance> InstanceManager::List(const std::string& model_name,
                                                const std::string& node_id) const {
  std::vector<v1::Instance> out;
  {
    gswarm::MutexLock lock(&mu_);
    for (const auto& [id, record] : records_) {
      if (!model_name.empty() && record.info.model_name() != model_name) continue;
      if (!node_id.empty() && record.info.node_id() != node_id) continue;
      out.push_back(record.info);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const v1::Instance& a, const v1::Instance& b) { return a.id() < b.id(); });
  return out;
}

std::optional<v1::Instance> InstanceManager::Get(const std::string& id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return std::nullopt;
  return it->second.info;
}

std::vector<v1::Instance> InstanceManager::Active(const std::string& model_name,
                                                  const std::string& node_id) const {
  std::vector<v1::Instance> active = List(model_name, node_id);
  std::erase_if(active, [](const v1::Instance& instance) { return !IsActive(StateOf(instance)); });
  return active;
}

std::optional<InstanceState> InstanceManager::State(const std::string& id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return std::nullopt;
  return it->second.state;
}

uint64_t InstanceManager::ReservedBytes(const std::string& id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = records_.find(id);
  return it == records_.end() ? 0 : it->second.reserved_bytes;
}

uint64_t InstanceManager::stale_reports() const {
  gswarm::MutexLock lock(&mu_);
  return stale_;
}

}  // namespace gswarm::host
