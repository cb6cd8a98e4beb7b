#include "host/job_state.h"

#include <array>
#include <utility>

namespace gswarm::host {
namespace {

constexpr std::array<std::pair<JobState, const char*>, 5> kNames = {{
    {JobState::kPending, "pending"},
    {JobState::kRunning, "running"},
    {JobState::kSucceeded, "succeeded"},
    {JobState::kFailed, "failed"},
    {JobState::kCancelled, "cancelled"},
}};

}  // namespace

const char* JobStateName(JobState state) {
  for (const auto& [value, name] : kNames) {
    if (value == state) return name;
  }
  return "unknown";
}

std::optional<JobState> ParseJobState(absl::string_view name) {
  for (const auto& [value, text] : kNames) {
    if (text == name) return value;
  }
  return std::nullopt;
}

JobState JobStateOf(const v1::Job& job) {
  return ParseJobState(job.state()).value_or(JobState::kFailed);
}

bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

bool IsAllowedJobTransition(JobState from, JobState to) {
  if (IsTerminal(from)) return false;
  if (from == JobState::kRunning && to == JobState::kPending) return false;
  return true;
}

}  // namespace gswarm::host
