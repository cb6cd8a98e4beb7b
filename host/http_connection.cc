#include "host/http_connection.h"

#include <array>
#include <chrono>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/http/read.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::host::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

// What a closing connection reads and throws away, at most, so that the client sees our answer
// instead of a reset (it may still be sending the body we refused).
constexpr size_t kMaxDrain = size_t{1} << 20;
constexpr absl::Duration kDrainTime = absl::Seconds(2);

std::string Seconds(absl::Duration d) { return absl::FormatDuration(d); }

// The client went away (as opposed to sending something we refuse).
bool IsHangUp(const error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ||
         ec == bhttp::error::partial_message || ec.category() == asio::error::get_ssl_category();
}

}  // namespace

Connection::Connection(std::shared_ptr<ServerCore> core, asio::ip::tcp::socket socket)
    : core_(std::move(core)),
      plain_(std::move(socket)),
      executor_(plain_.get_executor()),
      buffer_(core_->options.max_header_bytes + 4096),
      read_deadline_(executor_, [this] { OnReadDeadline(); }),
      // The client took nothing for the whole write timeout.
      write_deadline_(executor_, [this] { CloseSocket(); }) {
  if (core_->tls != nullptr) {
    tls_ =
        std::make_unique<asio::ssl::stream<asio::ip::tcp::socket>>(std::move(plain_), *core_->tls);
  }
}

Connection::~Connection() {
  gswarm::MutexLock lock(&core_->mu);
  core_->live.erase(this);
  core_->gone.SignalAll();
}

template <typename Fn>
void Connection::WithStream(Fn&& fn) {
  if (tls_ != nullptr) {
    fn(*tls_);
  } else {
    fn(plain_);
  }
}

asio::ip::tcp::socket& Connection::socket() {
  return tls_ != nullptr ? tls_->next_layer() : plain_;
}

void Connection::Run() {
  if (tls_ == nullptr) return WaitForRequest();
  reading_ = true;
  ArmReadTimer(core_->options.header_timeout);
  tls_->async_handshake(asio::ssl::stream_base::server,
                        [self = shared_from_this()](const error_code& ec) {
                          self->reading_ = false;
                          if (ec) return self->CloseSocket();
                          self->WaitForRequest();
                        });
}

void Connection::WaitForRequest() {
  if (closed_) return;
  if (buffer_.size() > 0) return ReadHeader();
  // Until the first byte of a request: a new connection gets the header's time, an idle one
  // the keep-alive time.
  ArmReadTimer(first_request_ ? core_->options.header_timeout : core_->options.keep_alive_timeout);
  StartPoke();
}

void Connection::StartPoke() {
  if (poking_ || closed_) return;
  poking_ = true;
  WithStream([&](auto& stream) {
    stream.async_read_some(buffer_.prepare(512),
                           [self = shared_from_this()](const error_code& ec, size_t bytes) {
                             self->OnPoke(ec, bytes);
                           });
  });
}

void Connection::OnPoke(error_code ec, size_t bytes) {
  poking_ = false;
  if (closed_) return;
  if (ec) return CloseSocket();  // hung up: an exchange in progress is cancelled
  buffer_.commit(bytes);
  if (closing_) {
    drained_ += buffer_.size();
    buffer_.consume(buffer_.size());
    if (drained_ > kMaxDrain) return CloseSocket();
    return StartPoke();
  }
  // A pipelined request waits until the answer in progress is out.
  if (active_) return;
  ReadHeader();
}

void Connection::ReadHeader() {
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(core_->options.max_header_bytes));
  parser_->body_limit(core_->options.max_body_bytes);
  reading_ = true;
  ArmReadTimer(core_->options.header_timeout);
  WithStream([&](auto& stream) {
    bhttp::async_read_header(
        stream, buffer_, *parser_,
        [self = shared_from_this()](const error_code& ec, size_t) { self->OnHeader(ec); });
  });
}

