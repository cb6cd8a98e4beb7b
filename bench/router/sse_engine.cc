// sse_engine: an event-driven OpenAI-style engine for the router benchmark (bench/router/run.sh),
// started by gswarm's agent like any engine. One Boost.Asio io_context (on --threads threads), a
// timer per stream and no thread per connection, so it holds tens of thousands of open streams.
//
//   sse_engine --model PATH --served-model-name NAME --host H --port P
//              [--chunks 40] [--interval-ms 100] [--threads 1]
//
// HTTP/1.1 with keep-alive (request bodies by Content-Length), served:
//   GET /health      200 {"status":"ok"}
//   GET /v1/models   the one served model
//   POST /v1/chat/completions and /v1/completions: without "stream": true a small fixed
//   completion at once (for wrk); with it text/event-stream, chunked, --chunks `data: {chunk}`
//   events, the first at once and then one every --interval-ms, whose text is "c<index> " so a
//   client can check the order, then `data: [DONE]`.
// The model at PATH must exist and is not read. RLIMIT_NOFILE is raised to its hard limit. SIGTERM
// or SIGINT ends it with status 0.
#include <signal.h>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/router/tool_util.h"

namespace {

namespace asio = boost::asio;
using gswarm::bench::JsonEscape;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxHeaderBytes = 64 << 10;
constexpr size_t kMaxBodyBytes = 16 << 20;

struct Options {
  std::string model;
  std::string name = "bench";
  std::string host = "127.0.0.1";
  int port = 8000;
  int chunks = 40;
  int interval_ms = 100;
  int threads = 1;
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// True when the JSON body has "stream": true at any depth (the benchmark's bodies are flat).
bool WantsStream(std::string_view body) {
  for (size_t at = body.find("\"stream\""); at != std::string_view::npos;
       at = body.find("\"stream\"", at + 1)) {
    size_t i = at + 8;
    while (i < body.size() && std::isspace(static_cast<unsigned char>(body[i]))) ++i;
    if (i >= body.size() || body[i] != ':') continue;
    ++i;
    while (i < body.size() && std::isspace(static_cast<unsigned char>(body[i]))) ++i;
    if (body.substr(i, 4) == "true") return true;
  }
  return false;
}

struct Request {
  std::string method, target, version;
  size_t content_length = 0;
  bool keep_alive = true;
  bool chunked_body = false;
  std::string body;
};

// Parses the request line and headers of `head` (ending in the blank line); false if malformed.
bool ParseHead(std::string_view head, Request* req) {
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 <= sp1) return false;
  req->method = line.substr(0, sp1);
  req->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  req->version = line.substr(sp2 + 1);
  req->keep_alive = req->version == "HTTP/1.1";
  for (size_t at = eol + 2; at < head.size();) {
    size_t end = head.find("\r\n", at);
    if (end == std::string_view::npos || end == at) break;
    std::string_view h = head.substr(at, end - at);
    at = end + 2;
    size_t colon = h.find(':');
    if (colon == std::string_view::npos) return false;
    const std::string name = Lower(Trim(h.substr(0, colon)));
    const std::string value = Lower(Trim(h.substr(colon + 1)));
    if (name == "content-length") {
      req->content_length = std::strtoull(value.c_str(), nullptr, 10);
    } else if (name == "connection") {
      if (value.find("close") != std::string::npos) req->keep_alive = false;
      if (value.find("keep-alive") != std::string::npos) req->keep_alive = true;
    } else if (name == "transfer-encoding") {
      req->chunked_body = true;
    }
  }
  return true;
}

class Engine;

// One connection: requests one after another, a stream at a time. Exactly one asynchronous
// operation (read, write or timer) is pending at any moment, so the session needs no strand
// even with several io_context threads.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const Engine& engine)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), engine_(engine) {}
  void Start() { ReadHead(); }

 private:
  void ReadHead();
  void OnHead(size_t n);
  void Dispatch();
  void Reply(int status, std::string_view content_type, std::string_view body);
  void StartStream();
  void SendChunk();
  void Write(bool then_read);
  std::string Event(int index, bool chat) const;

