#include "host/http_upstream.h"

#include <array>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/execution/context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/query.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http/buffer_body.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/read.hpp"
#include "common/mutex.h"
#include "common/proto_json.h"
#include "host/lazy_deadline.h"
#include "nlohmann/json.hpp"

namespace gswarm::host {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

struct UpstreamPool::Shared {
  explicit Shared(Options options) : options(std::move(options)) {}

  // Idle connections are kept per endpoint and per I/O thread: a socket's handlers run on the
  // thread it was made on, which must be its relay's.
  using Key = std::pair<std::string, const void*>;

  const Options options;
  gswarm::Mutex mu;
  absl::flat_hash_map<Key, std::vector<tcp::socket>> idle ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;

  static Key KeyOf(const std::string& endpoint, const asio::any_io_executor& executor) {
    return {endpoint, &asio::query(executor, asio::execution::context)};
  }

  std::optional<tcp::socket> TakeIdle(const std::string& endpoint,
                                      const asio::any_io_executor& executor) {
    gswarm::MutexLock lock(&mu);
    auto it = idle.find(KeyOf(endpoint, executor));
    if (it == idle.end() || it->second.empty()) return std::nullopt;
    tcp::socket socket = std::move(it->second.back());
    it->second.pop_back();
    return socket;
  }

  void GiveIdle(const std::string& endpoint, tcp::socket socket) {
    gswarm::MutexLock lock(&mu);
    if (closed) return;
    std::vector<tcp::socket>& sockets = idle[KeyOf(endpoint, socket.get_executor())];
    if (sockets.size() < options.max_idle_per_endpoint) sockets.push_back(std::move(socket));
  }
};

namespace {

constexpr size_t kMaxHeaders = UpstreamPool::kMaxHeaders;
// One read from the engine, at most: a stream's chunk is a few hundred bytes.
constexpr size_t kReadSize = 8 << 10;

// "host:port" of "http://host:port"; empty for any other form.
std::string_view HostPort(std::string_view endpoint) {
  return endpoint.starts_with("http://") ? endpoint.substr(7) : std::string_view();
}

std::string OrJson(std::string content_type) {
  return content_type.empty() ? "application/json" : content_type;
}

// One request to an engine and its answer, on the I/O thread of the client's connection (its
// pooled sockets were made there too): no hand-off between threads on the way.
class Relay : public std::enable_shared_from_this<Relay> {
 public:
  Relay(std::shared_ptr<UpstreamPool::Shared> pool, UpstreamCall call,
        std::shared_ptr<http::Exchange> exchange, std::shared_ptr<void> hold)
      : pool_(std::move(pool)),
        call_(std::move(call)),
        exchange_(std::move(exchange)),
        hold_(std::move(hold)),
        executor_(exchange_->executor()),
        deadline_(executor_, [this] { TimedOut(); }) {}

  void Run() {
    asio::dispatch(executor_, [self = shared_from_this()] { self->Begin(); });
  }

 private:
  void Begin() {
    std::weak_ptr<Relay> weak = weak_from_this();
    exchange_->OnCancel([weak] {
      if (std::shared_ptr<Relay> self = weak.lock()) {
        asio::post(self->executor_, [self] { self->ClientGone(); });
      }
    });
    if (std::optional<tcp::socket> idle = pool_->TakeIdle(call_.endpoint, executor_)) {
      socket_.emplace(std::move(*idle));
      reused_ = true;
      return Send();
    }
    Connect();
  }

  void Connect() {
    reused_ = false;
    const std::string_view rest = HostPort(call_.endpoint);
    if (rest.empty()) {
      return Fail(absl::StrCat("the endpoint ", call_.endpoint, " is not http://host:port"));
    }
    const size_t colon = rest.rfind(':');
    std::string host(rest.substr(0, colon));
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    const std::string port(colon == std::string_view::npos ? "80" : rest.substr(colon + 1));
    socket_.emplace(executor_);
    Arm(pool_->options.connect_timeout, "connecting");
    // An engine's address is nearly always an IP: connect at once, without a trip through the
    // resolver's thread.
    error_code not_ip;
    const asio::ip::address address = asio::ip::make_address(host, not_ip);
    uint32_t port_number = 0;
    if (!not_ip && absl::SimpleAtoi(port, &port_number) && port_number <= 65535) {
      socket_->async_connect(
          tcp::endpoint(address, static_cast<uint16_t>(port_number)),
          [self = shared_from_this()](const error_code& ec) { self->Connected(ec); });
      return;
    }
    resolver_.emplace(executor_);
    resolver_->async_resolve(
        host, port,
        [self = shared_from_this()](const error_code& ec, tcp::resolver::results_type results) {
          if (self->Over(ec, "connecting")) return;
          asio::async_connect(
              *self->socket_, results,
              [self](const error_code& ec, const tcp::endpoint&) { self->Connected(ec); });
        });
  }

