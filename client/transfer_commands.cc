// CommandRunner's transfer commands: download (from the Hub or peers) and copy (between tiers
// and nodes), each writing to a disk location under a space reservation.

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "client/command_runner.h"
#include "client/memory_probe.h"
#include "client/model_manifest.h"
#include "client/tier_copier.h"
#include "common/model_metadata.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {

absl::StatusOr<DiskPlace> CommandRunner::TargetPlace(const std::string& name,
                                                     const std::string& location,
                                                     const std::string& custom_path) const {
  std::error_code ec;
  if (std::optional<DiskPlace> there = disk_->PlaceOf(disk_->ModelDir(name));
      there.has_value() && std::filesystem::is_directory(disk_->ModelDir(name), ec)) {
    return *there;  // one copy per node: where it already is
  }
  return disk_->Place(location, custom_path);
}

absl::StatusOr<std::shared_ptr<void>> CommandRunner::Reserve(
    const DiskPlace& place, uint64_t bytes, const std::string& what,
    std::shared_ptr<DiskSpace::Reservation>* held) {
  ASSIGN_OR_RETURN(std::unique_ptr<DiskSpace::Reservation> reservation,
                   disk_space_->Reserve(place, bytes, what));
  *held = std::move(reservation);
  return std::shared_ptr<void>(*held);
}

v1::CommandUpdate CommandRunner::Download(const v1::Command& command,
                                          const std::atomic<bool>* cancel) {
  const v1::DownloadCommand& download = command.download();
  absl::StatusOr<DiskPlace> place =
      TargetPlace(download.model_name(), download.location(), download.location_path());
  if (!place.ok()) return Outcome(command.id(), place.status());
  DownloadRequest request;
  request.model_name = download.model_name();
  request.source_url = download.source_url();
  request.revision = download.revision();
  request.target_dir = disk_->ModelDir(*place, download.model_name());
  request.staging_dir = disk_->StagingDir(*place, download.model_name());
  request.hub = options_.hub;
  request.connections_per_source = options_.download_connections;
  std::shared_ptr<DiskSpace::Reservation> reserved;  // the current Run's
  request.reserve = [this, &place, &download, &reserved](uint64_t bytes) {
    return Reserve(*place, bytes, absl::StrCat("the download of ", download.model_name()),
                   &reserved);
  };

  auto report = Throttled(command.id());
  uint64_t fetched = 0;  // by the current Run, as its progress says
  auto on_progress = [&](const DownloadProgress& p) {
    fetched = p.bytes_fetched_this_run;
    if (reserved != nullptr) reserved->Landed(fetched);
    report(p.bytes_done, p.bytes_total, p.files_done, p.files_total);
  };
  absl::StatusOr<DownloadResult> result;
  uint64_t from_peers = 0;
  uint64_t from_hub_behind_peers = 0;
  bool peer_served = false;
  if (!download.peer_url().empty()) {
    // Another node holds this commit: its data port stands in for the Hub.
    DownloadRequest from_peer = request;
    from_peer.hub.endpoint = download.peer_url();
    from_peer.hub.token = options_.cluster_token;
    from_peer.hub.offline = false;
    from_peer.from_peer = true;
    // Big files are striped over every peer holding the commit, with the Hub behind them for
    // the ranges a peer fails to deliver.
    from_peer.more_peers = {download.more_peer_urls().begin(), download.more_peer_urls().end()};
    if (!options_.hub.offline) from_peer.fallback = options_.hub;
    spdlog::info("download {} from peer {}{}", download.model_name(), download.peer_url(),
                 from_peer.more_peers.empty()
                     ? ""
                     : absl::StrCat(" and ", from_peer.more_peers.size(), " more"));
    result = downloader_.Run(from_peer, on_progress, cancel);
    reserved.reset();  // its bytes are on disk, or the source's run promises them again
    peer_served = result.ok();
    from_peers = peer_served ? result->bytes_fetched - result->bytes_from_fallback : fetched;
    from_hub_behind_peers = peer_served ? result->bytes_from_fallback : 0;
    if (!result.ok() && !absl::IsCancelled(result.status())) {
      spdlog::warn("download {} from peer {} failed ({}); trying the source", download.model_name(),
                   download.peer_url(), result.status().message());
    }
  }
  if (download.peer_url().empty() || (!result.ok() && !absl::IsCancelled(result.status()))) {
    spdlog::info("download {} from {} starting", download.model_name(), download.source_url());
    result = downloader_.Run(request, on_progress, cancel);
  }
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
  update.set_bytes_from_peers(from_peers);
  update.set_bytes_from_hub(peer_served ? from_hub_behind_peers : result->bytes_fetched);
  update.set_message(
      update.bytes_from_hub() == 0 && from_peers == 0
          ? "already on disk"
          : absl::StrCat("fetched ", from_peers + update.bytes_from_hub(), " bytes",
                         from_peers > 0 ? absl::StrCat(" (", from_peers, " from peers)") : ""));
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
  replica.set_location(place->name);
  *replica.mutable_metadata() = model.metadata();
  spdlog::info("download {} succeeded: {} files, {} bytes, commit {}", download.model_name(),
               result->files.size(), result->size_bytes,
               result->commit.empty() ? "-" : result->commit);
  return update;
}