void Connection::OnHeader(error_code ec) {
  reading_ = false;
  if (closed_) return;
  if (ec) return OnReadError(ec, "headers");
  if (parser_->is_done()) return OnRequest();
  const auto expect = parser_->get().find(bhttp::field::expect);
  if (expect != parser_->get().end() &&
      absl::EqualsIgnoreCase(absl::string_view(expect->value().data(), expect->value().size()),
                             "100-continue")) {
    // curl asks before sending a body over 1 MiB, and waits a second for this otherwise.
    auto interim = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
    reading_ = true;
    WithStream([&](auto& stream) {
      asio::async_write(stream, asio::buffer(*interim),
                        [self = shared_from_this(), interim](const error_code& ec, size_t) {
                          self->reading_ = false;
                          if (ec) return self->CloseSocket();
                          self->ReadBody();
                        });
    });
    return;
  }
  ReadBody();
}

void Connection::ReadBody() {
  reading_ = true;
  ArmReadTimer(core_->options.body_timeout);
  WithStream([&](auto& stream) {
    bhttp::async_read(
        stream, buffer_, *parser_,
        [self = shared_from_this()](const error_code& ec, size_t) { self->OnBody(ec); });
  });
}

void Connection::OnBody(error_code ec) {
  reading_ = false;
  if (closed_) return;
  if (ec) return OnReadError(ec, "body");
  OnRequest();
}

void Connection::OnReadError(error_code ec, const char* what) {
  const HttpServer::Options& options = core_->options;
  if (timed_out_) {
    const absl::Duration limit =
        std::string_view(what) == "body" ? options.body_timeout : options.header_timeout;
    return Refuse(408, absl::StrCat("the request's ", what, " did not arrive within ",
                                    Seconds(limit), " (host.http_header_timeout_s)"));
  }
  if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
    return Refuse(431, absl::StrCat("the request line and headers are over ",
                                    options.max_header_bytes, " bytes"));
  }
  if (ec == bhttp::error::body_limit) {
    return Refuse(413, absl::StrCat("the request body is over ", options.max_body_bytes,
                                    " bytes (host.http_max_body_mb)"));
  }
  if (IsHangUp(ec)) return CloseSocket();
  Refuse(400, absl::StrCat("malformed HTTP request ", what, ": ", ec.message()));
}

void Connection::OnRequest() {
  read_deadline_.Clear();
  first_request_ = false;
  bhttp::request<bhttp::string_body> message = parser_->release();
  parser_.reset();
  Request request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  const size_t query = request.target.find('?');
  request.path = PercentDecode(std::string_view(request.target).substr(0, query), false);
  if (query != std::string::npos) {
    for (absl::string_view piece : absl::StrSplit(
             absl::string_view(request.target).substr(query + 1), '&', absl::SkipEmpty())) {
      const std::string_view pair(piece.data(), piece.size());
      const size_t eq = pair.find('=');
      request.params.emplace_back(
          PercentDecode(pair.substr(0, eq), true),
          eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1), true));
    }
  }
  request.headers.reserve(std::distance(message.begin(), message.end()));
  for (const auto& field : message) {
    request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  request.body = std::move(message.body());
  keep_alive_ = message.keep_alive();
  version_ = message.version();
  method_ = request.method;
  active_ = true;
  finished_ = false;
  started_ = false;
  chunked_ = false;
  cancelled_ = false;
  on_cancel_ = nullptr;
  on_finish_ = nullptr;
  arrived_ = absl::Now();
  first_byte_.reset();
  status_ = 0;
  if (buffer_.size() == 0) {
    buffer_.shrink_to_fit();  // a large request's buffer is not kept for the next one
    StartPoke();              // notices a client that hangs up before the answer
  }
  core_->Dispatch(shared_from_this(), std::move(request));
}

void Connection::Refuse(int status, std::string message) {
  Request request;
  if (parser_.has_value()) {
    request.method = std::string(parser_->get().method_string());
    request.target = std::string(parser_->get().target());
    request.path = PercentDecode(request.target.substr(0, request.target.find('?')), false);
  }
  parser_.reset();
  keep_alive_ = false;
  version_ = 11;
  active_ = true;
  finished_ = false;
  started_ = false;
  method_ = request.method;
  DoReply(core_->Error(request, status, std::move(message)));
}

