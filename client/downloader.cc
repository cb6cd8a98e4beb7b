#include "client/downloader.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/download_plan.h"
#include "client/file_fetcher.h"
#include "client/memory_probe.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "client/striped_fetch.h"
#include "common/fd.h"
#include "common/mutex.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/units.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

std::string Parent(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

absl::Status ExistsError(const DownloadRequest& req) {
  return absl::FailedPreconditionError(absl::StrCat("model directory ", req.target_dir,
                                                    " already exists: remove it first (gswarm rm ",
                                                    req.model_name, ")"));
}

DownloadResult ResultFromManifest(const ModelManifest& m) {
  DownloadResult result;
  result.commit = m.commit;
  result.files = m.files;
  for (const v1::ModelFile& f : m.files) result.size_bytes += f.size_bytes();
  return result;
}

// target_dir exists: success when it already holds what was asked for, else FAILED_PRECONDITION.
absl::StatusOr<DownloadResult> UseExisting(const DownloadRequest& req, const SourceSpec& src) {
  absl::StatusOr<ModelManifest> m = ReadManifest(req.target_dir);
  if (!m.ok()) return ExistsError(req);
  if (src.kind != SourceSpec::kHub) {
    if (m->source_url != req.source_url) return ExistsError(req);
    return ResultFromManifest(*m);
  }
  absl::StatusOr<SourceSpec> had = ParseSource(m->source_url, m->revision);
  if (!had.ok() || had->kind != SourceSpec::kHub || had->repo != src.repo) return ExistsError(req);
  bool same_revision = m->revision == src.revision || m->commit == src.revision;
  if (req.hub.offline) {
    if (!same_revision) return ExistsError(req);
    return ResultFromManifest(*m);
  }
  absl::StatusOr<RepoListing> listing = ListRepo(req.hub, src.repo, src.revision);
  if (!listing.ok() && absl::IsUnavailable(listing.status()) && same_revision) {
    spdlog::warn("model={} {}; using the copy already on disk", req.model_name,
                 listing.status().message());
    return ResultFromManifest(*m);
  }
  RETURN_IF_ERROR(listing.status());
  if (listing->commit != m->commit) return ExistsError(req);
  return ResultFromManifest(*m);
}

// Holds an exclusive flock on <staging>.lock for the duration of a Run.
class StagingLock {
 public:
  static absl::StatusOr<std::unique_ptr<StagingLock>> Acquire(const DownloadRequest& req) {
    std::string path = req.staging_dir + ".lock";
    RETURN_IF_ERROR(common::MakeDirs(Parent(path)));
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return absl::FailedPreconditionError(
            absl::StrCat("model ", req.model_name, " is already being downloaded into ",
                         req.staging_dir, ": wait for that download, or cancel it"));
      }
      return absl::ErrnoToStatus(err, absl::StrCat("cannot lock ", path));
    }
    return std::unique_ptr<StagingLock>(new StagingLock(fd, path, req.staging_dir));
  }
  // Removes the lock file (while still holding it) when there is no staging directory to
  // guard: after success, or a failure before any file was written.
  ~StagingLock() {
    struct stat st;
    if (::lstat(staging_.c_str(), &st) != 0) ::unlink(path_.c_str());
    ::close(fd_);
  }

 private:
  StagingLock(int fd, std::string path, std::string staging)
      : fd_(fd), path_(std::move(path)), staging_(std::move(staging)) {}
  int fd_;
  std::string path_;
  std::string staging_;
};

// Progress shared by the worker threads; calls the caller's callback one at a time.
class ProgressTracker {
 public:
  ProgressTracker(std::function<void(const DownloadProgress&)> fn, DownloadProgress initial)
      : fn_(std::move(fn)), p_(initial) {}

  void Bytes(int64_t on_disk, uint64_t fetched) {
    gswarm::MutexLock lock(&mu_);
    p_.bytes_done = static_cast<uint64_t>(static_cast<int64_t>(p_.bytes_done) + on_disk);
    p_.bytes_fetched_this_run += fetched;
    if (fn_) fn_(p_);
  }
  void FileDone() {
    gswarm::MutexLock lock(&mu_);
    ++p_.files_done;
    if (fn_) fn_(p_);
  }
  DownloadProgress Snapshot() {
    gswarm::MutexLock lock(&mu_);
    return p_;
  }

 private:
  std::function<void(const DownloadProgress&)> fn_;
  gswarm::Mutex mu_;
  DownloadProgress p_ ABSL_GUARDED_BY(mu_);
};

