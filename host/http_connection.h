#pragma once

// Internal to the HTTP server (host/http_server.h): one client connection's state machine, and
// the part of the server every connection shares (routes, limits, the set of live connections),
// which lives as long as its last connection.
//
// A connection alternates between reading a request and answering it. While it answers, one
// read stays posted so that a client that hangs up is noticed at once (and cancels what its
// request started); the same read, once the answer is out, waits for the next request.
// Everything a connection does runs on its I/O thread; Exchange methods post onto it.

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "common/mutex.h"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/ssl/stream.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/string_body.hpp"
#include "host/http_server.h"
#include "host/lazy_deadline.h"

namespace gswarm::host::http {

struct ServerCore {
  struct PatternRoute {
    std::string method;
    std::regex pattern;
    Handler handler;
  };

  HttpServer::Options options;
  std::shared_ptr<boost::asio::ssl::context> tls;   // null: plain HTTP
  absl::flat_hash_map<std::string, Handler> exact;  // "METHOD path"
  std::vector<PatternRoute> patterns;
  HttpServer::Filter filter;
  HttpServer::ErrorRenderer error_renderer;

  gswarm::Mutex mu;
  gswarm::CondVar gone;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  absl::flat_hash_map<Connection*, std::weak_ptr<Connection>> live ABSL_GUARDED_BY(mu);

  // Filters and routes a complete request, and runs its handler (on the connection's I/O thread).
  void Dispatch(const std::shared_ptr<Connection>& connection, Request request) const;
  Response Error(const Request& request, int status, std::string message) const;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<ServerCore> core, boost::asio::ip::tcp::socket socket);
  ~Connection();

  void Run();
  // Ends the exchange in progress (cancelled) and closes: the server is stopping.
  void Close();

  // Exchange's methods, from any thread.
  void Reply(Response response);
  void Start(Response head);
  void Write(std::string data, std::function<void(bool)> written);
  void End();
  void Abort();
  void OnCancel(std::function<void()> cancelled);
  void OnFinish(std::function<void(const Finished&)> finished);
  // An exchange dropped without an answer: 500.
  void Unanswered(std::string path);
  bool cancelled() const { return cancelled_.load(); }
  const boost::asio::any_io_executor& executor() const { return executor_; }

 private:
  // One write: up to three buffers (a chunk's size line, its data, its CRLF).
  struct PendingWrite {
    std::string head;
    std::string body;
    std::string tail;
    std::function<void(bool)> written;
    bool last = false;  // the answer is complete after it
  };

  template <typename Fn>
  void WithStream(Fn&& fn);
  boost::asio::ip::tcp::socket& socket();

  void WaitForRequest();
  void StartPoke();
  void OnPoke(boost::system::error_code ec, size_t bytes);
  void ReadHeader();
  void OnHeader(boost::system::error_code ec);
  void ReadBody();
  void OnBody(boost::system::error_code ec);
  // A read error: 408 after a timeout, 413/431 over a limit, 400 for a malformed request, a
  // quiet close when the client left.
  void OnReadError(boost::system::error_code ec, const char* what);
  void OnRequest();
  // Answers with an error the server itself gives, then closes.
  void Refuse(int status, std::string message);

  void DoReply(Response response);
  void DoStart(Response head);
  void Queue(PendingWrite write);
  void DoWrite();
  void OnWritten(boost::system::error_code ec);
  void FinishExchange();
  // Tells on_finish_ (once).
  void Report(bool complete);
  void Cancel();
  void GracefulClose();
  void CloseSocket();
  // Sets the read deadline; OnReadDeadline runs when it passes.
  void ArmReadTimer(absl::Duration after);
  void OnReadDeadline();
  // The status line and headers of an answer; `length` none: streamed (chunked, or ended by
  // closing for an HTTP/1.0 client).
  std::string Head(const Response& response, std::optional<size_t> length);

  const std::shared_ptr<ServerCore> core_;
  boost::asio::ip::tcp::socket plain_;
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_;
  // The connection's I/O thread (one thread runs its context: everything here is serialized).
  boost::asio::any_io_executor executor_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  LazyDeadline read_deadline_;
  LazyDeadline write_deadline_;

  bool first_request_ = true;
  bool reading_ = false;    // a request's header or body
  bool poking_ = false;     // the read that notices a hang-up or the next request
  bool timed_out_ = false;  // the read deadline passed during reading_
  bool closing_ = false;    // answered with Connection: close; draining until the client closes
  bool closed_ = false;
  size_t drained_ = 0;

  bool active_ = false;    // a request is being answered
  bool finished_ = false;  // its answer is complete (or abandoned)
  bool started_ = false;   // a streamed answer's head went out
  bool keep_alive_ = false;
  unsigned version_ = 11;
  bool chunked_ = false;
  std::string method_;
  std::function<void()> on_cancel_;
  std::function<void(const Finished&)> on_finish_;
  absl::Time arrived_;                    // the exchange's request was complete
  std::optional<absl::Time> first_byte_;  // its answer's first write completed
  int status_ = 0;
  std::atomic<bool> cancelled_{false};

  std::deque<PendingWrite> writes_;
  bool writing_ = false;
};

}  // namespace gswarm::host::http
