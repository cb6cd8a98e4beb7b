#pragma once

// The disk tier of one node: models GSwarm downloaded into <location>/<name>/ (each with a
// manifest, see model_manifest.h), model folders put there by hand, and, read-only and in place,
// snapshots in the Hugging Face cache (<hf_cache>/hub/models--org--name/snapshots/<commit>).
//
// A location is a named directory for disk copies: "primary" is model_cache_dir; more come from
// client.disk_locations ("secondary", ...), and "custom" ones are directories a download named
// (seed 004's cache_location "custom" with a cache_path), remembered in
// <model_cache_dir>/.gswarm-custom-locations so that later scans find what went there. Each model
// name lives in one location at a time.
//
// Thread safety: thread-safe (the filesystem is the state; the custom list is written under a
// lock).

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

// One location of the disk tier.
struct DiskPlace {
  std::string name;  // "primary", a configured name, or "custom"
  std::string root;  // absolute
  double high_watermark = 0.9;
};

class DiskTier {
 public:
  struct Options {
    std::string model_cache_dir;  // expanded: the "primary" location
    std::string hf_hub_dir;       // expanded <hf cache>/hub; "" to skip the HF cache
    double primary_high_watermark = 0.9;
    std::vector<DiskPlace> locations;  // client.disk_locations but primary, by name
  };

  explicit DiskTier(Options options);

  // Every location: primary, the configured ones, then the custom directories used so far.
  std::vector<DiskPlace> Places() const;
  // The location a download or copy names: "" or "primary", a configured name, or "custom" with
  // an absolute `custom_path` (remembered from then on). INVALID_ARGUMENT naming the known ones
  // otherwise.
  absl::StatusOr<DiskPlace> Place(const std::string& location,
                                  const std::string& custom_path) const;
  // The location holding the directory `path` (a model or staging directory below a root).
  std::optional<DiskPlace> PlaceOf(const std::string& path) const;
  std::string ModelDir(const DiskPlace& place, const std::string& name) const;
  std::string StagingDir(const DiskPlace& place, const std::string& name) const;

  // Every model on this tier as a ready disk replica (model name, path, size, commit, source,
  // metadata). Folders that are not models (no weights, no config.json) are skipped. Hugging Face
  // snapshots are named after the repo ("Llama-2-7b-hf"), or "org--repo" when two orgs share it.
  std::vector<v1::Replica> Scan(bool include_hf_cache = true) const;

  // Where the model is on this tier (the first location holding it), else where it would go in
  // the primary location; its staging directory beside it.
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

  // Re-checks a model's files against its manifest (ValidateModelDir). Returns the problems
  // found ("config.json: size 10, expected 12"), empty when the model is intact; NOT_FOUND when
  // the model is not on this tier. `files_checked` counts the files read.
  absl::StatusOr<std::vector<std::string>> Validate(const std::string& name, bool full,
                                                    uint32_t* files_checked) const;

 private:
  std::vector<v1::Replica> ScanHfCache() const;
  std::vector<v1::Replica> ScanPlace(const DiskPlace& place) const;
  std::string CustomListPath() const;

  const Options options_;
  mutable gswarm::Mutex custom_mu_;  // writers of the custom list
};

// Bytes of the regular files below `dir`, following links (HF snapshots link to blobs) and
// skipping GSwarm's own .gswarm/ bookkeeping.
uint64_t ModelBytes(const std::string& dir);

// <HF_HUB_CACHE>, else <HF_HOME>/hub, else <configured huggingface_cache_dir>/hub.
std::string HfHubDir(const std::string& configured_cache_dir);

// Checks the files of the model in `dir` (on `tier`, for messages) against its manifest: sizes,
// then the recorded XXH3-128 (memory speed; SHA-256 for a file recorded without one), or with
// `full` the recorded SHA-256 (the Hub's check; XXH3-128 too, in the same read). Returns
// "path: problem" lines, empty when intact; NOT_FOUND when the directory is missing,
// FAILED_PRECONDITION without a manifest.
absl::StatusOr<std::vector<std::string>> ValidateModelDir(const std::string& dir,
                                                          const std::string& name,
                                                          const std::string& tier, bool full,
                                                          uint32_t* files_checked);

}  // namespace gswarm::client
