#include "client/command_runner.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model_metadata.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

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

}  // namespace

CommandRunner::CommandRunner(Options options, const DiskTier* disk, SendFn send)
    : options_(std::move(options)),
      disk_(disk),
      send_(std::move(send)),
      pool_(std::make_unique<common::WorkerPool>(
          "agent command pool", static_cast<size_t>(std::max(1, options_.max_concurrent)), 4096)) {}

CommandRunner::~CommandRunner() {
  {
    absl::MutexLock lock(&mu_);
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
    absl::MutexLock lock(&mu_);
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
  absl::MutexLock lock(&mu_);
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
    absl::MutexLock lock(&mu_);
    Entry& entry = commands_[command.id()];
    entry.finished = true;
    entry.final_update = result;
  }
  Send(result);
}

v1::CommandUpdate CommandRunner::Download(const v1::Command& command,
                                          const std::atomic<bool>* cancel) {
  const v1::DownloadCommand& download = command.download();
  DownloadRequest request;
  request.model_name = download.model_name();
  request.source_url = download.source_url();
  request.revision = download.revision();
  request.target_dir = disk_->ModelDir(download.model_name());
  request.staging_dir = disk_->StagingDir(download.model_name());
  request.hub = options_.hub;

  absl::Time last_sent = absl::InfinitePast();
  auto on_progress = [&](const DownloadProgress& progress) {
    const absl::Time now = absl::Now();
    if (now - last_sent < options_.update_interval) return;
    last_sent = now;
    v1::CommandUpdate update;
    update.set_command_id(command.id());
    update.set_state("running");
    update.set_bytes_done(progress.bytes_done);
    update.set_bytes_total(progress.bytes_total);
    update.set_files_done(progress.files_done);
    update.set_files_total(progress.files_total);
    Send(update);
  };
  spdlog::info("download {} from {} starting", download.model_name(), download.source_url());
  absl::StatusOr<DownloadResult> result = downloader_.Run(request, on_progress, cancel);
  v1::CommandUpdate update = Outcome(command.id(), result.status());
  if (!result.ok()) {
    spdlog::warn("download {} {}: {}", download.model_name(), update.state(),
                 result.status().message());
    return update;
  }
  update.set_bytes_done(result->size_bytes);
  update.set_bytes_total(result->size_bytes);
  update.set_files_done(static_cast<uint32_t>(result->files.size()));
  update.set_files_total(static_cast<uint32_t>(result->files.size()));
  update.set_message(result->bytes_fetched == 0
                         ? "already on disk"
                         : absl::StrCat("fetched ", result->bytes_fetched, " bytes"));
  v1::Model& model = *update.mutable_model();
  model.set_name(download.model_name());
  model.set_commit(result->commit);
  model.set_size_bytes(result->size_bytes);
  for (const v1::ModelFile& file : result->files) *model.add_files() = file;
  absl::StatusOr<v1::ModelMetadata> metadata = common::ReadModelMetadata(request.target_dir);
  if (metadata.ok()) {
    *model.mutable_metadata() = *metadata;
  } else {
    spdlog::warn("model={}: metadata unreadable: {}", download.model_name(),
                 metadata.status().message());
  }
  v1::Replica& replica = *update.mutable_replica();
  replica.set_model_name(download.model_name());
  replica.set_tier("disk");
  replica.set_path(request.target_dir);
  replica.set_size_bytes(result->size_bytes);
  replica.set_state("ready");
  replica.set_commit(result->commit);
  replica.set_source_url(download.source_url());
  *replica.mutable_metadata() = model.metadata();
  spdlog::info("download {} succeeded: {} files, {} bytes, commit {}", download.model_name(),
               result->files.size(), result->size_bytes,
               result->commit.empty() ? "-" : result->commit);
  return update;
}

v1::CommandUpdate CommandRunner::Delete(const v1::Command& command) {
  const std::string& name = command.delete_().model_name();
  v1::CommandUpdate update = Outcome(command.id(), disk_->Remove(name));
  update.mutable_replica()->set_model_name(name);
  update.mutable_replica()->set_tier("disk");
  if (update.state() == "succeeded") spdlog::info("model={}: removed from disk", name);
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
  uint32_t checked = 0;
  absl::StatusOr<std::vector<std::string>> problems = disk_->Validate(name, &checked);
  if (!problems.ok()) return Outcome(command.id(), problems.status());
  v1::CommandUpdate update = Outcome(
      command.id(),
      problems->empty() ? absl::OkStatus() : absl::DataLossError(absl::StrJoin(*problems, "\n")));
  update.set_files_done(checked);
  update.set_files_total(checked);
  if (problems->empty()) update.set_message(absl::StrCat(checked, " files intact"));
  return update;
}

}  // namespace gswarm::client