void Connection::OnFinish(std::function<void(const Finished&)> finished) {
  asio::dispatch(executor_, [self = shared_from_this(), finished = std::move(finished)]() mutable {
    if (self->active_ && !self->closed_) self->on_finish_ = std::move(finished);
  });
}

void Connection::Report(bool complete) {
  std::function<void(const Finished&)> finished = std::move(on_finish_);
  on_finish_ = nullptr;
  if (!finished) return;
  const absl::Time now = absl::Now();
  Finished report;
  report.status = status_ == 0 ? 499 : status_;
  report.total = now - arrived_;
  if (first_byte_.has_value()) report.first_byte = *first_byte_ - arrived_;
  report.complete = complete;
  finished(report);
}

void Connection::Unanswered(std::string path) {
  asio::dispatch(executor_, [self = shared_from_this(), path = std::move(path)] {
    if (self->started_) {
      self->finished_ = true;  // a stream left unfinished: cut, so the client sees it incomplete
      return self->CloseSocket();
    }
    Request request;
    request.path = path;
    self->DoReply(self->core_->Error(request, 500, "the request was dropped unanswered"));
  });
}

void Connection::Close() {
  asio::dispatch(executor_, [self = shared_from_this()] { self->CloseSocket(); });
}

void Connection::Reply(Response response) {
  asio::dispatch(executor_, [self = shared_from_this(), response = std::move(response)]() mutable {
    self->DoReply(std::move(response));
  });
}

void Connection::Start(Response head) {
  asio::dispatch(executor_, [self = shared_from_this(), head = std::move(head)]() mutable {
    self->DoStart(std::move(head));
  });
}

void Connection::Write(std::string data, std::function<void(bool)> written) {
  asio::dispatch(executor_, [self = shared_from_this(), data = std::move(data),
                             written = std::move(written)]() mutable {
    if (!self->active_ || self->finished_ || self->closed_) {
      if (written) written(false);
      return;
    }
    PendingWrite write;
    if (self->chunked_) {
      if (data.empty()) {  // an empty chunk would end the stream
        if (written) written(true);
        return;
      }
      write.head = absl::StrCat(absl::Hex(data.size()), "\r\n");
      write.tail = "\r\n";
    }
    write.body = std::move(data);
    write.written = std::move(written);
    self->Queue(std::move(write));
  });
}

void Connection::End() {
  asio::dispatch(executor_, [self = shared_from_this()] {
    if (!self->active_ || self->finished_ || self->closed_) return;
    self->finished_ = true;
    PendingWrite write;
    if (self->chunked_) write.head = "0\r\n\r\n";
    write.last = true;
    self->Queue(std::move(write));
  });
}

void Connection::Abort() {
  asio::dispatch(executor_, [self = shared_from_this()] {
    self->finished_ = true;
    self->CloseSocket();
  });
}

void Connection::OnCancel(std::function<void()> cancelled) {
  asio::dispatch(executor_,
                 [self = shared_from_this(), cancelled = std::move(cancelled)]() mutable {
                   if (self->cancelled_ || self->closed_) {
                     cancelled();
                   } else {
                     self->on_cancel_ = std::move(cancelled);
                   }
                 });
}

std::string Connection::Head(const Response& response, std::optional<size_t> length) {
  std::string head =
      absl::StrCat("HTTP/1.1 ", response.status, " ", std::string(ReasonPhrase(response.status)),
                   "\r\nContent-Type: ", response.content_type, "\r\n");
  for (const auto& [name, value] : response.headers)
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  if (length.has_value()) {
    absl::StrAppend(&head, "Content-Length: ", *length, "\r\n");
  } else if (chunked_) {
    head += "Transfer-Encoding: chunked\r\n";
  }
  if (!keep_alive_) {
    head += "Connection: close\r\n";
  } else if (version_ < 11) {
    head += "Connection: keep-alive\r\n";
  }
  head += "\r\n";
  return head;
}

