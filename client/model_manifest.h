#pragma once

// The record GSwarm keeps inside every model directory it wrote: <dir>/.gswarm/manifest.json.
// It says where the files came from (source, revision, resolved commit) and what they must be
// (path, size, sha256), so a later run can tell "already here" from "something else is here",
// and `validate` can re-check the files.
//
// {"format": 1, "name": "...", "source_url": "hf://org/x", "revision": "main",
//  "commit": "<sha or empty>", "downloaded_at": "2024-05-01T12:00:00Z",
//  "files": [{"path": "config.json", "size": 123, "sha256": "...", "xxh3_128": "..."}]}
//
// What is checked where: sha256 is the Hub's (or computed from the source's bytes at download)
// and is re-checked only by `validate --full`; xxh3_128 is computed once, at download or lazily by
// the first tier copy of a model whose manifest lacks it, and every later tier copy and peer
// transfer checks the bytes against it while they move.
//
// Thread safety: free functions, safe from any thread.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

struct ModelManifest {
  std::string name;
  std::string source_url;
  std::string revision;              // as requested ("main", a tag, a commit; empty for https/file)
  std::string commit;                // resolved commit; empty when the source has none
  std::vector<v1::ModelFile> files;  // path, size_bytes, sha256, xxh3_128 (every file)
  std::string downloaded_at;         // RFC 3339, UTC
};

// <model_dir>/.gswarm/manifest.json
std::string ManifestPath(const std::string& model_dir);

// NOT_FOUND when the directory has no manifest; INVALID_ARGUMENT naming the file when it is
// not one GSwarm wrote.
absl::StatusOr<ModelManifest> ReadManifest(const std::string& model_dir);

// Creates <model_dir>/.gswarm and writes the manifest atomically (temp, fsync, rename).
absl::Status WriteManifest(const std::string& model_dir, const ModelManifest& manifest);

}  // namespace gswarm::client
