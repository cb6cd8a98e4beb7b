#pragma once

// What a tier copy (tier_copier.h) copies: the source's files, listed and checked against its
// manifest, each with the digest to check it against; and, once the copy is whole, the digests it
// computed for a manifest that lacked them, recorded.
//
// Thread safety: free functions; each call works on its own arguments.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/model_manifest.h"

namespace gswarm::client::tier_copy {

// One file of the copy.
struct FileJob {
  std::string rel;      // relative to the source (and the staging) directory
  std::string src;      // source path, symlinks not resolved (open follows them)
  uint64_t size = 0;    // as stat'ed when listed
  bool verify = false;  // listed by the manifest, and verifying: hash it on the way
  std::string xxh3;     // the manifest's digests; checked: xxh3 where recorded, else sha256
  std::string sha256;
  std::string computed_xxh3;  // set by the copy when xxh3 was not recorded
};

// Lists the regular files under `source_dir` (following symlinks that stay within the model's
// folder; only manifest.json from its .gswarm/) into `jobs`, largest first, and checks them
// against the source's manifest: a listed file missing is NOT_FOUND, another size DATA_LOSS.
// With `verify`, each listed file carries the digests to check. Returns the manifest (nullopt
// without one).
absl::StatusOr<std::optional<ModelManifest>> PlanJobs(const std::string& source_dir, bool verify,
                                                      std::vector<FileJob>& jobs);

// Adds the XXH3-128 digests the copy computed (FileJob::computed_xxh3) to `manifest`, rewrites
// the staging copy's manifest and the source's (a failure there is logged: only the next copy
// computes them again). Returns how many were recorded.
absl::StatusOr<uint32_t> RecordDigests(const std::vector<FileJob>& jobs, ModelManifest& manifest,
                                       const std::string& source_dir,
                                       const std::string& staging_dir);

}  // namespace gswarm::client::tier_copy