absl::Status CommandRunner::MakeDramRoom(const std::string& name, uint64_t bytes, bool evict,
                                         v1::CommandUpdate& update) {
  // Instances arrive with the GPU tier; until then no DRAM model is in use by one.
  ASSIGN_OR_RETURN(std::vector<std::string> victims, dram_->PlanRoom(name, bytes, evict, {}));
  for (const std::string& victim : victims) {
    RETURN_IF_ERROR(dram_->Remove(victim));
    spdlog::info("model={}: evicted from DRAM to make room for {}", victim, name);
    v1::Replica& removed = *update.add_replicas();
    removed.set_model_name(victim);
    removed.set_tier("dram");
    removed.set_state("removed");
  }
  return absl::OkStatus();
}

v1::CommandUpdate CommandRunner::Copy(const v1::Command& command, const std::atomic<bool>* cancel) {
  const v1::CopyCommand& copy = command.copy();
  const std::string& name = copy.model_name();
  const bool to_dram = copy.target_tier() == "dram";
  absl::StatusOr<DiskPlace> place =
      to_dram ? absl::StatusOr<DiskPlace>(DiskPlace{}) : TargetPlace(name, copy.location(), "");
  if (!place.ok()) return Outcome(command.id(), place.status());
  const std::string target = to_dram ? dram_->ModelDir(name) : disk_->ModelDir(*place, name);
  const std::string staging = to_dram ? dram_->StagingDir(name) : disk_->StagingDir(*place, name);
  v1::CommandUpdate update = Outcome(command.id(), absl::OkStatus());
  auto fail = [&](const absl::Status& status) {
    v1::CommandUpdate failed = Outcome(command.id(), status);
    *failed.mutable_replicas() = update.replicas();  // evictions already done stay reported
    return failed;
  };

  std::error_code ec;
  if (std::filesystem::is_directory(target, ec)) {
    // Renamed into place only when whole: a copy there is complete (e.g. this command came again
    // after the agent restarted).
    update.set_message("already there");
  } else if (!copy.peer_url().empty()) {
    // Across nodes: the source node's data port serves the model in the Hub's shape.
    uint64_t bytes = 0;
    for (const v1::ModelFile& file : copy.files()) bytes += file.size_bytes();
    gswarm::MutexLock lock(&dram_mu_);
    if (to_dram) {
      if (absl::Status room = MakeDramRoom(name, bytes, copy.evict(), update); !room.ok()) {
        return fail(room);
      }
    }
    DownloadRequest request;
    request.model_name = name;
    request.source_url = copy.source_url().empty() ? "hf://gswarm/" + name : copy.source_url();
    request.target_dir = target;
    request.staging_dir = staging;
    request.hub = options_.hub;
    request.hub.endpoint = copy.peer_url();
    request.hub.token = options_.cluster_token;
    request.hub.offline = false;
    request.from_peer = true;
    std::shared_ptr<DiskSpace::Reservation> reserved;
    if (!to_dram) {
      request.reserve = [this, &place, &name, &reserved](uint64_t bytes) {
        return Reserve(*place, bytes, absl::StrCat("the copy of ", name), &reserved);
      };
    }
    auto report = Throttled(command.id());
    absl::StatusOr<DownloadResult> result = downloader_.Run(
        request,
        [&](const DownloadProgress& p) {
          if (reserved != nullptr) reserved->Landed(p.bytes_fetched_this_run);
          report(p.bytes_done, p.bytes_total, p.files_done, p.files_total);
        },
        cancel);
    if (!result.ok()) {
      if (absl::IsUnauthenticated(result.status()) || absl::IsPermissionDenied(result.status())) {
        return fail(absl::PermissionDeniedError(
            absl::StrCat("peer ", copy.peer_url(),
                         " refused this node's cluster token (do both agents "
                         "carry the host's token?)")));
      }
      return fail(result.status());
    }
    update.set_bytes_from_peers(result->bytes_fetched);
  } else {
    const bool from_dram = copy.source_tier() == "dram";
    absl::StatusOr<std::string> source =
        from_dram ? absl::StatusOr<std::string>(dram_->ModelDir(name)) : disk_->Locate(name);
    if (!source.ok() || !std::filesystem::is_directory(*source, ec)) {
      return fail(absl::NotFoundError(
          absl::StrCat("model \"", name, "\" is not in ", copy.source_tier(), " on this node")));
    }
    const uint64_t bytes = ModelBytes(*source);
    gswarm::MutexLock lock(&dram_mu_);
    std::shared_ptr<DiskSpace::Reservation> reserved;
    if (to_dram) {
      if (absl::Status room = MakeDramRoom(name, bytes, copy.evict(), update); !room.ok()) {
        return fail(room);
      }
    } else if (absl::StatusOr<std::shared_ptr<void>> held =
                   Reserve(*place, bytes, absl::StrCat("the copy of ", name), &reserved);
               !held.ok()) {
      return fail(held.status());
    }
    auto report = Throttled(command.id());
    // Not the downloader's staging name: a download of the same model may be resuming there.
    const std::string copy_staging = to_dram ? staging : staging + ".copy";
    absl::StatusOr<uint64_t> copied = CopyModelDir(
        *source, copy_staging, target, CopyOptions{},
        [&](const CopyProgress& p) {
          if (reserved != nullptr) reserved->Landed(p.bytes_done);
          report(p.bytes_done, p.bytes_total, p.files_done, p.files_total);
        },
        cancel);
    if (!copied.ok()) return fail(copied.status());
  }

  // A move on one node: the target is whole (just copied, or already there), the source goes.
  if (!copy.keep_source() && copy.peer_url().empty()) {
    const bool from_dram = copy.source_tier() == "dram";
    absl::StatusOr<std::string> source =
        from_dram ? absl::StatusOr<std::string>(dram_->ModelDir(name)) : disk_->Locate(name);
    if (source.ok()) {
      if (!from_dram && *source != disk_->ModelDir(name)) {
        update.set_message(
            "copied, not moved: the source is in the Hugging Face cache, which "
            "GSwarm never deletes");
      } else {
        absl::Status removed = from_dram ? dram_->Remove(name) : disk_->Remove(name);
        if (!removed.ok()) return fail(removed);
        v1::Replica& gone = *update.add_replicas();
        gone.set_model_name(name);
        gone.set_tier(copy.source_tier());
        gone.set_state("removed");
      }
    }
  }

  if (to_dram) {
    if (copy.pin()) {
      if (absl::Status pinned = dram_->SetPinned(name, true); !pinned.ok()) return fail(pinned);
    }
    dram_->Touch(name).IgnoreError();
  }
  // Reported as the tier itself sees it, so that sizes and times match its later inventories.
  v1::Replica& replica = *update.mutable_replica();
  for (v1::Replica& scanned : to_dram ? dram_->Scan() : disk_->Scan(false)) {
    if (scanned.model_name() == name) replica = std::move(scanned);
  }
  replica.set_model_name(name);
  replica.set_tier(copy.target_tier());
  replica.set_path(target);
  replica.set_state("ready");
  if (replica.size_bytes() == 0) replica.set_size_bytes(ModelBytes(target));
  absl::StatusOr<ModelManifest> manifest = ReadManifest(target);
  if (manifest.ok()) {
    if (replica.commit().empty()) replica.set_commit(manifest->commit);
    if (replica.source_url().empty()) replica.set_source_url(manifest->source_url);
    update.set_files_done(static_cast<uint32_t>(manifest->files.size()));
    update.set_files_total(static_cast<uint32_t>(manifest->files.size()));
  }
  update.set_bytes_done(replica.size_bytes());
  update.set_bytes_total(replica.size_bytes());
  spdlog::info("model={}: {} {} -> {} ({} bytes)", name, copy.keep_source() ? "copied" : "moved",
               copy.peer_url().empty() ? copy.source_tier() : copy.peer_url(), copy.target_tier(),
               replica.size_bytes());
  return update;
}

}  // namespace gswarm::client
