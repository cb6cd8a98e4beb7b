#pragma once

// The host's HTTP/1.1 server on Boost.Beast and Asio: a few I/O threads serve every connection
// (no thread per connection, request or stream). Handlers run on an I/O thread and must not
// block: work that waits (SQLite, jobs) is handed to a pool, and the answer is given later, from
// any thread, through the request's Exchange. Streams are written chunk by chunk, each write
// completing once the client has taken it (backpressure), and a client that goes away cancels
// what its request started.
//
// Limits, each refused with its status and a JSON error: request line and headers (431), body
// (413), a request that does not arrive in time (408: slowloris), an idle keep-alive connection
// (closed), a client that stops reading an answer (closed).
//
// Thread safety: Exchange is thread-safe. HttpServer: routes before Listen; Listen, Stop from
// one thread.

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "absl/time/time.h"
#include "boost/asio/any_io_executor.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/ssl/context.hpp"
#include "boost/asio/steady_timer.hpp"
#include "common/config.h"

namespace gswarm::host::http {

// The I/O threads, each running an io_context of its own: a connection, and the upstream
// exchanges its requests make, live on one thread from accept to close, so a request is handled
// without a hand-off between threads and nothing needs a strand.
class IoThreads {
 public:
  // `threads` 0: one per core.
  explicit IoThreads(int threads);
  ~IoThreads();  // Stop()
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  // The first thread's context (the listener's).
  boost::asio::io_context& context() { return *contexts_.front(); }
  // The contexts in turn, for new connections.
  boost::asio::io_context& Next();
  int size() const { return static_cast<int>(contexts_.size()); }
  // Stops the loops and joins the threads. Pending handlers are destroyed with the object.
  void Stop();

 private:
  using WorkGuard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  std::vector<std::optional<WorkGuard>> work_;
  std::vector<std::thread> threads_;
  std::atomic<size_t> next_{0};
};

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // percent-decoded, without the query
  // Query parameters, percent-decoded ('+' is a space), in order; a key may repeat.
  std::vector<std::pair<std::string, std::string>> params;
  Headers headers;
  std::string body;
  // The route pattern's capture groups, in order.
  std::vector<std::string> matches;

  // The first header or parameter of that name (headers: case-insensitive); "" when absent.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  std::string param(std::string_view key) const;
  bool has_param(std::string_view key) const;
  std::vector<std::string> params_named(std::string_view key) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Headers headers;  // more headers (Content-Length, Connection are the server's)
};

// How an exchange went, for metrics: told once its answer is complete or the client is gone.
struct Finished {
  int status = 0;        // the answer's status; 499 when the client left before one was sent
  absl::Duration total;  // from the request's arrival to the end
  std::optional<absl::Duration> first_byte;  // to the first byte of the answer written
  bool complete = false;                     // false: cut off (client gone, stream aborted)
};

class Connection;
struct ServerCore;

// One request and its answer. A handler answers with Reply, or with Start + Write... + End;
// exactly one of Reply, End or Abort ends it. Any thread may call any method.
class Exchange {
 public:
  Exchange(std::shared_ptr<Connection> connection, Request request);
  ~Exchange();  // an exchange dropped unanswered gets a 500
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  const Request& request() const { return request_; }

  void Reply(Response response);
  // Sends the status and headers of a streamed answer (chunked; body ignored).
  void Start(Response head);
  // Queues `data` as the next part of the stream; `written(true)` runs once the client's socket
  // took it, `written(false)` if the client is gone. Wait for it before the next Write to pass
  // backpressure on. `written` runs on an I/O thread; it may be empty.
  void Write(std::string data, std::function<void(bool)> written = nullptr);
  // The last chunk: the stream is complete.
  void End();
  // Cuts the connection: the client sees an incomplete answer.
  void Abort();

  // `cancelled` runs once (on an I/O thread) when the client goes away or the server stops before
  // the answer is complete; at once if that already happened. One at a time.
  void OnCancel(std::function<void()> cancelled);
  bool cancelled() const;
  // `finished` runs once (on an I/O thread) when the exchange is over, either way.
  void OnFinish(std::function<void(const Finished&)> finished);
  // The I/O thread the exchange lives on: work for it posted here runs in order with it.
  boost::asio::any_io_executor executor() const;

 private:
  const std::shared_ptr<Connection> connection_;
  const Request request_;
  std::atomic<bool> finished_{false};
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

class HttpServer {
 public:
  struct Options {
    // Request line and headers, bytes; more: 431.
    size_t max_header_bytes = 64 << 10;
    // Request body, bytes; more: 413 (host.http_max_body_mb).
    size_t max_body_bytes = size_t{32} << 20;
    // A request's line and headers must arrive within it; else 408 (host.http_header_timeout_s).
    absl::Duration header_timeout = absl::Seconds(30);
    // A request's body must arrive within it; else 408.
    absl::Duration body_timeout = absl::Seconds(60);
    // An idle keep-alive connection is closed after it (host.http_keep_alive_timeout_s).
    absl::Duration keep_alive_timeout = absl::Seconds(75);
    // A client that takes no byte of an answer for this long is cut off.
    absl::Duration write_timeout = absl::Seconds(60);
    // HTTPS when cert_file is set.
    common::TlsConfig tls;
  };

  // How an error the server itself answers (404, 408, 413, 431, 500, ...) is shaped, by path.
  using ErrorRenderer = std::function<Response(const Request&, int status, std::string message)>;
  // Runs before routing; an answer refuses the request with it (the auth check).
  using Filter = std::function<std::optional<Response>(const Request&)>;

  // INVALID_ARGUMENT when the TLS certificate or key cannot be used.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(IoThreads* io, Options options);
  ~HttpServer();  // Stop()

  // `pattern`: an exact path, or a regular expression with capture groups (it contains '(').
  void Route(const std::string& method, const std::string& pattern, Handler handler);
  void set_filter(Filter filter);
  void set_error_renderer(ErrorRenderer renderer);

  // Binds host:port (0: any free port), starts accepting, returns the port.
  absl::StatusOr<int> Listen(const std::string& host, int port);
  // Stops accepting, cancels every exchange and closes every connection; waits up to `grace`
  // for them to go.
  void Stop(absl::Duration grace = absl::Seconds(2));

  // Connections open now.
  size_t connections() const;

 private:
  HttpServer(IoThreads* io, Options options);
  void Accept();
  // Accepting again after an error (out of file descriptors): not at once, which would spin.
  void AcceptLater();

  IoThreads* const io_;
  const std::shared_ptr<ServerCore> core_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::unique_ptr<boost::asio::steady_timer> retry_timer_;
};

// The reason phrase of an HTTP status ("Not Found").
std::string_view ReasonPhrase(int status);

// Percent-decodes `text`; with `plus_is_space`, '+' becomes ' ' (query strings).
std::string PercentDecode(std::string_view text, bool plus_is_space);

}  // namespace gswarm::host::http
