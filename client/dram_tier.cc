#include "client/dram_tier.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/disk_tier.h"
#include "client/memory_probe.h"
#include "client/model_manifest.h"
#include "common/model_metadata.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/units.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace fs = std::filesystem;
namespace {

constexpr const char* kStaging = ".staging";
constexpr const char* kPinnedMarker = "/.gswarm/pinned";
constexpr const char* kLastUsedMarker = "/.gswarm/last_used";

google::protobuf::Timestamp ToProto(const struct timespec& t) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(t.tv_sec);
  ts.set_nanos(static_cast<int32_t>(t.tv_nsec));
  return ts;
}

bool Before(const google::protobuf::Timestamp& a, const google::protobuf::Timestamp& b) {
  return a.seconds() != b.seconds() ? a.seconds() < b.seconds() : a.nanos() < b.nanos();
}

absl::Status CheckName(const std::string& name) {
  if (name.empty() || name.front() == '.' || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", name, "\" is not a model name (a plain directory name, not hidden)"));
  }
  return absl::OkStatus();
}

std::string RandomSuffix() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%08x%08x", rd(), rd());
  return buf;
}

// Every model under `root` with what the filesystem says about it; metadata when asked.
std::vector<v1::Replica> ScanRoot(const std::string& root, bool with_metadata) {
  std::vector<v1::Replica> replicas;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string path = entry.path().string();
    struct stat st;
    if (name.empty() || name.front() == '.' || ::lstat(path.c_str(), &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
      continue;
    }
    v1::Replica replica;
    replica.set_model_name(name);
    replica.set_tier("dram");
    replica.set_path(path);
    replica.set_state("ready");
    replica.set_size_bytes(ModelBytes(entry.path().string()));  // the model, not our bookkeeping
    // The copy that brought the model renamed it into place: the directory's ctime.
    *replica.mutable_loaded_at() = ToProto(st.st_ctim);
    struct stat marker;
    replica.set_pinned(::stat((path + kPinnedMarker).c_str(), &marker) == 0);
    *replica.mutable_last_used_at() = ::stat((path + kLastUsedMarker).c_str(), &marker) == 0
                                          ? ToProto(marker.st_mtim)
                                          : replica.loaded_at();
    absl::StatusOr<ModelManifest> manifest = ReadManifest(path);
    if (manifest.ok()) {
      replica.set_commit(manifest->commit);
      replica.set_source_url(manifest->source_url);
    }
    if (with_metadata) {
      absl::StatusOr<v1::ModelMetadata> metadata = common::ReadModelMetadata(path);
      if (metadata.ok()) {
        *replica.mutable_metadata() = *std::move(metadata);
      } else {
        spdlog::warn("model={} dram: metadata unreadable: {}", name, metadata.status().message());
      }
    }
    replicas.push_back(std::move(replica));
  }
  return replicas;
}

// Free bytes of the filesystem holding `path` (or its nearest existing parent).
uint64_t FsFreeBytes(fs::path path) {
  for (;;) {
    struct statvfs vfs;
    if (::statvfs(path.c_str(), &vfs) == 0) {
      return static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize);
    }
    if (!path.has_parent_path() || path.parent_path() == path) return 0;
    path = path.parent_path();
  }
}

}  // namespace

DramTier::DramTier(Options options) : options_(std::move(options)) {}

std::vector<v1::Replica> DramTier::Scan() const { return ScanRoot(options_.root, true); }

uint64_t DramTier::UsedBytes() const { return DirectoryBytes(options_.root); }

std::string DramTier::ModelDir(const std::string& name) const {
  return absl::StrCat(options_.root, "/", name);
}

std::string DramTier::StagingDir(const std::string& name) const {
  return absl::StrCat(options_.root, "/", kStaging, "/", name, ".", RandomSuffix());
}

absl::Status DramTier::SetPinned(const std::string& name, bool pinned) {
  RETURN_IF_ERROR(CheckName(name));
  const std::string dir = ModelDir(name);
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("model \"", name, "\" is not in DRAM on this node"));
  }
  const std::string marker = dir + kPinnedMarker;
  if (!pinned) {
    if (::unlink(marker.c_str()) != 0 && errno != ENOENT) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot unpin: removing ", marker));
    }
  } else {
    // mkdir, not MakeDirs: a model removed meanwhile must not come back as an empty directory.
    if (::mkdir((dir + "/.gswarm").c_str(), 0755) != 0 && errno != EEXIST) {
      if (errno == ENOENT) {
        return absl::NotFoundError(
            absl::StrCat("model \"", name, "\" is not in DRAM on this node"));
      }
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot pin: creating ", dir, "/.gswarm"));
    }
    const int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot pin: creating ", marker));
    ::close(fd);
  }
  spdlog::info("model={} dram: {}", name, pinned ? "pinned" : "unpinned");
  return absl::OkStatus();
}

