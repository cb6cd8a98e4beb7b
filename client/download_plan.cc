#include "client/download_plan.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/http_client.h"
#include "client/sha256.h"
#include "common/paths.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<Plan> HubPlan(const DownloadRequest& req, const SourceSpec& src) {
  ASSIGN_OR_RETURN(RepoListing listing, ListRepo(req.hub, src.repo, src.revision));
  if (listing.gated && req.hub.token.empty()) {
    return HubError(req.hub, src.repo, src.revision, "", 401, "GatedRepo", "");
  }
  Plan plan;
  plan.commit = listing.commit;
  std::set<std::string> seen;
  for (const v1::ModelFile& f : listing.files) seen.insert(f.path());
  for (const v1::ModelFile& f : listing.files) {
    absl::Status safe = CheckRelativePath(f.path());
    // A file named like another's sidecar (<f>.part, <f>.stripes, ...) would
    // be overwritten by it, or removed.
    const bool sidecar =
        std::any_of(std::begin(kFetchSidecars), std::end(kFetchSidecars),
                    [&](const char* suffix) { return seen.count(f.path() + suffix) > 0; });
    if (safe.ok() && (f.path() == ".gswarm" || f.path().rfind(".gswarm/", 0) == 0 || sidecar)) {
      safe = absl::InvalidArgumentError(absl::StrCat("reserved file path \"", f.path(), "\""));
    }
    if (!safe.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(req.hub.endpoint, " lists an ",
                                                        safe.message(), " in ", src.repo,
                                                        ": refusing to download it"));
    }
    PlannedFile p;
    p.path = f.path();
    p.url = absl::StrCat(req.hub.endpoint, "/", src.repo, "/resolve/", listing.commit, "/",
                         PercentEncode(f.path(), /*keep_slash=*/true));
    p.size = f.size_bytes();
    // Only a peer's digest stands in for SHA-256: at the Hub, SHA-256 is the check.
    if (req.from_peer && IsXxh3Digest(f.xxh3_128())) p.xxh3 = f.xxh3_128();
    p.sha256 = f.sha256();
    p.headers = req.hub.AuthHeadersFor(p.url);
    plan.files.push_back(std::move(p));
  }
  return plan;
}

absl::StatusOr<Plan> HttpsPlan(const DownloadRequest& req, const SourceSpec& src) {
  PlannedFile p;
  p.path = src.path;
  p.url = src.url;
  p.headers = req.hub.AuthHeadersFor(src.url);
  // The size, for the disk-space check and progress; the GET verifies it again.
  HttpRequest head;
  head.method = "HEAD";
  head.url = src.url;
  head.headers = p.headers;
  absl::StatusOr<HttpResponse> r = SendHttpRequest(head);
  uint64_t size = 0;
  if (r.ok() && r->status >= 200 && r->status < 300 &&
      absl::SimpleAtoi(r->Header("content-length"), &size)) {
    p.size = size;
  } else if (r.ok() && r->status >= 400 && r->status < 500 && r->status != 405 &&
             !IsTransientHttpStatus(r->status)) {
    return HttpsError(src.url, r->status);  // (405: HEAD not allowed; the GET will tell)
  }
  Plan plan;
  plan.files.push_back(std::move(p));
  return plan;
}

absl::StatusOr<Plan> LocalPlan(const SourceSpec& src) {
  Plan plan;
  std::error_code ec;
  const fs::path root(src.path);
  if (!fs::exists(root, ec)) {
    return absl::NotFoundError(absl::StrCat("local source ", src.path, " does not exist"));
  }
  if (!fs::is_directory(root, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "local source ", src.path, " is not a directory: file:// imports a folder of model files"));
  }
  fs::recursive_directory_iterator it(root, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::string rel = it->path().lexically_relative(root).string();
    if (it.depth() == 0 && rel == ".gswarm") {  // a GSwarm model's own records
      it.disable_recursion_pending();
      continue;
    }
    if (it.depth() > 32) {
      return absl::FailedPreconditionError(absl::StrCat("cannot import ", src.path,
                                                        ": directories nest too deep at ", rel,
                                                        " (a symlink loop?)"));
    }
    std::optional<uint64_t> size = FileSize(it->path().string());
    if (!size) continue;  // directories, sockets, dangling links
    PlannedFile p;
    p.path = rel;
    p.local_source = it->path().string();
    p.size = *size;
    plan.files.push_back(std::move(p));
  }
  if (ec) {
    return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot read ", src.path));
  }
  std::sort(plan.files.begin(), plan.files.end(),
            [](const PlannedFile& a, const PlannedFile& b) { return a.path < b.path; });
  return plan;
}

}  // namespace

absl::Status HttpsError(const std::string& url, long status) {
  std::string msg = absl::StrCat(url, ": HTTP ", status);
  if (status == 401 || status == 403) {
    return absl::PermissionDeniedError(absl::StrCat(msg, " (the server refuses this download)"));
  }
  if (status == 404 || status == 410) {
    return absl::NotFoundError(absl::StrCat(msg, " (check the URL)"));
  }
  return absl::UnknownError(msg);
}

absl::StatusOr<Plan> MakePlan(const DownloadRequest& req, const SourceSpec& src) {
  switch (src.kind) {
    case SourceSpec::kHub:
      return HubPlan(req, src);
    case SourceSpec::kHttps:
      return HttpsPlan(req, src);
    case SourceSpec::kLocalDir:
      return LocalPlan(src);
  }
  return absl::InternalError("unknown source kind");
}

std::optional<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

std::string StagingStatePath(const std::string& staging) {
  return absl::StrCat(staging, "/.gswarm/staging.json");
}

std::string StagingState(const SourceSpec& src, const Plan& plan) {
  // Canonical, so that hf://x@v1 and hf://x with revision v1 share their partial files.
  std::string source = src.kind == SourceSpec::kHub     ? absl::StrCat("hf://", src.repo)
                       : src.kind == SourceSpec::kHttps ? src.url
                                                        : absl::StrCat("file://", src.path);
  return nlohmann::json({{"source", source}, {"commit", plan.commit}})
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool InspectStaging(const DownloadRequest& req, const SourceSpec& src, Plan& plan) {
  struct stat st;
  if (::lstat(req.staging_dir.c_str(), &st) != 0) return true;
  absl::StatusOr<std::string> state = common::ReadFile(StagingStatePath(req.staging_dir));
  if (!state.ok() || *state != StagingState(src, plan)) return false;
  for (PlannedFile& f : plan.files) {
    std::string final_path = absl::StrCat(req.staging_dir, "/", f.path);
    std::optional<uint64_t> whole = FileSize(final_path);
    std::optional<uint64_t> part = FileSize(final_path + ".part");
    if (whole && (!f.size || *whole == *f.size)) {
      f.complete = true;
      f.existing = *whole;
      if (!f.size) f.size = *whole;
    } else if (part && (!f.size || *part <= *f.size) && src.kind != SourceSpec::kLocalDir &&
               !(src.kind == SourceSpec::kHub && f.sha256.empty())) {
      f.existing = *part;
    }
  }
  return true;
}

}  // namespace gswarm::client
