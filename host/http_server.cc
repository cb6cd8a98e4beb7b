#include "host/http_server.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/post.hpp"
#include "boost/beast/http/status.hpp"
#include "common/mutex.h"
#include "common/paths.h"
#include "common/status.h"
#include "host/http_connection.h"
#include "spdlog/spdlog.h"

namespace gswarm::host::http {
namespace {

// The longest request path routed; longer ones are answered 414.
constexpr size_t kMaxPathBytes = 4096;

namespace asio = boost::asio;
using boost::system::error_code;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

// --- IoThreads ------------------------------------------------------------------------------

IoThreads::IoThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) {
    // One thread runs it: Asio can skip the cross-thread wake-ups a shared context needs.
    contexts_.push_back(std::make_unique<asio::io_context>(1));
    work_.emplace_back(asio::make_work_guard(*contexts_.back()));
  }
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([context = contexts_[i].get()] {
      for (;;) {
        try {
          context->run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("HTTP I/O thread: {} (continuing)", e.what());
        }
      }
    });
  }
}

IoThreads::~IoThreads() { Stop(); }

asio::io_context& IoThreads::Next() {
  return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()];
}

void IoThreads::Stop() {
  for (auto& work : work_) work.reset();
  for (auto& context : contexts_) context->stop();
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

// --- Request --------------------------------------------------------------------------------

std::string Request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) return value;
  }
  return "";
}

bool Request::has_header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) return true;
  }
  return false;
}

std::string Request::param(std::string_view key) const {
  for (const auto& [name, value] : params) {
    if (name == key) return value;
  }
  return "";
}

bool Request::has_param(std::string_view key) const {
  for (const auto& [name, value] : params) {
    if (name == key) return true;
  }
  return false;
}

std::vector<std::string> Request::params_named(std::string_view key) const {
  std::vector<std::string> values;
  for (const auto& [name, value] : params) {
    if (name == key) values.push_back(value);
  }
  return values;
}

std::string PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%' && i + 2 < text.size()) {
      const int high = HexValue(text[i + 1]);
      const int low = HexValue(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out += static_cast<char>(high * 16 + low);
        i += 2;
        continue;
      }
    }
    out += plus_is_space && c == '+' ? ' ' : c;
  }
  return out;
}

std::string_view ReasonPhrase(int status) {
  const boost::beast::string_view reason =
      boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
  return std::string_view(reason.data(), reason.size());
}

// --- Exchange -------------------------------------------------------------------------------

Exchange::Exchange(std::shared_ptr<Connection> connection, Request request)
    : connection_(std::move(connection)), request_(std::move(request)) {}

Exchange::~Exchange() {
  if (!finished_.load()) connection_->Unanswered(request_.path);
}

void Exchange::Reply(Response response) {
  if (finished_.exchange(true)) return;
  connection_->Reply(std::move(response));
}

void Exchange::Start(Response head) { connection_->Start(std::move(head)); }

void Exchange::Write(std::string data, std::function<void(bool)> written) {
  connection_->Write(std::move(data), std::move(written));
}

void Exchange::End() {
  if (finished_.exchange(true)) return;
  connection_->End();
}

void Exchange::Abort() {
  if (finished_.exchange(true)) return;
  connection_->Abort();
}

void Exchange::OnCancel(std::function<void()> cancelled) {
  connection_->OnCancel(std::move(cancelled));
}

bool Exchange::cancelled() const { return connection_->cancelled(); }

asio::any_io_executor Exchange::executor() const { return connection_->executor(); }

void Exchange::OnFinish(std::function<void(const Finished&)> finished) {
  connection_->OnFinish(std::move(finished));
}

// --- ServerCore -----------------------------------------------------------------------------

Response ServerCore::Error(const Request& request, int status, std::string message) const {
  if (error_renderer) return error_renderer(request, status, std::move(message));
  Response response;
  response.status = status;
  response.content_type = "text/plain";
  response.body = std::move(message) + "\n";
  return response;
}

void ServerCore::Dispatch(const std::shared_ptr<Connection>& connection, Request request) const {
  const Handler* handler = nullptr;
  bool refused = false;
  std::optional<Response> answer;
  try {
    if (filter) answer = filter(request);
    refused = answer.has_value();
    if (!refused && request.path.size() > kMaxPathBytes) {
      // Also keeps std::regex (recursive in libstdc++) away from paths that would exhaust the
      // stack: a 30 KB path segment used to crash the host.
      answer =
          Error(request, 414, absl::StrCat("the request path is over ", kMaxPathBytes, " bytes"));
      refused = true;
    }
    if (!refused) {
      if (auto it = exact.find(absl::StrCat(request.method, " ", request.path));
          it != exact.end()) {
        handler = &it->second;
      }
      for (size_t r = 0; handler == nullptr && r < patterns.size(); ++r) {
        std::smatch match;
        if (patterns[r].method != request.method ||
            !std::regex_match(request.path, match, patterns[r].pattern)) {
          continue;
        }
        for (size_t i = 1; i < match.size(); ++i) request.matches.push_back(match[i].str());
        handler = &patterns[r].handler;
      }
    }
  } catch (const std::exception& e) {
    answer = Error(request, 500, absl::StrCat("internal error: ", e.what()));
  }
  if (!answer.has_value() && handler == nullptr) {
    answer = Error(request, 404,
                   absl::StrCat("no endpoint ", request.method, " ", request.path,
                                " (see the API table in the README)"));
  }
  auto exchange = std::make_shared<Exchange>(connection, std::move(request));
  if (answer.has_value()) return exchange->Reply(*std::move(answer));
  try {
    (*handler)(exchange);
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", exchange->request().method, exchange->request().path, e.what());
    exchange->Reply(Error(exchange->request(), 500, absl::StrCat("internal error: ", e.what())));
  }
}

