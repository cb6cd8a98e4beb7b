#include "client/tier_copy_plan.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/sha256.h"
#include "common/paths.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client::tier_copy {
namespace fs = std::filesystem;
namespace {

// Directory symlinks can form loops; nothing real nests deeper.
constexpr int kMaxDepth = 64;

// Lists regular files under `dir`, following symlinks that stay beneath `root` (the model's,
// ModelFilesRoot), into `out`; one that leads out of it is an error. At the top level only
// .gswarm/manifest.json is taken from .gswarm/.
absl::Status ListFiles(const fs::path& dir, const std::string& rel_dir, int depth,
                       const std::string& root, std::set<std::pair<dev_t, ino_t>>& seen,
                       std::vector<FileJob>& out) {
  if (depth > kMaxDepth) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir.string(), ": directories nest deeper than ", kMaxDepth, " (a link loop?)"));
  }
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const std::string rel = rel_dir.empty() ? name : absl::StrCat(rel_dir, "/", name);
    const std::string path = it->path().string();
    if (rel_dir == ".gswarm" && depth == 1 && name != "manifest.json") continue;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("source file ", path, " (a broken link?)"));
    }
    std::error_code link_ec;
    if (it->is_symlink(link_ec) && !common::ResolvesBeneath(path, root)) {
      return absl::FailedPreconditionError(
          absl::StrCat("source file ", path, " links out of the model's folder (", root,
                       "): refusing to copy it; remove the link or replace it with the file"));
    }
    if (S_ISDIR(st.st_mode)) {
      if (!seen.insert({st.st_dev, st.st_ino}).second) continue;  // a link back up the tree
      RETURN_IF_ERROR(ListFiles(it->path(), rel, depth + 1, root, seen, out));
    } else if (S_ISREG(st.st_mode)) {
      FileJob job;
      job.rel = rel;
      job.src = path;
      job.size = static_cast<uint64_t>(st.st_size);
      out.push_back(std::move(job));
    }
  }
  if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot list ", dir.string()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<ModelManifest>> PlanJobs(const std::string& source_dir, bool verify,
                                                      std::vector<FileJob>& jobs) {
  struct stat st;
  if (::stat(source_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("source ", source_dir, " is not a directory"));
  }
  std::set<std::pair<dev_t, ino_t>> seen = {{st.st_dev, st.st_ino}};
  RETURN_IF_ERROR(ListFiles(source_dir, "", 0, common::ModelFilesRoot(source_dir), seen, jobs));
  absl::StatusOr<ModelManifest> manifest = ReadManifest(source_dir);
  if (!manifest.ok() && !absl::IsNotFound(manifest.status())) return manifest.status();
  if (manifest.ok()) {
    std::map<std::string, FileJob*> by_rel;
    for (FileJob& job : jobs) by_rel[job.rel] = &job;
    for (const v1::ModelFile& file : manifest->files) {
      auto it = by_rel.find(file.path());
      if (it == by_rel.end()) {
        return absl::NotFoundError(absl::StrCat("source ", source_dir, " lacks ", file.path(),
                                                ", which its manifest lists"));
      }
      if (it->second->size != file.size_bytes()) {
        return absl::DataLossError(absl::StrCat("source file ", it->second->src, " is ",
                                                it->second->size, " bytes, but its manifest says ",
                                                file.size_bytes()));
      }
      FileJob& job = *it->second;
      job.verify = verify;
      job.xxh3 = IsXxh3Digest(file.xxh3_128()) ? file.xxh3_128() : "";
      job.sha256 = file.sha256();
    }
  }
  std::stable_sort(jobs.begin(), jobs.end(),
                   [](const FileJob& a, const FileJob& b) { return a.size > b.size; });
  if (!manifest.ok()) return std::nullopt;
  return *std::move(manifest);
}

absl::StatusOr<uint32_t> RecordDigests(const std::vector<FileJob>& jobs, ModelManifest& manifest,
                                       const std::string& source_dir,
                                       const std::string& staging_dir) {
  std::map<std::string, const FileJob*> by_rel;
  for (const FileJob& job : jobs) by_rel[job.rel] = &job;
  uint32_t recorded = 0;
  for (v1::ModelFile& file : manifest.files) {
    auto it = by_rel.find(file.path());
    if (it == by_rel.end() || it->second->computed_xxh3.empty()) continue;
    file.set_xxh3_128(it->second->computed_xxh3);
    ++recorded;
  }
  if (recorded == 0) return recorded;
  RETURN_IF_ERROR(WriteManifest(staging_dir, manifest));
  if (absl::Status source = WriteManifest(source_dir, manifest); !source.ok()) {
    // The copy is sound; only the next one from this source will compute them again.
    spdlog::warn("copy: cannot record xxh3 digests in {}'s manifest: {}", source_dir,
                 source.message());
  }
  return recorded;
}

}  // namespace gswarm::client::tier_copy