void Connection::DoReply(Response response) {
  if (!active_ || finished_ || closed_ || started_) return;
  finished_ = true;
  status_ = response.status;
  PendingWrite write;
  write.head = Head(response, response.body.size());
  if (method_ != "HEAD") write.body = std::move(response.body);
  write.last = true;
  Queue(std::move(write));
}

void Connection::DoStart(Response head) {
  if (!active_ || finished_ || closed_ || started_) return;
  started_ = true;
  status_ = head.status;
  // HTTP/1.0 has no chunks: the stream ends when the connection does.
  chunked_ = version_ >= 11;
  if (!chunked_) keep_alive_ = false;
  PendingWrite write;
  write.head = Head(head, std::nullopt);
  Queue(std::move(write));
}

void Connection::Queue(PendingWrite write) {
  writes_.push_back(std::move(write));
  DoWrite();
}

void Connection::DoWrite() {
  if (writing_ || writes_.empty() || closed_) return;
  writing_ = true;
  write_deadline_.Set(core_->options.write_timeout, weak_from_this());
  const PendingWrite& front = writes_.front();
  const std::array<asio::const_buffer, 3> buffers = {
      asio::buffer(front.head), asio::buffer(front.body), asio::buffer(front.tail)};
  WithStream([&](auto& stream) {
    asio::async_write(stream, buffers, [self = shared_from_this()](const error_code& ec, size_t) {
      self->OnWritten(ec);
    });
  });
}

void Connection::OnWritten(error_code ec) {
  writing_ = false;
  write_deadline_.Clear();
  PendingWrite done = std::move(writes_.front());
  writes_.pop_front();
  if (!ec && !first_byte_.has_value()) first_byte_ = absl::Now();
  if (done.written) done.written(!ec);
  if (ec) return CloseSocket();
  if (done.last) return FinishExchange();
  DoWrite();
}

void Connection::FinishExchange() {
  Report(/*complete=*/true);
  active_ = false;
  on_cancel_ = nullptr;
  if (!keep_alive_) return GracefulClose();
  if (poking_) {
    // The read posted during the answer is still waiting: it becomes the wait for the next
    // request, under the keep-alive time.
    ArmReadTimer(core_->options.keep_alive_timeout);
    return;
  }
  WaitForRequest();
}

void Connection::Cancel() {
  if (!active_ || cancelled_) return;
  cancelled_ = true;
  finished_ = true;
  if (std::function<void()> cancelled = std::move(on_cancel_)) cancelled();
}

void Connection::GracefulClose() {
  // Our answer is out; the client may still be sending (a body we refused). Reading what it
  // sends until it closes lets it read the answer instead of a reset.
  closing_ = true;
  error_code ignored;
  socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  buffer_.consume(buffer_.size());
  ArmReadTimer(kDrainTime);
  StartPoke();
}

void Connection::CloseSocket() {
  if (closed_) return;
  Cancel();
  if (active_) Report(/*complete=*/false);
  closed_ = true;
  error_code ignored;
  socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket().close(ignored);
  read_deadline_.Cancel();
  write_deadline_.Cancel();
  // A write in progress completes with an error and tells its own caller.
  for (size_t i = writing_ ? 1 : 0; i < writes_.size(); ++i) {
    if (writes_[i].written) writes_[i].written(false);
  }
  writes_.erase(writes_.begin() + (writing_ ? 1 : 0), writes_.end());
}

void Connection::ArmReadTimer(absl::Duration after) {
  timed_out_ = false;
  read_deadline_.Set(after, weak_from_this());
}

void Connection::OnReadDeadline() {
  if (closed_) return;
  if (reading_) {
    // Slowloris, or a body that stalled: the read in progress fails and answers 408.
    timed_out_ = true;
    error_code ignored;
    socket().cancel(ignored);
    return;
  }
  // Idle (no request began), or done draining.
  if (!active_) CloseSocket();
}

}  // namespace gswarm::host::http
