#include "host/instance_state.h"

#include <array>
#include <utility>

namespace gswarm::host {
namespace {

constexpr std::array<std::pair<InstanceState, const char*>, 8> kNames = {{
    {InstanceState::kPlanned, "planned"},
    {InstanceState::kStarting, "starting"},
    {InstanceState::kReady, "ready"},
    {InstanceState::kSleeping, "sleeping"},
    {InstanceState::kDraining, "draining"},
    {InstanceState::kStopping, "stopping"},
    {InstanceState::kStopped, "stopped"},
    {InstanceState::kFailed, "failed"},
}};

}  // namespace

const char* InstanceStateName(InstanceState state) {
  for (const auto& [value, name] : kNames) {
    if (value == state) return name;
  }
  return "unknown";
}

std::optional<InstanceState> ParseInstanceState(absl::string_view name) {
  for (const auto& [value, text] : kNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

InstanceState StateOf(const v1::Instance& instance) {
  return ParseInstanceState(instance.state()).value_or(InstanceState::kFailed);
}

bool IsActive(InstanceState state) {
  return state != InstanceState::kStopped && state != InstanceState::kFailed;
}

bool IsAllowedTransition(InstanceState from, InstanceState to) {
  using S = InstanceState;
  if (from == to) return false;
  // Every active state can end; an ended id can begin again (a serve that reuses it).
  if (to == S::kStopped || to == S::kFailed) return IsActive(from);
  if (!IsActive(from)) return to == S::kPlanned || to == S::kStarting || to == S::kReady;
  switch (to) {
    case S::kPlanned:
      return false;
    case S::kStarting:  // launched, or restarted after a crash, or waking
      return from == S::kPlanned || from == S::kReady || from == S::kSleeping;
    case S::kReady:  // an agent may report ready without starting in between; a stop that
                     // could not be sent puts a draining instance back
      return from == S::kPlanned || from == S::kStarting || from == S::kSleeping ||
             from == S::kDraining;
    case S::kSleeping:
      return from == S::kReady || from == S::kDraining;
    case S::kDraining:
      return from == S::kReady || from == S::kSleeping;
    case S::kStopping:
      return from == S::kStarting || from == S::kReady || from == S::kSleeping ||
             from == S::kDraining || from == S::kPlanned;
    default:
      return false;
  }
}

}  // namespace gswarm::host
