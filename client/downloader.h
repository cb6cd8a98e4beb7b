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
#include <memory>
#include <optional>
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
  HubOptions hub;  // endpoint, token, offline, retry policy
  // hub.endpoint is a GSwarm peer's data port: the XXH3-128 digests its listing carries are
  // checked instead of computing SHA-256 (whose values are carried over from the listing).
  bool from_peer = false;
  // Promises the bytes still to fetch (known once the source is listed) on the target's disk,
  // before any is written; what it returns is held until Run returns. An error refuses the
  // download (RESOURCE_EXHAUSTED: no room). Unset: the filesystem's free space is checked.
  std::function<absl::StatusOr<std::shared_ptr<void>>(uint64_t bytes)> reserve;
  // Striping (striped_fetch.h), for hf:// sources' files of at least stripe_min_bytes: more
  // GSwarm peers holding the same commit (data port URLs; with from_peer, besides
  // hub.endpoint), the Hub behind them for ranges no peer delivers, and connections per source.
  // Without any of them every file is one connection (the .part path, with hash checkpoints).
  std::vector<std::string> more_peers;
  std::optional<HubOptions> fallback;
  int connections_per_source = 1;
  uint64_t stripe_min_bytes = 64ull << 20;
  uint64_t stripe_chunk_bytes = 16ull << 20;  // the unit handed to one connection
  int parallel_files = 4;                     // files fetched at once
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
  std::vector<v1::ModelFile> files;  // path, size_bytes, sha256, xxh3_128 of every file
  uint64_t size_bytes = 0;
  uint64_t bytes_fetched = 0;        // by this Run; 0 when the model was already there
  uint64_t bytes_reread = 0;         // of partial files, to restore their hashes on resume
  uint64_t bytes_from_fallback = 0;  // of bytes_fetched: from `fallback` (the Hub behind peers)
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