  tcp::socket socket_;
  asio::steady_timer timer_;
  const Engine& engine_;
  std::string in_, out_;
  Request req_;
  // The current stream.
  bool chat_ = true, chunked_ = true;
  int next_chunk_ = 0;
  Clock::time_point stream_start_;
};

class Engine {
 public:
  Engine(asio::io_context& io, const Options& options)
      : options_(options), acceptor_(io), retry_(io) {}

  bool Listen(std::string* error) {
    boost::system::error_code ec;
    tcp::endpoint ep(asio::ip::make_address(options_.host, ec),
                     static_cast<unsigned short>(options_.port));
    if (!ec) acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(65535, ec);  // the kernel caps it at net.core.somaxconn
    if (ec) *error = ec.message();
    return !ec;
  }
  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        std::make_shared<Session>(std::move(socket), *this)->Start();
      } else if (ec != asio::error::operation_aborted) {
        // Out of descriptors: wait rather than spin on the failing accept.
        std::cerr << "sse_engine: accept: " << ec.message() << "\n";
        retry_.expires_after(std::chrono::milliseconds(50));
        retry_.async_wait([this](boost::system::error_code) { Accept(); });
        return;
      }
      if (ec != asio::error::operation_aborted) Accept();
    });
  }
  const Options& options() const { return options_; }
  int port() const {
    boost::system::error_code ec;
    return acceptor_.local_endpoint(ec).port();
  }

 private:
  Options options_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_;
};

void Session::ReadHead() {
  asio::async_read_until(socket_, asio::dynamic_buffer(in_, kMaxHeaderBytes), "\r\n\r\n",
                         [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                           if (!ec) self->OnHead(n);
                         });
}

void Session::OnHead(size_t n) {
  req_ = Request{};
  if (!ParseHead(std::string_view(in_).substr(0, n), &req_) || req_.chunked_body ||
      req_.content_length > kMaxBodyBytes) {
    req_.keep_alive = false;
    return Reply(400, "application/json", R"({"error":{"message":"bad request"}})");
  }
  in_.erase(0, n);
  if (in_.size() >= req_.content_length) {
    req_.body = in_.substr(0, req_.content_length);
    in_.erase(0, req_.content_length);
    return Dispatch();
  }
  asio::async_read(socket_, asio::dynamic_buffer(in_),
                   asio::transfer_exactly(req_.content_length - in_.size()),
                   [self = shared_from_this()](boost::system::error_code ec, size_t) {
                     if (ec) return;
                     self->req_.body = self->in_.substr(0, self->req_.content_length);
                     self->in_.erase(0, self->req_.content_length);
                     self->Dispatch();
                   });
}

void Session::Dispatch() {
  const Options& o = engine_.options();
  const std::string model = JsonEscape(o.name);
  const std::string_view path = std::string_view(req_.target).substr(0, req_.target.find('?'));
  if (req_.method == "GET" && path == "/health") {
    return Reply(200, "application/json", R"({"status":"ok"})");
  }
  if (req_.method == "GET" && path == "/v1/models") {
    return Reply(200, "application/json",
                 R"({"object":"list","data":[{"id":")" + model +
                     R"(","object":"model","created":1700000000,"owned_by":"sse_engine"}]})");
  }
  if (req_.method == "POST" && (path == "/v1/chat/completions" || path == "/v1/completions")) {
    chat_ = path == "/v1/chat/completions";
    if (WantsStream(req_.body)) return StartStream();
    const std::string choice =
        chat_ ? R"("message":{"role":"assistant","content":"ok"})" : R"("text":"ok")";
    return Reply(200, "application/json",
                 std::string(R"({"id":"cmpl-bench","object":")") +
                     (chat_ ? "chat.completion" : "text_completion") +
                     R"(","created":1700000000,"model":")" + model + R"(","choices":[{"index":0,)" +
                     choice +
                     R"(,"finish_reason":"stop"}],)"
                     R"("usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}})");
  }
  Reply(404, "application/json", R"({"error":{"message":"not found","code":"not_found"}})");
}

