#include "client/disk_tier.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "common/model_metadata.h"
#include "common/paths.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace fs = std::filesystem;
namespace {

constexpr absl::string_view kStaging = ".gswarm-staging";

bool LooksLikeModel(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json" || absl::EndsWith(name, ".safetensors") ||
        absl::EndsWith(name, ".gguf") || absl::EndsWith(name, ".bin") ||
        absl::EndsWith(name, ".pt") || absl::EndsWith(name, ".pth")) {
      return true;
    }
  }
  return false;
}

}  // namespace

uint64_t ModelBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename() == ".gswarm") {
      it.disable_recursion_pending();
      continue;
    }
    std::error_code size_ec;
    if (fs::is_regular_file(it->path(), size_ec)) total += fs::file_size(it->path(), size_ec);
  }
  return total;
}

namespace {

void FillMetadata(v1::Replica& replica) {
  absl::StatusOr<v1::ModelMetadata> metadata = common::ReadModelMetadata(replica.path());
  if (metadata.ok()) {
    *replica.mutable_metadata() = *std::move(metadata);
  } else {
    spdlog::warn("model={}: metadata unreadable: {}", replica.model_name(),
                 metadata.status().message());
  }
}

}  // namespace

std::string HfHubDir(const std::string& configured_cache_dir) {
  if (const char* hub = std::getenv("HF_HUB_CACHE"); hub != nullptr && *hub != '\0') {
    return common::ExpandUser(hub);
  }
  if (const char* home = std::getenv("HF_HOME"); home != nullptr && *home != '\0') {
    return common::ExpandUser(home) + "/hub";
  }
  return common::ExpandUser(configured_cache_dir) + "/hub";
}

DiskTier::DiskTier(Options options) : options_(std::move(options)) {}

std::string DiskTier::CustomListPath() const {
  return options_.model_cache_dir + "/.gswarm-custom-locations";
}

std::vector<DiskPlace> DiskTier::Places() const {
  std::vector<DiskPlace> places = {
      {"primary", options_.model_cache_dir, options_.primary_high_watermark}};
  for (const DiskPlace& place : options_.locations) places.push_back(place);
  absl::StatusOr<std::string> custom = common::ReadFile(CustomListPath());
  if (custom.ok()) {
    for (absl::string_view line : absl::StrSplit(*custom, '\n', absl::SkipWhitespace())) {
      const std::string root(absl::StripAsciiWhitespace(line));
      if (root.empty() || root.front() != '/') continue;
      if (std::none_of(places.begin(), places.end(),
                       [&](const DiskPlace& p) { return p.root == root; })) {
        places.push_back({"custom", root, 0.9});
      }
    }
  }
  return places;
}

absl::StatusOr<DiskPlace> DiskTier::Place(const std::string& location,
                                          const std::string& custom_path) const {
  std::vector<DiskPlace> places = Places();
  if (location == "custom") {
    std::string root = fs::path(common::ExpandUser(custom_path)).lexically_normal().string();
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    if (root.empty() || root.front() != '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "cache_location \"custom\" needs an absolute cache_path, got \"", custom_path, "\""));
    }
    for (const DiskPlace& place : places) {
      if (place.root == root) return place;
    }
    gswarm::MutexLock lock(&custom_mu_);
    std::string list;
    for (const DiskPlace& place : Places()) {
      if (place.name == "custom") absl::StrAppend(&list, place.root, "\n");
    }
    absl::StrAppend(&list, root, "\n");
    RETURN_IF_ERROR(common::MakeDirs(options_.model_cache_dir));
    RETURN_IF_ERROR(common::WriteFileAtomically(CustomListPath(), list));
    spdlog::info("disk location custom: {} (scanned for models from now on)", root);
    return DiskPlace{"custom", root, 0.9};
  }
  const std::string name = location.empty() ? "primary" : location;
  std::vector<std::string> known;
  for (const DiskPlace& place : places) {
    if (place.name == name) return place;
    if (place.name != "custom") known.push_back(place.name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "no disk location \"", name, "\" on this node (configured: ", absl::StrJoin(known, ", "),
      "; add it under client.disk_locations, or use \"custom\" with a cache_path)"));
}

std::optional<DiskPlace> DiskTier::PlaceOf(const std::string& path) const {
  for (const DiskPlace& place : Places()) {
    if (absl::StartsWith(path, place.root + "/")) return place;
  }
  return std::nullopt;
}

