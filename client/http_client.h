#pragma once

// Small libcurl helpers shared by the Hub client and the downloader: one-shot requests whose
// answer fits in memory (API calls, HEAD), percent-encoding, and which failures deserve a retry.
// Thread safety: every function may be called from any thread.

#include <curl/curl.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace gswarm::client {

// curl_global_init, once per process. Every function here calls it; call it yourself before
// creating easy handles of your own.
void InitCurl();

// The User-Agent GSwarm sends.
const char* UserAgent();

struct HttpResponse {
  long status = 0;
  // The final response's headers (after redirects), names lowercased, values trimmed.
  std::map<std::string, std::string> headers;
  std::string body;

  // The header's value, or "" when absent. `name` is lowercase.
  std::string Header(const std::string& name) const;
};

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, POST, PUT, DELETE
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // sent for POST/PUT
  bool follow_redirects = true;
  absl::Duration timeout = absl::Seconds(60);
  size_t max_body_bytes = 64 << 20;  // a longer answer fails rather than fill memory
};

// Performs one request. Any HTTP status is a success here; a transport failure (refused,
// reset, timed out, DNS) is UNAVAILABLE or DEADLINE_EXCEEDED naming the URL and curl's reason.
absl::StatusOr<HttpResponse> SendHttpRequest(const HttpRequest& request);

// Percent-encodes everything but unreserved characters (and '/' when `keep_slash`).
std::string PercentEncode(absl::string_view text, bool keep_slash);

// 408, 429 and 5xx: the server may answer differently a moment later.
bool IsTransientHttpStatus(long status);

// Connection-level failures worth retrying (refused, reset, cut short, timed out, DNS).
bool IsTransientCurlError(CURLcode code);

// The delay a Retry-After header asks for (delta-seconds form), or zero.
absl::Duration RetryAfter(const std::map<std::string, std::string>& headers);

// Parses one raw header line into `headers` (lowercased name); a status line ("HTTP/...")
// clears it, so that after redirects only the final response's headers remain.
void ParseHeaderLine(absl::string_view line, std::map<std::string, std::string>& headers);

}  // namespace gswarm::client
