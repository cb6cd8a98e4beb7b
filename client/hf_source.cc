#include "client/hf_source.h"

#include <cstdlib>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/http_client.h"
#include "common/backoff.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

// "scheme://host[:port]" of a URL, lowercased; "" when it has none.
std::string Origin(absl::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return "";
  size_t host_end = url.find_first_of("/?#", scheme_end + 3);
  return absl::AsciiStrToLower(url.substr(0, host_end));
}

}  // namespace

HubOptions HubOptions::FromEnvironment() {
  HubOptions options;
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? "" : std::string(absl::StripAsciiWhitespace(v));
  };
  if (std::string endpoint = env("HF_ENDPOINT"); !endpoint.empty()) options.endpoint = endpoint;
  while (!options.endpoint.empty() && options.endpoint.back() == '/') options.endpoint.pop_back();
  options.token = env("HF_TOKEN");
  if (options.token.empty()) options.token = env("HUGGING_FACE_HUB_TOKEN");
  std::string offline = absl::AsciiStrToLower(env("HF_HUB_OFFLINE"));
  options.offline = offline == "1" || offline == "true" || offline == "yes" || offline == "on";
  return options;
}

std::vector<std::string> HubOptions::AuthHeadersFor(absl::string_view url) const {
  if (token.empty() || Origin(url).empty() || Origin(url) != Origin(endpoint)) return {};
  return {absl::StrCat("Authorization: Bearer ", token)};
}

absl::Status HubError(const HubOptions& hub, absl::string_view repo, absl::string_view revision,
                      absl::string_view file, long status, absl::string_view error_code,
                      absl::string_view server_message) {
  bool known_code = error_code == "RepoNotFound" || error_code == "RevisionNotFound" ||
                    error_code == "EntryNotFound";
  if (error_code == "GatedRepo" || ((status == 401 || status == 403) && !known_code)) {
    if (hub.token.empty()) {
      return absl::UnauthenticatedError(
          absl::StrCat("repo ", repo,
                       " is gated or private: set HF_TOKEN to a token with access "
                       "(https://huggingface.co/settings/tokens)"));
    }
    return absl::PermissionDeniedError(absl::StrCat(
        "repo ", repo, " is gated or private and HF_TOKEN has no access to it: request access at ",
        hub.endpoint, "/", repo,
        " or set HF_TOKEN to a token with access (https://huggingface.co/settings/tokens)"));
  }
  if (error_code == "RepoNotFound" || (status == 404 && error_code.empty() && file.empty())) {
    return absl::NotFoundError(absl::StrCat("repo ", repo, " not found on ", hub.endpoint,
                                            " (check the name; private repos need HF_TOKEN)"));
  }
  if (error_code == "RevisionNotFound") {
    return absl::NotFoundError(absl::StrCat("revision ", revision, " not found in ", repo));
  }
  if (error_code == "EntryNotFound" || status == 404) {
    return absl::NotFoundError(
        absl::StrCat("file ", file, " not found in ", repo, " at revision ", revision));
  }
  std::string what = file.empty() ? std::string(repo) : absl::StrCat(repo, "/", file);
  std::string msg = absl::StrCat(hub.endpoint, " answered HTTP ", status, " for ", what,
                                 server_message.empty() ? "" : ": ", server_message);
  if (IsTransientHttpStatus(status)) return absl::UnavailableError(msg);
  return absl::UnknownError(msg);
}

absl::StatusOr<RepoListing> ParseRepoListing(absl::string_view body, absl::string_view what) {
  auto bad = [&](absl::string_view why) {
    return absl::UnknownError(absl::StrCat(what, ": ", why));
  };
  nlohmann::json info =
      nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (info.is_discarded() || !info.is_object()) return bad("not a JSON object");
  RepoListing listing;
  try {
    listing.commit = info.value("sha", "");
    if (listing.commit.empty()) return bad("no \"sha\"");
    const nlohmann::json& gated = info.contains("gated") ? info["gated"] : nlohmann::json();
    listing.gated = !(gated.is_null() || (gated.is_boolean() && !gated.get<bool>()));
    if (!info.contains("siblings") || !info["siblings"].is_array()) return bad("no \"siblings\"");
    for (const nlohmann::json& s : info["siblings"]) {
      v1::ModelFile file;
      file.set_path(s.at("rfilename").get<std::string>());
      const bool lfs = s.contains("lfs") && s["lfs"].is_object();
      if (lfs) file.set_sha256(absl::AsciiStrToLower(s["lfs"].value("sha256", "")));
      // The LFS pointer's size, else the entry's; a byte count, nothing else (a float or a
      // negative number converted to uint64_t is undefined or wrong).
      const nlohmann::json* size = lfs && s["lfs"].contains("size") ? &s["lfs"]["size"]
                                   : s.contains("size")             ? &s["size"]
                                                                    : nullptr;
      if (size == nullptr) {
        if (!lfs) return bad(absl::StrCat("no size for ", file.path()));
      } else if (!size->is_number_unsigned() &&
                 !(size->is_number_integer() && size->get<int64_t>() >= 0)) {
        return bad(
            absl::StrCat("the size of ", file.path(), " is not a byte count: ", size->dump()));
      } else {
        file.set_size_bytes(size->get<uint64_t>());
      }
      file.set_etag(s.value("blobId", ""));
      // A GSwarm peer's data port adds the fast digest its manifest records (data_server.h).
      if (s.contains("gswarm") && s["gswarm"].is_object()) {
        file.set_xxh3_128(absl::AsciiStrToLower(s["gswarm"].value("xxh3_128", "")));
      }
      listing.files.push_back(std::move(file));
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  return listing;
}

absl::StatusOr<RepoListing> ListRepo(const HubOptions& hub, const std::string& repo,
                                     const std::string& revision) {
  HttpRequest request;
  request.url = absl::StrCat(hub.endpoint, "/api/models/", repo, "/revision/",
                             PercentEncode(revision, /*keep_slash=*/false), "?blobs=true");
  request.headers = hub.AuthHeadersFor(request.url);
  common::Backoff backoff({.initial = hub.retry_initial_delay, .max = hub.retry_max_delay});
  HttpResponse response;
  for (int attempt = 1;; ++attempt) {
    absl::StatusOr<HttpResponse> got = SendHttpRequest(request);
    absl::Duration wait = absl::ZeroDuration();
    std::string problem;
    if (!got.ok()) {
      problem = std::string(got.status().message());
    } else if (IsTransientHttpStatus(got->status)) {
      problem = absl::StrCat("HTTP ", got->status);
      wait = std::min(RetryAfter(got->headers), absl::Minutes(2));
    } else {
      response = *std::move(got);
      break;
    }
    if (attempt >= hub.max_attempts) {
      if (got.ok()) {
        return HubError(hub, repo, revision, "", got->status, got->Header("x-error-code"),
                        got->Header("x-error-message"));
      }
      return absl::UnavailableError(absl::StrCat("cannot reach the Hub at ", hub.endpoint, ": ",
                                                 problem, " (tried ", attempt,
                                                 " times; check the network or HF_ENDPOINT)"));
    }
    wait = std::max(wait, backoff.Next());
    spdlog::warn("listing {}@{}: {}; retrying in {}", repo, revision, problem,
                 absl::FormatDuration(wait));
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(wait));
  }
  if (response.status != 200) {
    return HubError(hub, repo, revision, "", response.status, response.Header("x-error-code"),
                    response.Header("x-error-message"));
  }
  return ParseRepoListing(
      response.body,
      absl::StrCat(hub.endpoint, " sent an unexpected listing for ", repo, "@", revision));
}

}  // namespace gswarm::client
