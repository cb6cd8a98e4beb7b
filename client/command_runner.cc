#include "client/command_runner.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/units.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {

CommandRunner::CommandRunner(Options options, const DiskTier* disk, DramTier* dram,
                             InstanceSupervisor* supervisor, SendFn send)
    : options_(std::move(options)),
      disk_(disk),
      dram_(dram),
      supervisor_(supervisor),
      send_(std::move(send)),
      own_disk_space_(options_.disk_space == nullptr ? std::make_unique<DiskSpace>() : nullptr),
      disk_space_(options_.disk_space != nullptr ? options_.disk_space : own_disk_space_.get()),
      pool_(std::make_unique<common::WorkerPool>(
          "agent command pool", static_cast<size_t>(std::max(1, options_.max_concurrent)), 4096)) {}

CommandRunner::~CommandRunner() {
  {
    gswarm::MutexLock lock(&mu_);
    for (auto& [id, entry] : commands_) entry.cancel->store(true);
  }
  pool_.reset();
}

void CommandRunner::Send(const v1::CommandUpdate& update) {
  v1::AgentMessage message;
  *message.mutable_command_update() = update;
  send_(std::move(message));
}

void CommandRunner::Handle(const v1::Command& command) {
  std::shared_ptr<std::atomic<bool>> cancel;
  {
    gswarm::MutexLock lock(&mu_);
    auto [it, inserted] = commands_.try_emplace(command.id());
    if (!inserted) {
      if (it->second.finished) {
        v1::CommandUpdate final_update = it->second.final_update;
        mu_.Unlock();
        Send(final_update);
        mu_.Lock();
      }
      return;  // running: its updates keep flowing
    }
    cancel = it->second.cancel;
  }
  absl::Status queued = pool_->Submit([this, command, cancel] { Run(command, cancel); });
  if (!queued.ok()) Send(Outcome(command.id(), queued));
}

void CommandRunner::Cancel(const std::string& command_id) {
  gswarm::MutexLock lock(&mu_);
  auto it = commands_.find(command_id);
  if (it != commands_.end()) it->second.cancel->store(true);
}

void CommandRunner::Run(const v1::Command& command, std::shared_ptr<std::atomic<bool>> cancel) {
  v1::CommandUpdate running;
  running.set_command_id(command.id());
  running.set_state("running");
  Send(running);

  v1::CommandUpdate result;
  switch (command.cmd_case()) {
    case v1::Command::kDownload:
      result = Download(command, cancel.get());
      break;
    case v1::Command::kDelete:
      result = Delete(command);
      break;
    case v1::Command::kCopy:
      result = Copy(command, cancel.get());
      break;
    case v1::Command::kServe:
      result = Serve(command, cancel.get());
      break;
    case v1::Command::kStop:
      result = StopInstance(command);
      break;
    case v1::Command::kSleep:
      result = SleepInstance(command);
      break;
    case v1::Command::kWake:
      result = WakeInstance(command);
      break;
    case v1::Command::kDiscover:
      result = Discover(command);
      break;
    case v1::Command::kValidate:
      result = Validate(command);
      break;
    default:
      result =
          Outcome(command.id(),
                  absl::UnimplementedError("this agent cannot run that command yet; upgrade it"));
  }
  {
    gswarm::MutexLock lock(&mu_);
    Entry& entry = commands_[command.id()];
    entry.finished = true;
    entry.final_update = result;
  }
  Send(result);
}

std::function<void(uint64_t, uint64_t, uint32_t, uint32_t)> CommandRunner::Throttled(
    const std::string& id) {
  auto last_sent = std::make_shared<absl::Time>(absl::InfinitePast());
  return [this, id, last_sent](uint64_t done, uint64_t total, uint32_t files_done,
                               uint32_t files_total) {
    const absl::Time now = absl::Now();
    if (now - *last_sent < options_.update_interval) return;
    *last_sent = now;
    v1::CommandUpdate update;
    update.set_command_id(id);
    update.set_state("running");
    update.set_bytes_done(done);
    update.set_bytes_total(total);
    update.set_files_done(files_done);
    update.set_files_total(files_total);
    Send(update);
  };
}

v1::CommandUpdate CommandRunner::Delete(const v1::Command& command) {
  const std::string& name = command.delete_().model_name();
  const std::string tier = command.delete_().tier().empty() ? "disk" : command.delete_().tier();
  v1::CommandUpdate update =
      Outcome(command.id(), tier == "dram" ? dram_->Remove(name) : disk_->Remove(name));
  update.mutable_replica()->set_model_name(name);
  update.mutable_replica()->set_tier(tier);
  if (update.state() == "succeeded") spdlog::info("model={}: removed from {}", name, tier);
  return update;
}

v1::CommandUpdate CommandRunner::Discover(const v1::Command& command) {
  v1::CommandUpdate update = Outcome(command.id(), absl::OkStatus());
  for (v1::Replica& replica : disk_->Scan()) *update.add_replicas() = std::move(replica);
  update.set_files_done(static_cast<uint32_t>(update.replicas_size()));
  update.set_message(absl::StrCat(update.replicas_size(), " models on this node"));
  return update;
}