absl::Status DramTier::Touch(const std::string& name) {
  RETURN_IF_ERROR(CheckName(name));
  const std::string dir = ModelDir(name);
  if (::mkdir((dir + "/.gswarm").c_str(), 0755) != 0 && errno != EEXIST) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("model \"", name, "\" is not in DRAM on this node"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", dir, "/.gswarm"));
  }
  const std::string marker = dir + kLastUsedMarker;
  const int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", marker));
  const int rc = ::futimens(fd, nullptr);  // mtime = now, also when the file already existed
  const int err = errno;
  ::close(fd);
  if (rc != 0) return absl::ErrnoToStatus(err, absl::StrCat("cannot touch ", marker));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> DramTier::PlanRoom(
    const std::string& name, uint64_t needed, bool evict,
    const std::set<std::string>& in_use) const {
  const uint64_t used = UsedBytes();
  const uint64_t budget = budget_bytes();
  const uint64_t budget_free = budget > used ? budget - used : 0;
  const uint64_t fs_free = FsFreeBytes(options_.root);
  const uint64_t free = std::min(budget_free, fs_free);
  if (needed <= free) return std::vector<std::string>();

  std::vector<v1::Replica> candidates;
  std::vector<std::string> pinned, busy;
  uint64_t evictable = 0;
  for (v1::Replica& replica : ScanRoot(options_.root, false)) {
    if (replica.model_name() == name) continue;
    if (replica.pinned()) {
      pinned.push_back(replica.model_name());
    } else if (in_use.count(replica.model_name()) > 0) {
      busy.push_back(replica.model_name());
    } else {
      evictable += replica.size_bytes();
      candidates.push_back(std::move(replica));
    }
  }
  std::string head = absl::StrCat("model \"", name, "\": DRAM budget ", common::FormatBytes(budget),
                                  " has ", common::FormatBytes(free), " free");
  if (fs_free < budget_free) {
    absl::StrAppend(&head, " (the tmpfs under ", options_.root, " has only ",
                    common::FormatBytes(fs_free), " free)");
  }
  absl::StrAppend(&head, ", model needs ", common::FormatBytes(needed));
  if (needed > budget) {
    return absl::ResourceExhaustedError(
        absl::StrCat(head, ", more than the whole budget (raise the agent's dram_cache_size)"));
  }
  if (free + evictable < needed) {
    std::string why;
    if (!pinned.empty()) absl::StrAppend(&why, "; pinned: ", absl::StrJoin(pinned, ", "));
    if (!busy.empty()) absl::StrAppend(&why, "; in use: ", absl::StrJoin(busy, ", "));
    return absl::ResourceExhaustedError(absl::StrCat(
        head, ", and evicting every model that is neither pinned nor in use would free only ",
        common::FormatBytes(evictable), why.empty() ? "" : absl::StrCat(" (", why.substr(2), ")")));
  }
  if (!evict) {
    return absl::ResourceExhaustedError(
        absl::StrCat(head, " (free space with DELETE /memory/dram/{name} or pass evict=true)"));
  }
  std::sort(candidates.begin(), candidates.end(), [](const v1::Replica& a, const v1::Replica& b) {
    if (Before(a.last_used_at(), b.last_used_at())) return true;
    if (Before(b.last_used_at(), a.last_used_at())) return false;
    return a.model_name() < b.model_name();
  });
  std::vector<std::string> victims;
  uint64_t room = free;
  for (const v1::Replica& replica : candidates) {
    if (room >= needed) break;
    victims.push_back(replica.model_name());
    room += replica.size_bytes();
  }
  return victims;
}

absl::Status DramTier::Remove(const std::string& name) {
  RETURN_IF_ERROR(CheckName(name));
  // Out of sight first, so that a scan never reports a half-deleted model.
  RETURN_IF_ERROR(
      common::RemoveOutOfSight(ModelDir(name), absl::StrCat(options_.root, "/", kStaging)));
  spdlog::info("model={} dram: removed", name);
  return absl::OkStatus();
}

absl::Status DramTier::Clear() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.root, ec)) {
    std::error_code remove_ec;
    fs::remove_all(entry.path(), remove_ec);
    if (remove_ec) {
      return absl::InternalError(
          absl::StrCat("removing ", entry.path().string(), ": ", remove_ec.message()));
    }
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::InternalError(absl::StrCat("listing ", options_.root, ": ", ec.message()));
  }
  spdlog::info("dram tier {} cleared", options_.root);
  return absl::OkStatus();
}

absl::Status DramTier::RemoveStaleStaging() {
  const std::string staging = absl::StrCat(options_.root, "/", kStaging);
  std::error_code ec;
  fs::remove_all(staging, ec);
  if (ec) return absl::InternalError(absl::StrCat("removing ", staging, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace gswarm::client
