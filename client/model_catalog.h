#pragma once

// The models under a node's tier roots (DRAM, disk) as its data port (data_server.h) serves them:
// by GSwarm name ("gswarm/<name>"), or by the Hugging Face repo and commit their manifests record
// ("<org>/<repo>" at a 40-hex commit). Only directories with a GSwarm manifest
// (model_manifest.h) are models; only the files a manifest lists, with safe relative paths, are
// servable.
//
// A found model is pinned: its directory is held open and its manifest was read through that
// descriptor, so a model replaced or deleted afterwards cannot mix two versions; files are opened
// relative to the pinned directory.
//
// Thread safety: thread-safe. Parsed manifests are cached per version of the manifest file (it is
// replaced by rename, so a new version has a new inode); the repo@commit index is rebuilt by a
// scan of the roots whenever a lookup misses.

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "client/model_manifest.h"
#include "common/fd.h"
#include "common/mutex.h"

namespace gswarm::client {

// An open file descriptor, closed by its (last) owner (it is held through a shared_ptr).
using OwnedFd = common::UniqueFd;

// What a model's manifest says, indexed for serving.
struct CatalogModel {
  std::string dir;  // as found under its root; for messages
  ModelManifest manifest;
  // The manifest's commit, or, when it has none (https://, file:// sources), the first 40 hex
  // digits of a SHA-256 over the file list: the same files give the same sha on every node.
  std::string sha;
  std::string hub_repo;                 // "org/repo" when it came from hf:// at a known commit
  std::map<std::string, size_t> files;  // servable path -> index in manifest.files
};

struct PinnedModel {
  std::shared_ptr<const OwnedFd> dir;  // the model directory, open
  std::shared_ptr<const CatalogModel> info;
};

struct CatalogLookup {
  std::optional<PinnedModel> model;  // set when found
  // When not found: true when the model or repo is here, only not at that revision.
  bool repo_known = false;
  std::string reason;  // when not found: a sentence saying what is missing
};

class ModelCatalog {
 public:
  // The namespace of models by GSwarm name.
  static constexpr char kLocalNamespace[] = "gswarm";

  // `roots` are searched in order; the first holding a match wins.
  explicit ModelCatalog(std::vector<std::string> roots) : roots_(std::move(roots)) {}

  // "<ns>/<name>" at `revision`. For ns "gswarm", any revision resolves to the model's sha, but a
  // 40-hex revision must equal it. Otherwise "<ns>/<name>" is a Hub repo and `revision` must be
  // a commit some model here came from.
  CatalogLookup Find(const std::string& ns, const std::string& name, const std::string& revision);

 private:
  CatalogLookup FindByName(const std::string& name, const std::string& revision);
  CatalogLookup FindByRepo(const std::string& repo, const std::string& revision);
  std::optional<PinnedModel> Open(const std::string& dir);
  std::shared_ptr<const CatalogModel> Load(int dirfd, const std::string& dir);
  void Rescan();

  // One version of a file: device, inode, size, mtime.
  using FileId = std::tuple<dev_t, ino_t, off_t, time_t, long>;

  const std::vector<std::string> roots_;
  gswarm::Mutex mu_;
  std::map<FileId, std::shared_ptr<const CatalogModel>> manifests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> by_commit_ ABSL_GUARDED_BY(mu_);  // "org/repo@sha" -> dir
  std::set<std::string> repos_ ABSL_GUARDED_BY(mu_);  // Hub repos seen by the last scan
};

}  // namespace gswarm::client
