#pragma once

// An inference instance's life on the host, as an explicit state machine (Triton's model
// lifecycle is the pattern). Strings exist only at the API edge: InstanceStateName() and
// ParseInstanceState() convert, and nothing else compares state strings.
//
//   planned ──> starting ──> ready <──> sleeping
//      │           │  ^        │ ^        │
//      │           │  └────────┤ │        │        (a crashed engine restarts: ready -> starting)
//      │           v           v │        v
//      └──────> failed     draining ───> stopping ──> stopped
//
// planned: the host sent a serve and holds its GPU room until the agent reports the instance.
// draining: the host took a ready instance out of rotation (no new requests) before stopping it.
// Any active state may end in stopped or failed; an ended instance id may start a new life.

#include <optional>

#include "absl/strings/string_view.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::host {

enum class InstanceState {
  kPlanned,
  kStarting,
  kReady,
  kSleeping,
  kDraining,
  kStopping,
  kStopped,
  kFailed,
};

// "planned", "starting", ... as in v1::Instance.state.
const char* InstanceStateName(InstanceState state);
// nullopt for a string that names no state.
std::optional<InstanceState> ParseInstanceState(absl::string_view name);

// Holds (or is about to hold) the model's files and GPU memory: every state but stopped and failed.
bool IsActive(InstanceState state);
// The state of an instance as the API carries it; an unknown string reads as failed.
InstanceState StateOf(const v1::Instance& instance);
// Whether the machine has the edge `from -> to`.
bool IsAllowedTransition(InstanceState from, InstanceState to);

}  // namespace gswarm::host