std::string DiskTier::ModelDir(const DiskPlace& place, const std::string& name) const {
  return absl::StrCat(place.root, "/", name);
}

std::string DiskTier::StagingDir(const DiskPlace& place, const std::string& name) const {
  return absl::StrCat(place.root, "/", kStaging, "/", name);
}

std::string DiskTier::ModelDir(const std::string& name) const {
  std::error_code ec;
  const std::vector<DiskPlace> places = Places();
  for (const DiskPlace& place : places) {
    if (fs::is_directory(ModelDir(place, name), ec)) return ModelDir(place, name);
  }
  return ModelDir(places.front(), name);
}

std::string DiskTier::StagingDir(const std::string& name) const {
  const std::string dir = ModelDir(name);
  return StagingDir(PlaceOf(dir).value_or(Places().front()), name);
}

void DiskTier::RemoveLeftovers() const {
  for (const DiskPlace& place : Places()) {
    common::RemoveLeftoverTrash(absl::StrCat(place.root, "/", kStaging));
  }
}

std::vector<v1::Replica> DiskTier::Scan(bool include_hf_cache) const {
  std::vector<v1::Replica> replicas;
  for (const DiskPlace& place : Places()) {
    for (v1::Replica& replica : ScanPlace(place)) replicas.push_back(std::move(replica));
  }
  if (!include_hf_cache) return replicas;
  for (v1::Replica& replica : ScanHfCache()) replicas.push_back(std::move(replica));
  return replicas;
}

std::vector<v1::Replica> DiskTier::ScanPlace(const DiskPlace& place) const {
  std::vector<v1::Replica> replicas;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(place.root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.front() == '.' || !entry.is_directory(ec)) continue;
    v1::Replica replica;
    replica.set_model_name(name);
    replica.set_tier("disk");
    replica.set_path(entry.path().string());
    replica.set_state("ready");
    replica.set_location(place.name);
    absl::StatusOr<ModelManifest> manifest = ReadManifest(entry.path().string());
    if (manifest.ok()) {
      replica.set_commit(manifest->commit);
      replica.set_source_url(manifest->source_url);
      uint64_t size = 0;
      for (const v1::ModelFile& file : manifest->files) size += file.size_bytes();
      replica.set_size_bytes(size);
    } else if (LooksLikeModel(entry.path())) {
      // A folder someone put here by hand: registered as it is.
      replica.set_source_url(absl::StrCat("file://", entry.path().string()));
      replica.set_size_bytes(ModelBytes(entry.path().string()));
    } else {
      continue;
    }
    FillMetadata(replica);
    replicas.push_back(std::move(replica));
  }
  return replicas;
}

std::vector<v1::Replica> DiskTier::ScanHfCache() const {
  std::vector<v1::Replica> found;
  if (options_.hf_hub_dir.empty()) return found;
  // repo name -> orgs, to tell when a short name is ambiguous.
  std::map<std::string, int> repo_names;
  struct Snapshot {
    std::string org, repo, commit;
    fs::path path;
  };
  std::vector<Snapshot> snapshots;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.hf_hub_dir, ec)) {
    const std::string name = entry.path().filename().string();  // keep it alive for the view
    absl::string_view dir = name;
    if (!absl::ConsumePrefix(&dir, "models--")) continue;
    const size_t sep = dir.find("--");
    if (sep == absl::string_view::npos) continue;
    Snapshot snapshot{std::string(dir.substr(0, sep)), std::string(dir.substr(sep + 2)), "", {}};
    absl::StatusOr<std::string> ref = common::ReadFile((entry.path() / "refs" / "main").string());
    if (!ref.ok()) continue;  // only snapshots a ref points at are complete
    snapshot.commit = std::string(absl::StripAsciiWhitespace(*ref));
    snapshot.path = entry.path() / "snapshots" / snapshot.commit;
    if (!fs::is_directory(snapshot.path, ec) || !LooksLikeModel(snapshot.path)) continue;
    ++repo_names[snapshot.repo];
    snapshots.push_back(std::move(snapshot));
  }
  for (const Snapshot& snapshot : snapshots) {
    v1::Replica replica;
    const bool ambiguous = repo_names[snapshot.repo] > 1;
    replica.set_model_name(ambiguous ? absl::StrCat(snapshot.org, "--", snapshot.repo)
                                     : snapshot.repo);
    replica.set_tier("disk");
    replica.set_path(snapshot.path.string());
    replica.set_state("ready");
    replica.set_in_place(true);
    replica.set_commit(snapshot.commit);
    replica.set_source_url(absl::StrCat("hf://", snapshot.org, "/", snapshot.repo));
    replica.set_size_bytes(ModelBytes(snapshot.path.string()));
    FillMetadata(replica);
    found.push_back(std::move(replica));
  }
  return found;
}