// --- HttpServer -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(IoThreads* io, Options options) {
  std::shared_ptr<asio::ssl::context> tls;
  if (!options.tls.cert_file.empty()) {
    const std::string cert = common::ExpandUser(options.tls.cert_file);
    const std::string key = common::ExpandUser(options.tls.key_file);
    tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    error_code ec;
    tls->use_certificate_chain_file(cert, ec);
    if (!ec) tls->use_private_key_file(key, asio::ssl::context::pem, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot serve HTTPS with certificate ", cert, " and key ", key, ": ", ec.message(),
          " (unreadable, not PEM, or the key does not match: check "
          "host.tls)"));
    }
  }
  std::unique_ptr<HttpServer> server(new HttpServer(io, std::move(options)));
  server->core_->tls = std::move(tls);
  return server;
}

HttpServer::HttpServer(IoThreads* io, Options options)
    : io_(io), core_(std::make_shared<ServerCore>()), acceptor_(io->context()) {
  core_->options = std::move(options);
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(const std::string& method, const std::string& pattern, Handler handler) {
  if (pattern.find('(') == std::string::npos) {
    core_->exact[absl::StrCat(method, " ", pattern)] = std::move(handler);
  } else {
    core_->patterns.push_back({method, std::regex(pattern), std::move(handler)});
  }
}

void HttpServer::set_filter(Filter filter) { core_->filter = std::move(filter); }

void HttpServer::set_error_renderer(ErrorRenderer renderer) {
  core_->error_renderer = std::move(renderer);
}

absl::StatusOr<int> HttpServer::Listen(const std::string& host, int port) {
  auto unavailable = [&](const std::string& why) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", host, ":", port, ": ", why,
                     " (the address is in use or not available: set host.port or pass --port)"));
  };
  error_code ec;
  asio::ip::tcp::resolver resolver(io_->context());
  const auto results =
      resolver.resolve(host, std::to_string(port), asio::ip::resolver_base::passive, ec);
  if (ec || results.empty()) return unavailable(ec ? ec.message() : "no address");
  const asio::ip::tcp::endpoint endpoint = results.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), ec);
  // Not SO_REUSEPORT: a second host on the same port must fail, not share it.
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    acceptor_.close(ignored);
    return unavailable(ec.message());
  }
  const int bound = acceptor_.local_endpoint().port();
  asio::post(acceptor_.get_executor(), [this] { Accept(); });
  return bound;
}

void HttpServer::Accept() {
  acceptor_.async_accept(io_->Next(), [this, core = core_](const error_code& ec,
                                                           asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      spdlog::warn("HTTP: accepting a connection failed: {} (retrying in 100 ms)", ec.message());
      return AcceptLater();
    }
    error_code ignored;
    // Without it each small answer waits on the client's delayed ACK (~40 ms).
    socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    auto connection = std::make_shared<Connection>(core, std::move(socket));
    bool stopping;
    {
      gswarm::MutexLock lock(&core->mu);
      stopping = core->stopping;
      if (!stopping) core->live.emplace(connection.get(), connection);
    }
    if (!stopping) connection->Run();
    Accept();
  });
}

void HttpServer::AcceptLater() {
  if (retry_timer_ == nullptr) {
    retry_timer_ = std::make_unique<asio::steady_timer>(acceptor_.get_executor());
  }
  retry_timer_->expires_after(std::chrono::milliseconds(100));
  retry_timer_->async_wait([this](const error_code& ec) {
    if (!ec && acceptor_.is_open()) Accept();
  });
}

void HttpServer::Stop(absl::Duration grace) {
  std::vector<std::shared_ptr<Connection>> open;
  {
    gswarm::MutexLock lock(&core_->mu);
    if (core_->stopping) return;
    core_->stopping = true;
    for (const auto& [raw, weak] : core_->live) {
      if (std::shared_ptr<Connection> connection = weak.lock()) open.push_back(connection);
    }
  }
  // The acceptor is closed on its own thread (an accept may be in progress there).
  gswarm::Notification closed;
  asio::post(acceptor_.get_executor(), [this, &closed] {
    error_code ignored;
    acceptor_.close(ignored);
    if (retry_timer_ != nullptr) retry_timer_->cancel();
    closed.Notify();
  });
  if (!closed.WaitForNotificationWithTimeout(grace)) {
    spdlog::warn("HTTP: the listener did not close within {}", absl::FormatDuration(grace));
  }
  for (const std::shared_ptr<Connection>& connection : open) connection->Close();
  open.clear();
  const absl::Time deadline = absl::Now() + grace;
  gswarm::MutexLock lock(&core_->mu);
  while (!core_->live.empty()) {
    if (core_->gone.WaitWithDeadline(&core_->mu, deadline)) break;
  }
  if (!core_->live.empty()) {
    spdlog::warn(
        "HTTP: {} connection(s) still held {} after stopping (their requests are "
        "waiting on work elsewhere)",
        core_->live.size(), absl::FormatDuration(grace));
  }
}

size_t HttpServer::connections() const {
  gswarm::MutexLock lock(&core_->mu);
  return core_->live.size();
}

}  // namespace gswarm::host::http
