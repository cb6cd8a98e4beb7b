#pragma once

// The router's transport: requests relayed to an engine over HTTP/1.1 keep-alive connections,
// answers copied back, Server-Sent Events passed through chunk by chunk as they arrive.
// Internal to the router (host/router.h).
//
// Thread safety: UpstreamPool is thread-safe; each Proxy* call runs on the caller's thread (and,
// for a stream, one thread of its own until the stream ends).

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "host/upstream_connection.h"

namespace httplib {
class Client;
struct Response;
}  // namespace httplib

namespace gswarm::host {

// Idle keep-alive connections, per endpoint: httplib clients for streams, lean connections
// (upstream_connection.h) for answers copied whole. One that failed or was cut is dropped.
class UpstreamPool {
 public:
  UpstreamPool(absl::Duration connect_timeout, absl::Duration read_timeout);
  ~UpstreamPool();

  // An idle client for `endpoint` ("http://host:port"), or a new one.
  std::unique_ptr<httplib::Client> Take(const std::string& endpoint);
  // Gives a client back after a clean exchange.
  void Give(const std::string& endpoint, std::unique_ptr<httplib::Client> client);

  // An idle connection to `endpoint` (`*reused` true), or a new one.
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> TakeConnection(const std::string& endpoint,
                                                                     bool* reused);
  void GiveConnection(const std::string& endpoint, std::unique_ptr<UpstreamConnection> connection);

 private:
  static constexpr size_t kMaxIdlePerEndpoint = 64;
  const absl::Duration connect_timeout_;
  const absl::Duration read_timeout_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::vector<std::unique_ptr<httplib::Client>>> idle_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<std::unique_ptr<UpstreamConnection>>>
      idle_connections_ ABSL_GUARDED_BY(mu_);
};

// OpenAI's error shape, which OpenAI clients parse: {"error": {"message", "type", "param",
// "code"}}, with `status`.
void ReplyOpenAiError(httplib::Response& res, int status, const std::string& message,
                      const char* type, const char* code);

// `content_type`, or application/json when empty.
std::string OrJson(std::string content_type);

// What goes upstream. `what` names the target in errors ("instance i-3 of model m at URL").
struct UpstreamCall {
  std::string endpoint;
  std::string path;
  std::string body;
  std::string content_type;
  std::string what;
};

// POSTs `call` and copies the answer's status, content type and body into `res`; 502 with an
// OpenAI-shaped error when the engine cannot be reached or the exchange breaks.
void ProxyRequest(UpstreamPool& pool, const UpstreamCall& call, httplib::Response& res);

// POSTs `call` on a thread of its own and waits for the answer's headers. A 200 event stream is
// then passed to `res` chunk by chunk as each arrives; anything else is copied whole, and a
// failure before the headers answers 502. `hold` (the lease) lives until the stream ends. When
// our client goes away the upstream request is aborted, so the engine stops generating.
void ProxyStream(UpstreamPool& pool, UpstreamCall call, std::shared_ptr<void> hold,
                 httplib::Response& res);

}  // namespace gswarm::host
