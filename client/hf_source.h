#pragma once

// Talking to the Hugging Face Hub's HTTP API (or anything that speaks it: a peer agent, a
// mirror).
// Thread safety: every function may be called from any thread.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/model_source.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

// Source URLs are parsed in common/model_source.h, shared with the host and the CLI.
using common::CheckRelativePath;
using common::ParseSource;
using common::SourceSpec;

// How to reach the Hub and how hard to try.
struct HubOptions {
  // Base URL without a trailing slash: $HF_ENDPOINT, else https://huggingface.co.
  std::string endpoint = "https://huggingface.co";
  // $HF_TOKEN (or $HUGGING_FACE_HUB_TOKEN). Sent as "Authorization: Bearer" to the endpoint's
  // host only; libcurl drops it when a redirect leaves that host (the Hub's CDN).
  std::string token;
  // $HF_HUB_OFFLINE: no network at all; only models already on disk can be used.
  bool offline = false;

  // Attempts per request (and per file, counted since the last attempt that made progress).
  int max_attempts = 5;
  // First delay between attempts; doubles up to `retry_max_delay`. Retry-After can ask longer.
  absl::Duration retry_initial_delay = absl::Seconds(1);
  absl::Duration retry_max_delay = absl::Seconds(30);
  // A transfer slower than 1 KiB/s for this long is cut and retried (no total timeout: a
  // 100 GB file may take hours).
  absl::Duration low_speed_time = absl::Seconds(60);

  static HubOptions FromEnvironment();

  // "Authorization: Bearer <token>" when a token is set and `url` is on the endpoint's host.
  std::vector<std::string> AuthHeadersFor(absl::string_view url) const;
};

struct RepoListing {
  std::string commit;                // the full commit sha the revision resolved to
  std::vector<v1::ModelFile> files;  // path, size_bytes, sha256 (LFS files), etag (git blob id)
  bool gated = false;                // files need a token with access
};

// The Hub's JSON answer to a revision listing (its "sha", "gated" and "siblings" with sizes and
// LFS digests). UNKNOWN, starting with `what`, for anything else.
absl::StatusOr<RepoListing> ParseRepoListing(absl::string_view body, absl::string_view what);

// GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true, retrying transient failures.
// Failures a person can act on: gated/private repo (UNAUTHENTICATED without a token,
// PERMISSION_DENIED with one), NOT_FOUND for an unknown repo or revision, UNAVAILABLE when the
// endpoint cannot be reached.
absl::StatusOr<RepoListing> ListRepo(const HubOptions& hub, const std::string& repo,
                                     const std::string& revision);

// The Status for a Hub error answer: `status` is the HTTP status, `error_code` the X-Error-Code
// header (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo or ""), `file` the file
// being fetched ("" for API calls).
absl::Status HubError(const HubOptions& hub, absl::string_view repo, absl::string_view revision,
                      absl::string_view file, long status, absl::string_view error_code,
                      absl::string_view server_message);

}  // namespace gswarm::client
