#include "client/http_client.h"

#include <cstdlib>
#include <memory>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gswarm::client {
namespace {

struct Collector {
  std::map<std::string, std::string> headers;
  std::string body;
  size_t max_body = 0;
  bool too_long = false;
};

size_t OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* c = static_cast<Collector*>(user);
  size_t n = size * nmemb;
  if (c->body.size() + n > c->max_body) {
    c->too_long = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  c->body.append(data, n);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t nmemb, void* user) {
  auto* c = static_cast<Collector*>(user);
  ParseHeaderLine(absl::string_view(data, size * nmemb), c->headers);
  return size * nmemb;
}

struct EasyDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

void InitCurl() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Without a working libcurl no download can happen; that is a broken installation.
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) std::abort();
  });
}

const char* UserAgent() { return "gswarm/" GSWARM_VERSION; }

std::string HttpResponse::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

void ParseHeaderLine(absl::string_view line, std::map<std::string, std::string>& headers) {
  line = absl::StripTrailingAsciiWhitespace(line);
  if (absl::StartsWith(line, "HTTP/")) {
    headers.clear();
    return;
  }
  size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0) return;
  std::string name = absl::AsciiStrToLower(line.substr(0, colon));
  headers[name] = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
}

absl::StatusOr<HttpResponse> SendHttpRequest(const HttpRequest& request) {
  InitCurl();
  std::unique_ptr<CURL, EasyDeleter> h(curl_easy_init());
  if (!h) return absl::InternalError("curl_easy_init failed");
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  for (const std::string& line : request.headers) {
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    if (next == nullptr) return absl::InternalError("curl_slist_append failed");
    headers.release();
    headers.reset(next);
  }
  Collector c;
  c.max_body = request.max_body_bytes;
  char errbuf[CURL_ERROR_SIZE] = {};
  CURL* e = h.get();
  CURLcode rc = CURLE_OK;
  auto set = [&rc](CURLcode r) {
    if (rc == CURLE_OK) rc = r;
  };
  set(curl_easy_setopt(e, CURLOPT_URL, request.url.c_str()));
  set(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf));
  set(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L));
  set(curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L));
  set(curl_easy_setopt(e, CURLOPT_USERAGENT, UserAgent()));
  set(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                       static_cast<long>(absl::ToInt64Milliseconds(request.timeout))));
  set(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L));
  set(curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers.get()));
  set(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnBody));
  set(curl_easy_setopt(e, CURLOPT_WRITEDATA, &c));
  set(curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &OnHeader));
  set(curl_easy_setopt(e, CURLOPT_HEADERDATA, &c));
  if (request.method == "HEAD") {
    set(curl_easy_setopt(e, CURLOPT_NOBODY, 1L));
  } else if (request.method == "POST" || request.method == "PUT") {
    set(curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(request.body.size())));
    set(curl_easy_setopt(e, CURLOPT_POSTFIELDS, request.body.data()));
    if (request.method == "PUT") set(curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT"));
  } else if (request.method != "GET") {
    set(curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, request.method.c_str()));
  }
  if (rc != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("cannot set up a request to ", request.url, ": ", curl_easy_strerror(rc)));
  }
  rc = curl_easy_perform(e);
  if (rc != CURLE_OK) {
    std::string reason = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (c.too_long) {
      return absl::ResourceExhaustedError(absl::StrCat(request.method, " ", request.url,
                                                       ": answer longer than ",
                                                       request.max_body_bytes, " bytes"));
    }
    std::string msg = absl::StrCat(request.method, " ", request.url, ": ", reason);
    if (rc == CURLE_OPERATION_TIMEDOUT) return absl::DeadlineExceededError(msg);
    return absl::UnavailableError(msg);
  }
  HttpResponse response;
  if (curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &response.status) != CURLE_OK) {
    return absl::InternalError(absl::StrCat("no HTTP status for ", request.url));
  }
  response.headers = std::move(c.headers);
  response.body = std::move(c.body);
  return response;
}

std::string PercentEncode(absl::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char ch : text) {
    if (absl::ascii_isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' ||
        (keep_slash && ch == '/')) {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back('%');
      out.push_back(kHex[ch >> 4]);
      out.push_back(kHex[ch & 0xf]);
    }
  }
  return out;
}

bool IsTransientHttpStatus(long status) {
  return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

bool IsTransientCurlError(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

absl::Duration RetryAfter(const std::map<std::string, std::string>& headers) {
  auto it = headers.find("retry-after");
  int64_t seconds = 0;
  if (it == headers.end() || !absl::SimpleAtoi(it->second, &seconds) || seconds < 0) {
    return absl::ZeroDuration();
  }
  return absl::Seconds(seconds);
}

}  // namespace gswarm::client