  void Connected(const error_code& ec) {
    if (Over(ec, "connecting")) return;
    error_code ignored;
    socket_->set_option(tcp::no_delay(true), ignored);
    Send();
  }

  void Send() {
    head_ = absl::StrCat(
        "POST ", call_.path, " HTTP/1.1\r\nHost: ", std::string(HostPort(call_.endpoint)),
        "\r\nContent-Type: ", call_.content_type, "\r\nContent-Length: ", call_.body.size(),
        "\r\nAccept-Encoding: identity\r\n\r\n");
    Arm(pool_->options.read_timeout, "sending the request");
    const std::array<asio::const_buffer, 2> buffers = {asio::buffer(head_),
                                                       asio::buffer(call_.body)};
    asio::async_write(*socket_, buffers, [self = shared_from_this()](const error_code& ec, size_t) {
      if (self->Retry(ec) || self->Over(ec, "sending the request")) return;
      self->ReadHeader();
    });
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(kMaxHeaders));
    if (call_.stream) {
      parser_->body_limit(boost::none);
    } else {
      parser_->body_limit(UpstreamPool::kMaxBody);
    }
    Arm(pool_->options.read_timeout, "waiting for the answer");
    bhttp::async_read_header(*socket_, buffer_, *parser_,
                             [self = shared_from_this()](const error_code& ec, size_t) {
                               if (self->Retry(ec) || self->Over(ec, "waiting for the answer")) {
                                 return;
                               }
                               self->OnHeader();
                             });
  }

  void OnHeader() {
    const auto& head = parser_->get();
    status_ = static_cast<int>(head.result_int());
    const auto type = head.find(bhttp::field::content_type);
    content_type_ = type == head.end() ? "" : std::string(type->value());
    streaming_ =
        call_.stream && status_ == 200 && absl::StartsWith(content_type_, "text/event-stream");
    if (streaming_) {
      http::Response start;
      start.status = 200;
      start.content_type = content_type_;
      start.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};
      exchange_->Start(std::move(start));
      started_ = true;
    }
    Continue();
  }

  // Reads the next part of the body, or finishes.
  void Continue() {
    if (done_) return;
    if (parser_->is_done()) return Finish();
    parser_->get().body().data = chunk_.data();
    parser_->get().body().size = chunk_.size();
    Arm(pool_->options.read_timeout, "reading the answer");
    bhttp::async_read_some(*socket_, buffer_, *parser_,
                           [self = shared_from_this()](error_code ec, size_t) {
                             if (ec == bhttp::error::need_buffer) ec = {};
                             if (self->Over(ec, "reading the answer")) return;
                             self->OnBodyPart();
                           });
  }

  void OnBodyPart() {
    const size_t bytes = chunk_.size() - parser_->get().body().size;
    if (!streaming_) {
      body_.append(chunk_.data(), bytes);
      return Continue();
    }
    if (bytes == 0) return Continue();
    // The next read waits until our client has taken this chunk.
    exchange_->Write(std::string(chunk_.data(), bytes), [self = shared_from_this()](bool written) {
      asio::post(self->executor_, [self, written] {
        if (!written) return self->ClientGone();
        self->Continue();
      });
    });
  }

  void Finish() {
    done_ = true;
    deadline_.Cancel();
    const bool reusable = parser_->get().keep_alive() && !cancelled_;
    hold_.reset();  // the engine is done with it: the lease ends before the client hears so
    if (streaming_) {
      exchange_->End();
    } else {
      http::Response answer;
      answer.status = status_;
      answer.content_type = OrJson(content_type_);
      answer.body = std::move(body_);
      exchange_->Reply(std::move(answer));
    }
    if (reusable && buffer_.size() == 0) pool_->GiveIdle(call_.endpoint, std::move(*socket_));
    socket_.reset();
  }

