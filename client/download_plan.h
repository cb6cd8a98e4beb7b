#pragma once

// What a download must put in staging (internal to the downloader): the file list from the
// source (Hub listing, one https file, or a local folder walk) and what earlier runs left.
// Thread safety: free functions, safe from any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/downloader.h"
#include "client/hf_source.h"

namespace gswarm::client {

// One file to put in staging, and what an earlier run left of it there.
// What a fetch keeps beside <staging>/<path> while it runs (file_fetcher.h, stream_hasher.h,
// striped_fetch.h); once the file is whole none may remain, or it would land in the model.
// (.stripes.done.tmp: what older versions left while rewriting the record.)
inline constexpr const char* kFetchSidecars[] = {".part",    ".part.hash",    ".part.hash.tmp",
                                                 ".stripes", ".stripes.done", ".stripes.done.tmp"};

struct PlannedFile {
  std::string path;                  // relative to the model directory
  std::string url;                   // http(s) sources
  std::string local_source;          // file:// sources: the file to copy
  std::optional<uint64_t> size;      // expected size, when known before fetching
  std::string sha256;                // expected SHA-256, when the source gives one
  std::string xxh3;                  // expected XXH3-128, from a GSwarm peer (checked instead)
  std::vector<std::string> headers;  // Authorization for the Hub's host
  bool complete = false;             // <staging>/<path> is already whole (verified when renamed)
  uint64_t existing = 0;             // bytes already on disk for it
};

struct Plan {
  std::string commit;
  std::vector<PlannedFile> files;
};

// Lists the source: the Hub at the revision (one request; a gated repo without HF_TOKEN fails
// here), a HEAD for an https file's size, or a walk of a local folder (symlinks followed,
// .gswarm/ skipped). Hub listings with unsafe or reserved paths are refused.
// REQUIRES: `src` was parsed from `req.source_url`.
absl::StatusOr<Plan> MakePlan(const DownloadRequest& req, const SourceSpec& src);

// <staging>/.gswarm/staging.json: ties partial files to one source and commit, so that a branch
// that moved between runs never mixes two commits' bytes.
std::string StagingStatePath(const std::string& staging_dir);
std::string StagingState(const SourceSpec& src, const Plan& plan);

// Fills `complete` and `existing` from what earlier runs left in staging. False when the
// staging directory holds another source's or commit's files and must be emptied first.
// Partial Hub files without a SHA-256 (small git files) are not continued: only a hash could
// vouch for bytes written before a crash.
bool InspectStaging(const DownloadRequest& req, const SourceSpec& src, Plan& plan);

// The Status for an https:// source answering `status` (not a success, not worth retrying).
absl::Status HttpsError(const std::string& url, long status);

// The size of the regular file at `path` (links followed), or nullopt.
std::optional<uint64_t> FileSize(const std::string& path);

}  // namespace gswarm::client
