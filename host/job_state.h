#pragma once

// A job's life on the host as an explicit state machine; strings only at the API edge.
//
//   pending ──> running ──> succeeded | failed | cancelled
//      └────────────────────────────────────^
//
// The agent reports a job's state in its command updates; the host applies only the edges
// above (a finished job never runs again, so a late update for it is dropped).

#include <optional>

#include "absl/strings/string_view.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::host {

enum class JobState { kPending, kRunning, kSucceeded, kFailed, kCancelled };

// "pending", "running", ... as in v1::Job.state.
const char* JobStateName(JobState state);
std::optional<JobState> ParseJobState(absl::string_view name);
// The state a job carries; an unknown string reads as failed.
JobState JobStateOf(const v1::Job& job);

bool IsTerminal(JobState state);
// Whether the machine has the edge `from -> to` (staying in a running state is allowed: progress).
bool IsAllowedJobTransition(JobState from, JobState to);

}  // namespace gswarm::host