  // An idle connection the engine had closed meanwhile never saw the request: send it again
  // on a new one (once).
  bool Retry(const error_code& ec) {
    if (!ec || !reused_ || timed_out_ || cancelled_ || buffer_.size() > 0) return false;
    if (ec != asio::error::eof && ec != bhttp::error::end_of_stream &&
        ec != asio::error::connection_reset && ec != asio::error::broken_pipe) {
      return false;
    }
    error_code ignored;
    socket_->close(ignored);
    Connect();
    return true;
  }

  // Whether the exchange is over: the client left, or `ec` failed it (502 or a cut stream).
  bool Over(const error_code& ec, const char* during) {
    if (cancelled_ || done_) return true;
    if (!ec) return false;
    const std::string why =
        timed_out_
            ? absl::StrCat("no answer within ", absl::FormatDuration(timeout_), " while ", during)
            : absl::StrCat(ec.message(), " while ", during);
    Fail(why);
    return true;
  }

  void Fail(const std::string& why) {
    done_ = true;
    deadline_.Cancel();
    if (socket_.has_value()) {
      error_code ignored;
      socket_->close(ignored);
    }
    hold_.reset();
    if (started_) {
      exchange_->Abort();  // cut: the client sees the stream incomplete
    } else {
      exchange_->Reply(OpenAiError(
          502,
          absl::StrCat(started_ || status_ != 0 ? "the answer from " : "cannot get an answer from ",
                       call_.what, ": ", why),
          "server_error", nullptr));
    }
  }

  void ClientGone() {
    if (done_ || cancelled_) return;
    cancelled_ = true;
    done_ = true;
    deadline_.Cancel();
    if (socket_.has_value()) {
      error_code ignored;
      socket_->close(ignored);  // the engine sees the request end and stops generating
    }
    if (resolver_.has_value()) resolver_->cancel();
    hold_.reset();
  }

  void Arm(absl::Duration timeout, const char* /*during*/) {
    timeout_ = timeout;
    timed_out_ = false;
    deadline_.Set(timeout, weak_from_this());
  }

  // The operation in progress fails (Over sees timed_out_).
  void TimedOut() {
    if (done_) return;
    timed_out_ = true;
    error_code ignored;
    if (socket_.has_value()) socket_->cancel(ignored);
    if (resolver_.has_value()) resolver_->cancel();
  }

  const std::shared_ptr<UpstreamPool::Shared> pool_;
  const UpstreamCall call_;
  const std::shared_ptr<http::Exchange> exchange_;
  std::shared_ptr<void> hold_;
  const asio::any_io_executor executor_;
  http::LazyDeadline deadline_;
  absl::Duration timeout_;
  std::optional<tcp::resolver> resolver_;
  std::optional<tcp::socket> socket_;
  std::string head_;
  boost::beast::flat_buffer buffer_{kMaxHeaders + kReadSize};
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser_;
  std::array<char, kReadSize> chunk_;
  std::string body_;
  std::string content_type_;
  int status_ = 0;
  bool reused_ = false;
  bool streaming_ = false;
  bool started_ = false;
  bool timed_out_ = false;
  bool cancelled_ = false;
  bool done_ = false;
};

}  // namespace

UpstreamPool::UpstreamPool(Options options)
    : shared_(std::make_shared<Shared>(std::move(options))) {}

UpstreamPool::~UpstreamPool() = default;

void UpstreamPool::Close() {
  absl::flat_hash_map<Shared::Key, std::vector<tcp::socket>> idle;
  {
    gswarm::MutexLock lock(&shared_->mu);
    shared_->closed = true;
    idle.swap(shared_->idle);
  }
}

void UpstreamPool::Proxy(UpstreamCall call, std::shared_ptr<http::Exchange> exchange,
                         std::shared_ptr<void> hold) {
  std::make_shared<Relay>(shared_, std::move(call), std::move(exchange), std::move(hold))->Run();
}

http::Response OpenAiError(int status, const std::string& message, const char* type,
                           const char* code) {
  nlohmann::json error = {
      {"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (code != nullptr) error["code"] = code;
  http::Response response;
  response.status = status;
  response.body = common::DumpJson(nlohmann::json{{"error", std::move(error)}}) + "\n";
  return response;
}

}  // namespace gswarm::host