// Copies a local file into staging, hashing it on the way.
absl::StatusOr<FetchedFile> CopyLocal(const PlannedFile& f, const std::string& final_path,
                                      ProgressTracker& progress, const FetchContext& ctx) {
  std::string part = final_path + ".part";
  int in = ::open(f.local_source.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", f.local_source));
  int out = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    ::close(in);
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", part));
  }
  ::posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buf(4 << 20);
  Sha256 hasher;
  Xxh3 xxh3;
  uint64_t total = 0;
  absl::Status status;
  while (status.ok()) {
    if ((ctx.cancel && ctx.cancel->load()) || (ctx.stop && ctx.stop->load())) {
      status = absl::CancelledError(absl::StrCat("import of ", f.path, " stopped"));
      break;
    }
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) status = absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", f.local_source));
    if (n <= 0) break;
    for (ssize_t done = 0; status.ok() && done < n;) {
      ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno != EINTR)
        status = absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", part));
      if (w > 0) done += w;
    }
    hasher.Update(buf.data(), static_cast<size_t>(n));
    xxh3.Update(buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
    progress.Bytes(n, static_cast<uint64_t>(n));
  }
  if (status.ok() && total != *f.size) {
    status = absl::FailedPreconditionError(
        absl::StrCat(f.local_source, " changed while it was imported (", *f.size, " bytes, then ",
                     total, "): import again once it is stable"));
  }
  if (status.ok() && ::fsync(out) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", part));
  }
  ::close(in);
  ::close(out);
  if (!status.ok()) {
    progress.Bytes(-static_cast<int64_t>(total), 0);
    ::unlink(part.c_str());
    return status;
  }
  if (::rename(part.c_str(), final_path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", part));
  }
  return FetchedFile{total, hasher.HexDigest(), xxh3.HexDigest()};
}

void RemoveSidecars(const std::string& final_path) {
  for (const char* suffix : kFetchSidecars) ::unlink((final_path + suffix).c_str());
}

// The sources a big file of an hf:// download is striped over (see DownloadRequest): empty when
// it is fetched over one connection.
std::vector<StripeSource> StripeSources(const DownloadRequest& req, const SourceSpec& src,
                                        const PlannedFile& f) {
  std::vector<StripeSource> sources;
  const bool striping =
      !req.more_peers.empty() || req.fallback.has_value() || req.connections_per_source > 1;
  if (src.kind != SourceSpec::kHub || !striping || !f.size || *f.size < req.stripe_min_bytes ||
      !absl::StartsWith(f.url, req.hub.endpoint)) {
    return sources;
  }
  const std::string rest = f.url.substr(req.hub.endpoint.size());  // /<repo>/resolve/<commit>/..
  const int connections = std::max(1, req.connections_per_source);
  // A peer on the cluster's network that sends nothing for 10 s is stuck, not slow.
  auto add = [&](const HubOptions& hub, std::string name, bool fallback) {
    const std::string url = hub.endpoint + rest;
    const absl::Duration stall = req.from_peer && !fallback
                                     ? std::min(absl::Seconds(10), hub.low_speed_time)
                                     : hub.low_speed_time;
    sources.push_back(
        {std::move(name), url, hub.AuthHeadersFor(url), connections, fallback, stall});
  };
  const char* kind = req.from_peer ? "peer " : "";
  add(req.hub, absl::StrCat(kind, req.hub.endpoint), false);
  for (const std::string& peer : req.more_peers) {
    HubOptions other = req.hub;
    other.endpoint = peer;
    add(other, absl::StrCat(kind, peer), false);
  }
  if (req.fallback.has_value())
    add(*req.fallback, absl::StrCat("the Hub ", req.fallback->endpoint), true);
  return sources;
}

}  // namespace

Downloader::Downloader(Options options) : options_(std::move(options)) {
  if (!options_.free_space) {
    options_.free_space = [](const std::string& dir) -> absl::StatusOr<uint64_t> {
      ASSIGN_OR_RETURN(FilesystemFigures fs, StatFilesystem(dir));
      return fs.free_bytes;
    };
  }
}

