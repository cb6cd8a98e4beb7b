#pragma once

// The disk tier of one node: models GSwarm downloaded into <model_cache_dir>/<name>/ (each with a
// manifest, see model_manifest.h), model folders put there by hand, and, read-only and in place,
// snapshots in the Hugging Face cache (<hf_cache>/hub/models--org--name/snapshots/<commit>).
//
// Thread safety: thread-safe (no mutable state; the filesystem is the state).

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

class DiskTier {
 public:
  struct Options {
    std::string model_cache_dir;  // expanded
    std::string hf_hub_dir;       // expanded <hf cache>/hub; "" to skip the HF cache
  };

  explicit DiskTier(Options options);

  // Every model on this tier as a ready disk replica (model name, path, size, commit, source,
  // metadata). Folders that are not models (no weights, no config.json) are skipped. Hugging Face
  // snapshots are named after the repo ("Llama-2-7b-hf"), or "org--repo" when two orgs share it.
  std::vector<v1::Replica> Scan(bool include_hf_cache = true) const;

  std::string ModelDir(const std::string& name) const;
  std::string StagingDir(const std::string& name) const;
  // Deletes what a removal killed mid-way left out of sight (Remove renames a model away first).
  void RemoveLeftovers() const;
  // Where the model's files are: its directory here, or its snapshot in the Hugging Face cache.
  // NOT_FOUND when it is on neither.
  absl::StatusOr<std::string> Locate(const std::string& name) const;

  // Removes a model GSwarm manages, and its staging leftovers. A model found in place in the HF
  // cache is never deleted (the cache is not ours). OK when the model is not here.
  absl::Status Remove(const std::string& name) const;

  // Re-checks a model's files against its manifest (sizes, and SHA-256 where recorded). Returns
  // the problems found ("config.json: size 10, expected 12"), empty when the model is intact;
  // NOT_FOUND when the model is not on this tier. `files_checked` counts the files read.
  absl::StatusOr<std::vector<std::string>> Validate(const std::string& name,
                                                    uint32_t* files_checked) const;

 private:
  std::vector<v1::Replica> ScanHfCache() const;

  const Options options_;
};

// Bytes of the regular files below `dir`, following links (HF snapshots link to blobs) and
// skipping GSwarm's own .gswarm/ bookkeeping.
uint64_t ModelBytes(const std::string& dir);

// <HF_HUB_CACHE>, else <HF_HOME>/hub, else <configured huggingface_cache_dir>/hub.
std::string HfHubDir(const std::string& configured_cache_dir);

// Checks the files of the model in `dir` (on `tier`, for messages) against its manifest: sizes,
// and SHA-256 where recorded. Returns "path: problem" lines, empty when intact; NOT_FOUND when the
// directory is missing, FAILED_PRECONDITION without a manifest.
absl::StatusOr<std::vector<std::string>> ValidateModelDir(const std::string& dir,
                                                          const std::string& name,
                                                          const std::string& tier,
                                                          uint32_t* files_checked);

}  // namespace gswarm::client