void Session::Reply(int status, std::string_view content_type, std::string_view body) {
  const char* reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Bad Request";
  out_ = "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: " + std::string(content_type) +
         "\r\nContent-Length: " + std::to_string(body.size()) +
         (req_.keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
  out_.append(body);
  Write(req_.keep_alive);
}

std::string Session::Event(int index, bool chat) const {
  const Options& o = engine_.options();
  const std::string text = "c" + std::to_string(index) + " ";
  const char* finish = index + 1 == o.chunks ? R"("stop")" : "null";
  const std::string choice =
      chat ? R"("delta":{"content":")" + text + R"("})" : R"("text":")" + text + R"(")";
  return std::string(R"(data: {"id":"cmpl-bench","object":")") +
         (chat ? "chat.completion.chunk" : "text_completion") +
         R"(","created":1700000000,"model":")" + JsonEscape(o.name) +
         R"(","choices":[{"index":0,)" + choice + R"(,"finish_reason":)" + finish + "}]}\n\n";
}

void Session::StartStream() {
  chunked_ = req_.version == "HTTP/1.1";
  if (!chunked_) req_.keep_alive = false;  // HTTP/1.0: the end of the body is the close
  out_ = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n";
  out_ += chunked_ ? "Transfer-Encoding: chunked\r\n" : "";
  out_ += req_.keep_alive ? "\r\n" : "Connection: close\r\n\r\n";
  next_chunk_ = 0;
  stream_start_ = Clock::now();
  SendChunk();  // the first event goes with the headers
}

void Session::SendChunk() {
  const int chunks = engine_.options().chunks;
  auto frame = [this](const std::string& data) {
    if (!chunked_) {
      out_ += data;
      return;
    }
    char size[20];
    std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    out_.append(size).append(data).append("\r\n");
  };
  if (next_chunk_ < chunks) frame(Event(next_chunk_++, chat_));
  if (next_chunk_ < chunks) return Write(false);
  frame("data: [DONE]\n\n");
  if (chunked_) out_ += "0\r\n\r\n";
  Write(req_.keep_alive);
}

// Sends out_; then reads the next request, or sends the stream's next event on time, or (not
// keep-alive and no stream left) closes.
void Session::Write(bool then_read) {
  const bool streaming = next_chunk_ > 0 && next_chunk_ < engine_.options().chunks;
  asio::async_write(
      socket_, asio::buffer(out_),
      [self = shared_from_this(), then_read, streaming](boost::system::error_code ec, size_t) {
        self->out_.clear();
        if (ec) return;  // the peer is gone: the session ends with its last reference
        if (streaming) {
          const auto interval = std::chrono::milliseconds(self->engine_.options().interval_ms);
          self->timer_.expires_at(self->stream_start_ + interval * self->next_chunk_);
          self->timer_.async_wait([self](boost::system::error_code ec) {
            if (!ec) self->SendChunk();
          });
        } else if (then_read) {
          self->next_chunk_ = 0;
          self->ReadHead();
        } else {
          boost::system::error_code ignored;
          self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
        }
      });
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  gswarm::bench::Flags flags("sse_engine");
  flags.Add("--model", &options.model);
  flags.Add("--served-model-name", &options.name);
  flags.Add("--host", &options.host);
  flags.Add("--port", &options.port, 0);
  flags.Add("--chunks", &options.chunks, 1);
  flags.Add("--interval-ms", &options.interval_ms, 0);
  flags.Add("--threads", &options.threads, 1);
  if (!flags.Parse(argc, argv)) return 2;
  struct stat st;
  if (options.model.empty() || stat(options.model.c_str(), &st) != 0) {
    std::cerr << "sse_engine: --model '" << options.model << "' does not exist\n";
    return 1;
  }
  gswarm::bench::RaiseNofileLimit();
  signal(SIGPIPE, SIG_IGN);

  asio::io_context io(options.threads);
  Engine engine(io, options);
  std::string error;
  if (!engine.Listen(&error)) {
    std::cerr << "sse_engine: cannot listen on " << options.host << ":" << options.port << ": "
              << error << "\n";
    return 1;
  }
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&io](boost::system::error_code, int) { io.stop(); });
  engine.Accept();
  std::cout << "listening on http://" << options.host << ":" << engine.port() << "\nready"
            << std::endl;

  std::vector<std::thread> threads;
  for (int i = 1; i < options.threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (std::thread& t : threads) t.join();
  return 0;
}