absl::StatusOr<DownloadResult> Downloader::Run(
    const DownloadRequest& req, std::function<void(const DownloadProgress&)> on_progress,
    const std::atomic<bool>* cancel) const {
  ASSIGN_OR_RETURN(SourceSpec src, ParseSource(req.source_url, req.revision));
  if (req.target_dir.empty() || req.target_dir[0] != '/' || req.staging_dir.empty() ||
      req.staging_dir[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("download of ", req.model_name,
                                                   ": target and staging directories must be "
                                                   "absolute paths"));
  }
  if (Exists(req.target_dir)) return UseExisting(req, src);
  if (req.hub.offline && src.kind != SourceSpec::kLocalDir) {
    return absl::FailedPreconditionError(absl::StrCat(
        "HF_HUB_OFFLINE is set and ", req.model_name,
        " is not in the cache: unset HF_HUB_OFFLINE or download it once while online"));
  }

  ASSIGN_OR_RETURN(Plan plan, MakePlan(req, src));
  ASSIGN_OR_RETURN(std::unique_ptr<StagingLock> lock, StagingLock::Acquire(req));
  if (Exists(req.target_dir)) return UseExisting(req, src);  // a concurrent Run finished first
  bool reuse = InspectStaging(req, src, plan);

  // Disk space, before any byte is written.
  DownloadProgress initial;
  uint64_t needed = 0;
  for (const PlannedFile& f : plan.files) {
    initial.bytes_total += f.size.value_or(0);
    initial.bytes_done += f.existing;
    initial.files_done += f.complete ? 1 : 0;
    if (f.size && *f.size > f.existing) needed += *f.size - f.existing;
  }
  initial.files_total = static_cast<uint32_t>(plan.files.size());
  std::shared_ptr<void> reserved;
  if (req.reserve) {
    ASSIGN_OR_RETURN(reserved, req.reserve(needed));
  } else {
    ASSIGN_OR_RETURN(uint64_t free_bytes, options_.free_space(req.staging_dir));
    if (needed > free_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "not enough disk space for ", req.model_name, " in ", Parent(req.target_dir), ": needs ",
          common::FormatBytes(needed), ", ", common::FormatBytes(free_bytes), " free"));
    }
  }

  // Staging: start afresh unless it holds this very source and commit.
  if (!reuse) {
    spdlog::info("model={} discarding staging {} (another source or commit)", req.model_name,
                 req.staging_dir);
    std::error_code ec;
    fs::remove_all(req.staging_dir, ec);
    if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot remove ", req.staging_dir));
  }
  RETURN_IF_ERROR(common::MakeDirs(absl::StrCat(req.staging_dir, "/.gswarm")));
  RETURN_IF_ERROR(
      common::WriteFileAtomically(StagingStatePath(req.staging_dir), StagingState(src, plan)));
  std::set<std::string> dirs = {req.staging_dir};
  for (const PlannedFile& f : plan.files) {
    std::string final_path = absl::StrCat(req.staging_dir, "/", f.path);
    dirs.insert(Parent(final_path));
    RETURN_IF_ERROR(common::MakeDirs(Parent(final_path)));
    if (!f.complete && Exists(final_path)) ::unlink(final_path.c_str());  // wrong size
    if (f.existing == 0) ::unlink((final_path + ".part").c_str());        // not to be continued
  }

  spdlog::info("model={} downloading {} files ({}, {} already on disk) from {}", req.model_name,
               plan.files.size(), common::FormatBytes(initial.bytes_total),
               common::FormatBytes(initial.bytes_done), req.source_url);
  ProgressTracker progress(std::move(on_progress), initial);
  progress.Bytes(0, 0);
  std::atomic<bool> stop{false};
  FetchContext ctx;
  ctx.hub = &req.hub;
  ctx.cancel = cancel;
  ctx.stop = &stop;
  ctx.on_bytes = [&progress](int64_t on_disk, uint64_t fetched) {
    progress.Bytes(on_disk, fetched);
  };
  ctx.http_error = [&](const FetchTarget& target, const HttpResponse& r) {
    if (src.kind == SourceSpec::kHub) {
      return HubError(req.hub, src.repo, src.revision, target.display_name, r.status,
                      r.Header("x-error-code"), r.Header("x-error-message"));
    }
    return HttpsError(target.url, r.status);
  };

  std::vector<v1::ModelFile> done(plan.files.size());
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> reread{0};
  std::atomic<uint64_t> from_fallback{0};
  gswarm::Mutex error_mu;
  absl::Status error;
  auto fail = [&](absl::Status s) {
    gswarm::MutexLock l(&error_mu);
    if (error.ok() || (absl::IsCancelled(error) && !absl::IsCancelled(s))) error = std::move(s);
    stop = true;
  };
  auto worker = [&] {
    std::unique_ptr<FileFetcher> fetcher;
    for (size_t i; (i = next++) < plan.files.size() && !stop;) {
      const PlannedFile& f = plan.files[i];
      std::string final_path = absl::StrCat(req.staging_dir, "/", f.path);
      absl::StatusOr<FetchedFile> got;
      if (cancel != nullptr && cancel->load()) {
        got = absl::CancelledError("cancelled");
      } else if (f.complete) {
        // Verified before its rename; its digests are computed again from the file where the
        // listing does not give them.
        FetchedFile whole{f.existing, f.sha256, f.xxh3};
        Sha256 sha256;
        Xxh3 xxh3;
        absl::StatusOr<uint64_t> read =
            HashFileRange(final_path, whole.sha256.empty() ? &sha256 : nullptr,
                          whole.xxh3_128.empty() ? &xxh3 : nullptr);
        if (read.ok()) {
          if (whole.sha256.empty()) whole.sha256 = sha256.HexDigest();
          if (whole.xxh3_128.empty()) whole.xxh3_128 = xxh3.HexDigest();
          got = whole;
        } else {
          got = read.status();
        }
      } else if (src.kind == SourceSpec::kLocalDir) {
        got = CopyLocal(f, final_path, progress, ctx);
      } else {
        if (!fetcher) {
          absl::StatusOr<std::unique_ptr<FileFetcher>> created = FileFetcher::Create();
          if (!created.ok()) return fail(created.status());
          fetcher = *std::move(created);
        }
        const FetchTarget target{f.url, f.path, final_path, f.size, f.sha256, f.headers, f.xxh3};
        const std::vector<StripeSource> sources = StripeSources(req, src, f);
        if (!sources.empty()) {
          absl::StatusOr<StripedResult> striped =
              FetchStriped(target, sources, ctx, req.stripe_chunk_bytes);
          if (striped.ok()) {
            from_fallback += striped->bytes_from_fallback;
            got = striped->file;
          } else {
            got = striped.status();
          }
        } else {
          got = fetcher->Fetch(target, ctx);
        }
      }
      if (!got.ok()) return fail(got.status());
      RemoveSidecars(final_path);
      done[i].set_path(f.path);
      done[i].set_size_bytes(got->size);
      done[i].set_sha256(got->sha256);
      done[i].set_xxh3_128(got->xxh3_128);
      reread += got->bytes_reread;
      if (!f.complete) progress.FileDone();
    }
  };
  size_t n_workers =
      std::max<size_t>(1, std::min<size_t>(std::max(1, req.parallel_files), plan.files.size()));
  std::vector<std::thread> workers;
  for (size_t i = 0; i < n_workers; ++i) workers.emplace_back(worker);
  for (std::thread& t : workers) t.join();
  DownloadProgress final_progress = progress.Snapshot();
  if (!error.ok()) {
    if (absl::IsCancelled(error)) {
      return absl::CancelledError(absl::StrCat("download of ", req.model_name, " cancelled; ",
                                               common::FormatBytes(final_progress.bytes_done),
                                               " kept in ", req.staging_dir,
                                               " for the next attempt"));
    }
    if (absl::IsResourceExhausted(error)) {
      // The disk filled up (another writer took the room): partial files kept for a resume
      // would keep it full for everyone else, so they go.
      std::error_code ec;
      fs::remove_all(req.staging_dir, ec);
      error = absl::ResourceExhaustedError(
          absl::StrCat(error.message(),
                       ec ? "; its partial files could not be removed from "
                          : "; its partial files were removed from ",
                       req.staging_dir));
    }
    spdlog::warn("model={} download failed: {}", req.model_name, error.message());
    return error;
  }

  // Everything is verified in staging: record it, make it durable, rename it into place.
  ModelManifest manifest;
  manifest.name = req.model_name;
  manifest.source_url = req.source_url;
  manifest.revision = src.kind == SourceSpec::kHub ? src.revision : "";
  manifest.commit = plan.commit;
  manifest.files = done;
  manifest.downloaded_at = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  RETURN_IF_ERROR(WriteManifest(req.staging_dir, manifest));
  ::unlink(StagingStatePath(req.staging_dir).c_str());
  for (const std::string& dir : dirs) RETURN_IF_ERROR(common::FsyncDir(dir));
  RETURN_IF_ERROR(common::MakeDirs(Parent(req.target_dir)));
  if (::rename(req.staging_dir.c_str(), req.target_dir.c_str()) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) return ExistsError(req);
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot rename ", req.staging_dir, " to ", req.target_dir));
  }
  RETURN_IF_ERROR(common::FsyncDir(Parent(req.target_dir)));
  if (Parent(req.staging_dir) != Parent(req.target_dir)) {
    RETURN_IF_ERROR(common::FsyncDir(Parent(req.staging_dir)));
  }

  DownloadResult result = ResultFromManifest(manifest);
  result.bytes_fetched = final_progress.bytes_fetched_this_run;
  result.bytes_reread = reread.load();
  result.bytes_from_fallback = from_fallback.load();
  spdlog::info("model={} ready in {}: {} files, {} ({} fetched)", req.model_name, req.target_dir,
               result.files.size(), common::FormatBytes(result.size_bytes),
               common::FormatBytes(result.bytes_fetched));
  return result;
}

}  // namespace gswarm::client
