#pragma once

// The router's upstream side, on the same I/O threads as the front door (host/http_server.h):
// requests relayed to an engine over HTTP/1.1 keep-alive connections pooled per endpoint, the
// body sent as it came (no re-serialising), a 200 event stream passed on chunk by chunk as it
// arrives, anything else copied back whole. Backpressure runs both ways: the next upstream read
// waits until our client has taken the last chunk, so a slow client slows its own upstream and
// nothing piles up in the host. A client that goes away closes the upstream connection, so the
// engine stops generating. Internal to the router (host/router.h).
//
// Thread safety: thread-safe. An exchange with an engine runs on the I/O thread of the client's
// connection (http::Exchange::executor). Lifetime: an exchange in progress keeps what it needs
// alive; Close() before the I/O threads' contexts go.

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "host/http_server.h"

namespace gswarm::host {

// What goes upstream. `what` names the target in errors ("instance i-3 of model m at URL").
struct UpstreamCall {
  std::string endpoint;  // "http://host:port"
  std::string path;
  std::string body;
  std::string content_type;
  std::string what;
  // The client asked for a stream: a 200 event stream is relayed as it arrives.
  bool stream = false;
};

class UpstreamPool {
 public:
  struct Options {
    // Connecting to an engine; past it: 502.
    absl::Duration connect_timeout = absl::Seconds(5);
    // Silence from an engine (before the answer, between two chunks); past it: 502 or a cut
    // stream.
    absl::Duration read_timeout = absl::Minutes(10);
    // Idle keep-alive connections kept per endpoint; more are closed.
    size_t max_idle_per_endpoint = 256;
  };

  explicit UpstreamPool(Options options);
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // POSTs `call` and answers `exchange` with the engine's answer; 502 with an OpenAI-shaped
  // error when the engine cannot be reached or the exchange breaks before the answer's headers.
  // A stream that breaks midway is cut, so the client sees it incomplete. `hold` (the lease) is
  // released when the exchange with the engine is over.
  void Proxy(UpstreamCall call, std::shared_ptr<http::Exchange> exchange,
             std::shared_ptr<void> hold);

  // Closes the idle connections and keeps no more (before the io_context goes).
  void Close();

  // The largest answer copied whole (an engine gone wrong must not exhaust the host's memory).
  static constexpr size_t kMaxBody = size_t{256} << 20;
  // The largest head (status line and headers) an engine may send.
  static constexpr size_t kMaxHeaders = size_t{64} << 10;

  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

// OpenAI's error shape, which OpenAI clients parse: {"error": {"message", "type", "param",
// "code"}}, with `status`.
http::Response OpenAiError(int status, const std::string& message, const char* type,
                           const char* code);

}  // namespace gswarm::host
