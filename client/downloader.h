#pragma once

// Puts a model on this node's disk: from the Hugging Face Hub (hf://org/name[@revision]), one
// https:// file, or a local folder (file:///abs/dir). Files are written under a staging
// directory, each verified (size always, SHA-256 for LFS files), and the staging directory is
// renamed to the model directory only when whole, with a manifest (model_manifest.h): a model is
// never visible half downloaded. Partial files persist in staging, so an interrupted download
// (dropped connection, killed agent, cancel) continues with HTTP Range on the next Run.
//
// Thread safety: Run may be called concurrently for different models (different target and
// staging directories); a lock file next to the staging directory refuses a second concurrent
// Run for the same one, even from another process.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/hf_source.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

struct DownloadRequest {
  std::string model_name;  // validated upstream; used in messages and the manifest
  std::string source_url;  // hf://org/name[@rev], https://.../file or file:///abs/dir
  std::string revision;    // overrides hf:// @rev when not empty
  std::string target_dir;  // the model directory: <model_cache_dir>/<name>; must not exist
  // Where files are assembled; kept across runs to resume:
  // <model_cache_dir>/.gswarm-staging/<name>. Must be on the same filesystem as target_dir (it is
  // renamed into place).
  std::string staging_dir;
  HubOptions hub;          // endpoint, token, offline, retry policy
  int parallel_files = 4;  // files fetched at once
};

struct DownloadProgress {
  uint64_t bytes_done = 0;   // on disk in staging, including bytes from earlier runs
  uint64_t bytes_total = 0;  // sum of the known file sizes
  uint32_t files_done = 0;
  uint32_t files_total = 0;
  uint64_t bytes_fetched_this_run = 0;  // received from the network (or copied) by this Run
};

struct DownloadResult {
  std::string commit;                // resolved commit ("" for https:// and file://)
  std::vector<v1::ModelFile> files;  // path, size_bytes, sha256 of every file
  uint64_t size_bytes = 0;
  uint64_t bytes_fetched = 0;  // by this Run; 0 when the model was already there
};

class Downloader {
 public:
  // Free bytes for unprivileged writers on the filesystem holding `dir` (or its nearest
  // existing parent).
  using FreeSpaceFn = std::function<absl::StatusOr<uint64_t>(const std::string& dir)>;

  struct Options {
    // statvfs (f_bavail) by default; tests pass their own.
    FreeSpaceFn free_space;
  };

  Downloader() : Downloader(Options{}) {}
  explicit Downloader(Options options);

  // Downloads (or imports) the model, blocking until it is in target_dir, failed or cancelled.
  // `on_progress` (may be empty) is called often, from worker threads but never two at a time;
  // keep it cheap. `cancel` (may be null) is polled; when set, Run returns CANCELLED and keeps
  // partial files for a later Run.
  //
  // Success also when target_dir already holds the same commit (or, for https:// and file://,
  // the same source): nothing is fetched. Failures leave target_dir absent and say what to do:
  // INVALID_ARGUMENT (source), UNAUTHENTICATED / PERMISSION_DENIED (gated repo: set HF_TOKEN),
  // NOT_FOUND (repo, revision, file), FAILED_PRECONDITION (target exists with other content;
  // HF_HUB_OFFLINE and not cached; download already running), RESOURCE_EXHAUSTED (disk space,
  // checked before any byte is fetched), DATA_LOSS (checksum or size mismatch, names the file),
  // UNAVAILABLE (network, after retries), CANCELLED.
  absl::StatusOr<DownloadResult> Run(const DownloadRequest& request,
                                     std::function<void(const DownloadProgress&)> on_progress,
                                     const std::atomic<bool>* cancel) const;

 private:
  Options options_;
};

}  // namespace gswarm::client
