#include "client/model_catalog.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/hf_source.h"
#include "client/sha256.h"
#include "common/model_name.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

constexpr char kManifestInDir[] = ".gswarm/manifest.json";
constexpr size_t kMaxCachedManifests = 512;

// A GSwarm model name: no '/', no leading '.', no "..".
bool IsModelName(absl::string_view name) { return common::ValidateModelName(name).ok(); }

bool IsFullSha(absl::string_view rev) {
  return rev.size() == 40 && std::all_of(rev.begin(), rev.end(), [](char c) {
           return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

CatalogModel Index(const std::string& dir, ModelManifest manifest) {
  CatalogModel info;
  info.dir = dir;
  info.manifest = std::move(manifest);
  const ModelManifest& m = info.manifest;
  for (size_t i = 0; i < m.files.size(); ++i) {
    const std::string& path = m.files[i].path();
    if (!CheckRelativePath(path).ok() || path == ".gswarm" || absl::StartsWith(path, ".gswarm/")) {
      spdlog::warn("data port: {} lists an unsafe path \"{}\"; not serving it", dir, path);
      continue;
    }
    info.files.emplace(path, i);
  }
  if (!m.commit.empty()) {
    info.sha = m.commit;
    absl::StatusOr<SourceSpec> source = ParseSource(m.source_url);
    if (source.ok() && source->kind == SourceSpec::kHub) info.hub_repo = source->repo;
  } else {
    Sha256 hasher;
    for (const auto& [path, i] : info.files) {
      std::string line =
          absl::StrCat(path, "\n", m.files[i].size_bytes(), "\n", m.files[i].sha256(), "\n");
      hasher.Update(line.data(), line.size());
    }
    info.sha = hasher.HexDigest().substr(0, 40);
  }
  return info;
}

}  // namespace

CatalogLookup ModelCatalog::Find(const std::string& ns, const std::string& name,
                                 const std::string& revision) {
  return ns == kLocalNamespace ? FindByName(name, revision)
                               : FindByRepo(absl::StrCat(ns, "/", name), revision);
}

CatalogLookup ModelCatalog::FindByName(const std::string& name, const std::string& revision) {
  CatalogLookup lookup;
  if (IsModelName(name)) {
    for (const std::string& root : roots_) {
      std::optional<PinnedModel> model = Open(absl::StrCat(root, "/", name));
      if (!model) continue;
      lookup.repo_known = true;
      // A later root may hold the name at the asked-for sha (the DRAM copy differs or is gone).
      if (!IsFullSha(revision) || model->info->sha == revision) {
        lookup.model = std::move(model);
        return lookup;
      }
    }
  }
  lookup.reason = lookup.repo_known ? absl::StrCat("revision ", revision, " of ", kLocalNamespace,
                                                   "/", name, " is not on this node")
                                    : absl::StrCat("model ", name, " is not on this node");
  return lookup;
}

CatalogLookup ModelCatalog::FindByRepo(const std::string& repo, const std::string& revision) {
  CatalogLookup lookup;
  const std::string key = absl::StrCat(repo, "@", revision);
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) Rescan();  // a miss: models may have arrived since the last scan
    std::optional<std::string> dir;
    {
      gswarm::MutexLock lock(&mu_);
      auto it = by_commit_.find(key);
      if (it != by_commit_.end()) dir = it->second;
    }
    if (!dir) continue;
    std::optional<PinnedModel> model = Open(*dir);
    if (model && model->info->hub_repo == repo && model->info->sha == revision) {
      lookup.model = std::move(model);
      return lookup;
    }
  }
  gswarm::MutexLock lock(&mu_);
  lookup.repo_known = repos_.count(repo) > 0;
  lookup.reason = lookup.repo_known
                      ? absl::StrCat("commit ", revision, " of ", repo,
                                     " is not on this node (peers serve Hub repos by commit sha)")
                      : absl::StrCat("no model from hf://", repo, " on this node");
  return lookup;
}

std::optional<PinnedModel> ModelCatalog::Open(const std::string& dir) {
  auto fd =
      std::make_shared<const OwnedFd>(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd->get() < 0) return std::nullopt;
  std::shared_ptr<const CatalogModel> info = Load(fd->get(), dir);
  if (!info) return std::nullopt;
  return PinnedModel{std::move(fd), std::move(info)};
}

std::shared_ptr<const CatalogModel> ModelCatalog::Load(int dirfd, const std::string& dir) {
  auto id_of = [](const struct stat& st) {
    return FileId{st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
  };
  struct stat before;
  if (::fstatat(dirfd, kManifestInDir, &before, 0) != 0 || !S_ISREG(before.st_mode)) {
    return nullptr;
  }
  const FileId id = id_of(before);
  {
    gswarm::MutexLock lock(&mu_);
    auto it = manifests_.find(id);
    if (it != manifests_.end()) return it->second;
  }
  // Through the descriptor: the directory pinned, even if `dir` was replaced meanwhile.
  absl::StatusOr<ModelManifest> manifest = ReadManifest(absl::StrCat("/proc/self/fd/", dirfd));
  if (!manifest.ok()) {
    spdlog::warn("data port: not serving {}: {}", dir, manifest.status().message());
    return nullptr;
  }
  auto info = std::make_shared<const CatalogModel>(Index(dir, *std::move(manifest)));
  struct stat after;
  if (::fstatat(dirfd, kManifestInDir, &after, 0) == 0 && id_of(after) == id) {
    gswarm::MutexLock lock(&mu_);
    if (manifests_.size() >= kMaxCachedManifests) manifests_.clear();
    manifests_[id] = info;
  }
  return info;
}

void ModelCatalog::Rescan() {
  std::map<std::string, std::string> by_commit;
  std::set<std::string> repos;
  for (const std::string& root : roots_) {
    DIR* d = ::opendir(root.c_str());
    if (d == nullptr) continue;
    while (const dirent* entry = ::readdir(d)) {
      if (!IsModelName(entry->d_name)) continue;  // also skips .gswarm-staging
      std::string dir = absl::StrCat(root, "/", entry->d_name);
      std::optional<PinnedModel> model = Open(dir);
      if (!model || model->info->hub_repo.empty()) continue;
      repos.insert(model->info->hub_repo);
      by_commit.emplace(absl::StrCat(model->info->hub_repo, "@", model->info->sha), dir);
    }
    ::closedir(d);
  }
  gswarm::MutexLock lock(&mu_);
  by_commit_ = std::move(by_commit);
  repos_ = std::move(repos);
}

}  // namespace gswarm::client