v1::CommandUpdate CommandRunner::Validate(const v1::Command& command) {
  const std::string& name = command.validate().model_name();
  const std::string& tier = command.validate().tier();
  if (!tier.empty() && tier != "disk" && tier != "dram") {
    return Outcome(command.id(), absl::InvalidArgumentError(
                                     absl::StrCat("tier \"", tier, "\" is not disk or dram")));
  }
  const bool full = command.validate().full();
  uint32_t checked = 0;
  absl::StatusOr<std::vector<std::string>> problems =
      tier == "dram" ? ValidateModelDir(dram_->ModelDir(name), name, "dram", full, &checked)
                     : disk_->Validate(name, full, &checked);
  if (!problems.ok()) return Outcome(command.id(), problems.status());
  v1::CommandUpdate update = Outcome(
      command.id(),
      problems->empty() ? absl::OkStatus() : absl::DataLossError(absl::StrJoin(*problems, "\n")));
  update.set_files_done(checked);
  update.set_files_total(checked);
  if (problems->empty()) {
    update.set_message(
        absl::StrCat(checked, " files intact (", full ? "SHA-256" : "sizes and XXH3-128", ")"));
  }
  return update;
}

v1::CommandUpdate CommandRunner::Serve(const v1::Command& command,
                                       const std::atomic<bool>* cancel) {
  const v1::ServeCommand& serve = command.serve();
  const std::string& id = serve.instance_id();
  // The same command again (the agent reconnected): report the instance it started; one still
  // starting (adopted while loading, after an agent restart) is waited for, not started again.
  std::optional<v1::Instance> started = supervisor_->Get(id);
  std::string engine;
  // Its watcher ends an adopted one at its own ready_timeout; this wait only outlasts that.
  absl::Duration ready_timeout = absl::Hours(2);
  if (started.has_value()) {
    engine = started->engine();
    if (started->state() != "starting") {
      v1::CommandUpdate update = Outcome(
          command.id(), started->state() == "ready" ? absl::OkStatus()
                                                    : absl::UnavailableError(absl::StrCat(
                                                          "instance ", id, " is ", started->state(),
                                                          ": ", started->state_reason())));
      *update.mutable_instance() = *started;
      return update;
    }
  } else {
    absl::StatusOr<InstanceSpec> spec = PlanInstance(serve);
    if (!spec.ok()) return Outcome(command.id(), spec.status());
    absl::StatusOr<v1::Instance> launched = supervisor_->Start(*spec);
    if (!launched.ok()) return Outcome(command.id(), launched.status());
    if (spec->source_tier == "dram") dram_->Touch(serve.model_name()).IgnoreError();
    started = *std::move(launched);
    engine = spec->engine;
    ready_timeout = spec->ready_timeout;
  }

  v1::CommandUpdate running;
  running.set_command_id(command.id());
  running.set_state("running");
  running.set_message(absl::StrCat("starting ", engine, " on port ", started->port()));
  *running.mutable_instance() = *started;
  Send(running);

  // Wait until the engine answers, fails, or the serve is cancelled (which stops it).
  const absl::Time deadline = absl::Now() + ready_timeout + absl::Seconds(30);
  std::optional<v1::Instance> now = started;
  while (absl::Now() < deadline) {
    now = supervisor_->Get(id);
    if (!now.has_value() || now->state() != "starting") break;
    if (cancel->load()) {
      absl::StatusOr<v1::Instance> stopped = supervisor_->Stop(id, /*force=*/false);
      v1::CommandUpdate update = Outcome(command.id(), absl::CancelledError("serve cancelled"));
      if (stopped.ok()) *update.mutable_instance() = *stopped;
      return update;
    }
    // The supervisor notices readiness on its own health poll; checking its state often keeps
    // the serve's answer from trailing it (a coarse step here added ~100 ms to every serve).
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (!now.has_value()) {
    return Outcome(command.id(), absl::InternalError("the instance vanished while starting"));
  }
  v1::CommandUpdate update =
      Outcome(command.id(),
              now->state() == "ready"
                  ? absl::OkStatus()
                  : absl::UnavailableError(absl::StrCat(engine, " for ", serve.model_name(), " ",
                                                        now->state(), ": ", now->state_reason())));
  *update.mutable_instance() = *now;
  update.set_message(now->state() == "ready" ? absl::StrCat("ready at ", now->endpoint())
                                             : update.message());
  return update;
}

v1::CommandUpdate Outcome(const std::string& id, const absl::Status& status) {
  v1::CommandUpdate update;
  update.set_command_id(id);
  if (status.ok()) {
    update.set_state("succeeded");
  } else {
    update.set_state(absl::IsCancelled(status) ? "cancelled" : "failed");
    update.set_message(std::string(status.message()));
  }
  return update;
}

}  // namespace gswarm::client
