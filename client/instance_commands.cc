// CommandRunner's instance commands: stop, sleep (with the check that the GPU memory was freed)
// and wake.

#include "absl/strings/str_cat.h"
#include "client/command_runner.h"
#include "common/units.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

constexpr absl::Duration kFreedPoll = absl::Milliseconds(200);

// The outcome, with the instance as it is now when there is one.
v1::CommandUpdate WithInstance(const std::string& command_id, const absl::Status& status,
                               std::optional<v1::Instance> instance) {
  v1::CommandUpdate update = Outcome(command_id, status);
  if (instance.has_value()) *update.mutable_instance() = *std::move(instance);
  return update;
}

}  // namespace

absl::StatusOr<uint64_t> AwaitGpuFreed(uint64_t before,
                                       const std::function<std::optional<uint64_t>()>& held,
                                       absl::Duration timeout, absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  std::optional<uint64_t> now;
  for (;;) {
    now = held();
    if (now.has_value() && *now * 10 <= before) return *now;
    if (absl::Now() >= deadline) break;
    absl::SleepFor(poll);
  }
  return absl::FailedPreconditionError(
      absl::StrCat("sleep did not free the engine's GPU memory: ",
                   now.has_value() ? common::FormatBytes(*now) : std::string("an unknown amount"),
                   " of ", common::FormatBytes(before), " still held after ",
                   absl::FormatDuration(timeout), " (at least 90% must go)"));
}

v1::CommandUpdate CommandRunner::StopInstance(const v1::Command& command) {
  absl::StatusOr<v1::Instance> stopped =
      supervisor_->Stop(command.stop().instance_id(), command.stop().force());
  v1::CommandUpdate update = Outcome(command.id(), stopped.status());
  if (stopped.ok()) *update.mutable_instance() = *stopped;
  return update;
}

v1::CommandUpdate CommandRunner::SleepInstance(const v1::Command& command) {
  const v1::SleepCommand& sleep = command.sleep();
  const std::string& id = sleep.instance_id();
  // What the engine holds before it sleeps, where the node can tell.
  std::optional<uint64_t> before;
  if (std::optional<v1::Instance> instance = supervisor_->Get(id);
      instance.has_value() && options_.gpu_bytes) {
    before = options_.gpu_bytes(*instance);
  }
  absl::StatusOr<v1::Instance> slept =
      supervisor_->Sleep(id, sleep.level() == 0 ? 1 : static_cast<int>(sleep.level()));
  if (!slept.ok()) return WithInstance(command.id(), slept.status(), supervisor_->Get(id));
  if (!before.has_value() || *before == 0) return WithInstance(command.id(), {}, *slept);

  const absl::Duration timeout = sleep.verify_timeout_ms() > 0
                                     ? absl::Milliseconds(sleep.verify_timeout_ms())
                                     : options_.sleep_verify_timeout;
  const v1::Instance asleep = *slept;
  absl::StatusOr<uint64_t> freed = AwaitGpuFreed(
      *before, [&] { return options_.gpu_bytes(asleep); }, timeout, kFreedPoll);
  if (freed.ok()) {
    // Reported with the outcome: the host counts the GPU room free from now on.
    std::optional<v1::Instance> measured = supervisor_->SetGpuMemory(id, *freed);
    return WithInstance(command.id(), {}, measured.has_value() ? measured : supervisor_->Get(id));
  }
  // The engine did not keep its promise: a GPU it claims to have freed is still taken, so it is
  // stopped rather than left holding memory the host would count as free.
  spdlog::warn("instance={} model={}: {}; stopping it", id, asleep.model_name(),
               std::string(freed.status().message()));
  absl::StatusOr<v1::Instance> stopped = supervisor_->Stop(id, /*force=*/false);
  return WithInstance(
      command.id(),
      absl::FailedPreconditionError(absl::StrCat(freed.status().message(), "; it was stopped")),
      stopped.ok() ? std::optional<v1::Instance>(*stopped) : supervisor_->Get(id));
}

v1::CommandUpdate CommandRunner::WakeInstance(const v1::Command& command) {
  const std::string& id = command.wake().instance_id();
  absl::StatusOr<v1::Instance> woke = supervisor_->Wake(id);
  return WithInstance(command.id(), woke.status(),
                      woke.ok() ? std::optional<v1::Instance>(*woke) : supervisor_->Get(id));
}

}  // namespace gswarm::client