absl::StatusOr<std::string> DiskTier::Locate(const std::string& name) const {
  std::error_code ec;
  if (const std::string dir = ModelDir(name); fs::is_directory(dir, ec)) return dir;
  for (const v1::Replica& replica : ScanHfCache()) {
    if (replica.model_name() == name) return replica.path();
  }
  return absl::NotFoundError(absl::StrCat("model \"", name, "\" is not on this node's disk"));
}

absl::Status DiskTier::Remove(const std::string& name) const {
  for (const DiskPlace& place : Places()) {
    // Out of sight first, so that a scan (or an agent killed mid-way) never shows a half-deleted
    // model.
    RETURN_IF_ERROR(
        common::RemoveOutOfSight(ModelDir(place, name), absl::StrCat(place.root, "/", kStaging)));
    std::error_code ec;
    // The staging lock file too: the downloader keeps it beside the staging directory.
    for (const std::string& dir : {StagingDir(place, name), StagingDir(place, name) + ".lock"}) {
      fs::remove_all(dir, ec);
      if (ec) {
        return absl::InternalError(absl::StrCat("removing ", dir, ": ", ec.message()));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> DiskTier::Validate(const std::string& name, bool full,
                                                            uint32_t* files_checked) const {
  return ValidateModelDir(ModelDir(name), name, "disk", full, files_checked);
}

namespace {

// "" when the file at `path` matches what `file` records (read once, for whichever digests
// are checked), else what differs.
std::string CheckFileDigests(const std::string& path, const v1::ModelFile& file, bool full) {
  // Without --full the fast digest where there is one; SHA-256 for a file recorded without it
  // (an older download); with --full SHA-256, and the fast digest in the same pass.
  const bool by_xxh3 = !file.xxh3_128().empty();
  const bool by_sha256 = !file.sha256().empty() && (full || !by_xxh3);
  if (!by_xxh3 && !by_sha256) return "";
  Sha256 sha256;
  Xxh3 xxh3;
  absl::StatusOr<uint64_t> read =
      HashFileRange(path, by_sha256 ? &sha256 : nullptr, by_xxh3 ? &xxh3 : nullptr);
  if (!read.ok()) return absl::StrCat("unreadable: ", read.status().message());
  if (by_sha256) {
    const std::string digest = sha256.HexDigest();
    if (digest != file.sha256()) {
      return absl::StrCat("sha256 ", digest, ", expected ", file.sha256());
    }
  }
  if (by_xxh3) {
    const std::string digest = xxh3.HexDigest();
    if (digest != file.xxh3_128()) {
      return absl::StrCat("xxh3_128 ", digest, ", expected ", file.xxh3_128());
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ValidateModelDir(const std::string& dir,
                                                          const std::string& name,
                                                          const std::string& tier, bool full,
                                                          uint32_t* files_checked) {
  *files_checked = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model \"", name, "\" is not on this node's ", tier, " tier"));
  }
  absl::StatusOr<ModelManifest> manifest = ReadManifest(dir);
  if (!manifest.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("model \"", name,
                                                      "\" has no manifest to check against (",
                                                      manifest.status().message(), ")"));
  }
  std::vector<std::string> problems;
  for (const v1::ModelFile& file : manifest->files) {
    const fs::path path = fs::path(dir) / file.path();
    ++*files_checked;
    std::error_code size_ec;
    const uint64_t size = fs::file_size(path, size_ec);
    if (size_ec) {
      problems.push_back(absl::StrCat(file.path(), ": missing"));
      continue;
    }
    if (size != file.size_bytes()) {
      problems.push_back(
          absl::StrCat(file.path(), ": size ", size, ", expected ", file.size_bytes()));
      continue;
    }
    std::string problem = CheckFileDigests(path.string(), file, full);
    if (!problem.empty()) problems.push_back(absl::StrCat(file.path(), ": ", problem));
  }
  return problems;
}

}  // namespace gswarm::client
