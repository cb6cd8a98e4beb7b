#include "host/router_proxy.h"

#include <httplib.h>

#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/proto_json.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

void ReplyBadGateway(httplib::Response& res, const std::string& message) {
  ReplyOpenAiError(res, 502, message, "server_error", nullptr);
}

// One streamed exchange: the upstream request runs on `thread_`, its chunks queue up here until
// Pump writes them to our client. Destroying it aborts the upstream request if it still runs.
class Relay {
 public:
  Relay(UpstreamPool& pool, UpstreamCall call, std::shared_ptr<void> hold)
      : hold_(std::move(hold)),
        pool_(pool),
        call_(std::move(call)),
        client_(pool.Take(call_.endpoint)) {
    thread_ = std::thread([this] { Run(); });
  }

  ~Relay() {
    Cancel();
    thread_.join();
    bool reusable;
    {
      absl::MutexLock lock(&mu_);
      reusable = done_ && ok_ && !cancelled_;
    }
    if (reusable) pool_.Give(call_.endpoint, std::move(client_));
  }

  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Waits for the answer's headers (true) or the exchange's failure before them (false).
  bool AwaitHeaders() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &Relay::HeadersOrDone));
    return headers_;
  }
  int status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  std::string content_type() const {
    absl::MutexLock lock(&mu_);
    return content_type_;
  }
  std::string error() const {
    absl::MutexLock lock(&mu_);
    return error_;
  }

  // Waits for the end and returns the whole body; false if the exchange broke.
  bool Drain(std::string* body) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    for (const std::string& chunk : chunks_) body->append(chunk);
    chunks_.clear();
    return ok_;
  }

  // Writes every chunk to `sink` as it arrives, until the upstream answer ends. False when our
  // client went away (the upstream request is then aborted) or the upstream answer broke off.
  bool Pump(httplib::DataSink& sink) {
    for (;;) {
      std::deque<std::string> batch;
      bool done;
      bool ok;
      {
        absl::MutexLock lock(&mu_);
        // Wake now and then to notice a client that left while the engine is silent.
        mu_.AwaitWithTimeout(absl::Condition(this, &Relay::HasWork), absl::Seconds(1));
        batch.swap(chunks_);
        done = done_;
        ok = ok_;
      }
      if (batch.empty() && !done && !sink.is_writable()) {
        Cancel();
        return false;
      }
      for (const std::string& chunk : batch) {
        if (!sink.write(chunk.data(), chunk.size())) {
          Cancel();
          return false;
        }
      }
      if (done) {
        if (!ok) return false;  // cut our stream too, so the client sees it was incomplete
        sink.done();
        return true;
      }
    }
  }

  // Aborts the upstream request: the next chunk is refused, and a blocked read fails now.
  void Cancel() {
    {
      absl::MutexLock lock(&mu_);
      if (done_ || cancelled_) return;
      cancelled_ = true;
    }
    client_->stop();  // thread-safe: shuts the socket of a request in progress
  }

 private:
  bool HeadersOrDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return headers_ || done_; }
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !chunks_.empty() || done_; }

  void Run() {
    httplib::Request request;
    request.method = "POST";
    request.path = call_.path;
    request.headers = {{"Content-Type", call_.content_type}, {"Accept-Encoding", "identity"}};
    request.body = call_.body;
    request.response_handler = [this](const httplib::Response& response) {
      absl::MutexLock lock(&mu_);
      status_ = response.status;
      content_type_ = response.get_header_value("Content-Type");
      headers_ = true;
      return !cancelled_;
    };
    request.content_receiver = [this](const char* data, size_t size, uint64_t, uint64_t) {
      absl::MutexLock lock(&mu_);
      if (cancelled_) return false;
      chunks_.emplace_back(data, size);
      return true;
    };
    httplib::Response response;
    httplib::Error error = httplib::Error::Success;
    const bool ok = client_->send(request, response, error);
    absl::MutexLock lock(&mu_);
    ok_ = ok;
    if (!ok) {
      error_ = cancelled_ ? "cancelled: the client went away" : httplib::to_string(error);
    }
    done_ = true;
  }

  // Declared first so that it is released last, once the upstream request is over.
  const std::shared_ptr<void> hold_;
  UpstreamPool& pool_;
  const UpstreamCall call_;
  std::unique_ptr<httplib::Client> client_;  // used by thread_; stop() from any thread
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool headers_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool ok_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  int status_ ABSL_GUARDED_BY(mu_) = 0;
  std::string content_type_ ABSL_GUARDED_BY(mu_);
  std::string error_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> chunks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

void ReplyOpenAiError(httplib::Response& res, int status, const std::string& message,
                      const char* type, const char* code) {
  res.status = status;
  nlohmann::json error = {
      {"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (code != nullptr) error["code"] = code;
  res.set_content(common::DumpJson(nlohmann::json{{"error", std::move(error)}}) + "\n",
                  "application/json");
}

std::string OrJson(std::string content_type) {
  return content_type.empty() ? "application/json" : content_type;
}

UpstreamPool::UpstreamPool(absl::Duration connect_timeout, absl::Duration read_timeout)
    : connect_timeout_(connect_timeout), read_timeout_(read_timeout) {}

UpstreamPool::~UpstreamPool() = default;

std::unique_ptr<httplib::Client> UpstreamPool::Take(const std::string& endpoint) {
  {
    absl::MutexLock lock(&mu_);
    auto it = idle_.find(endpoint);
    if (it != idle_.end() && !it->second.empty()) {
      std::unique_ptr<httplib::Client> client = std::move(it->second.back());
      it->second.pop_back();
      return client;
    }
  }
  auto client = std::make_unique<httplib::Client>(endpoint);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);  // small requests must not wait on delayed ACKs
  // Bodies pass through as the engine wrote them (we ask for no encoding anyway).
  client->set_decompress(false);
  const auto usec = [](absl::Duration d) { return absl::ToInt64Microseconds(d); };
  client->set_connection_timeout(usec(connect_timeout_) / 1000000,
                                 usec(connect_timeout_) % 1000000);
  client->set_read_timeout(usec(read_timeout_) / 1000000, usec(read_timeout_) % 1000000);
  client->set_write_timeout(usec(read_timeout_) / 1000000, usec(read_timeout_) % 1000000);
  return client;
}

void UpstreamPool::Give(const std::string& endpoint, std::unique_ptr<httplib::Client> client) {
  absl::MutexLock lock(&mu_);
  std::vector<std::unique_ptr<httplib::Client>>& idle = idle_[endpoint];
  if (idle.size() < kMaxIdlePerEndpoint) idle.push_back(std::move(client));
}

absl::StatusOr<std::unique_ptr<UpstreamConnection>> UpstreamPool::TakeConnection(
    const std::string& endpoint, bool* reused) {
  {
    absl::MutexLock lock(&mu_);
    auto it = idle_connections_.find(endpoint);
    if (it != idle_connections_.end() && !it->second.empty()) {
      std::unique_ptr<UpstreamConnection> connection = std::move(it->second.back());
      it->second.pop_back();
      *reused = true;
      return connection;
    }
  }
  *reused = false;
  return UpstreamConnection::Connect(endpoint, connect_timeout_, read_timeout_);
}

void UpstreamPool::GiveConnection(const std::string& endpoint,
                                  std::unique_ptr<UpstreamConnection> connection) {
  absl::MutexLock lock(&mu_);
  std::vector<std::unique_ptr<UpstreamConnection>>& idle = idle_connections_[endpoint];
  if (idle.size() < kMaxIdlePerEndpoint) idle.push_back(std::move(connection));
}

void ProxyRequest(UpstreamPool& pool, const UpstreamCall& call, httplib::Response& res) {
  for (;;) {
    bool reused = false;
    absl::StatusOr<std::unique_ptr<UpstreamConnection>> connection =
        pool.TakeConnection(call.endpoint, &reused);
    if (!connection.ok()) {
      return ReplyBadGateway(res, absl::StrCat("cannot get an answer from ", call.what, ": ",
                                               connection.status().message()));
    }
    bool sent_nothing_back = false;
    absl::StatusOr<UpstreamConnection::Answer> answer =
        (*connection)->Post(call.path, call.content_type, call.body, &sent_nothing_back);
    if (!answer.ok()) {
      // An idle connection the engine had closed meanwhile: it never saw the request.
      if (reused && sent_nothing_back) continue;
      return ReplyBadGateway(res, absl::StrCat("cannot get an answer from ", call.what, ": ",
                                               answer.status().message()));
    }
    res.status = answer->status;
    res.set_content(std::move(answer->body), OrJson(std::move(answer->content_type)));
    if (answer->reusable) pool.GiveConnection(call.endpoint, *std::move(connection));
    return;
  }
}

void ProxyStream(UpstreamPool& pool, UpstreamCall call, std::shared_ptr<void> hold,
                 httplib::Response& res) {
  const std::string what = call.what;
  auto relay = std::make_shared<Relay>(pool, std::move(call), std::move(hold));
  if (!relay->AwaitHeaders()) {
    return ReplyBadGateway(res,
                           absl::StrCat("cannot get an answer from ", what, ": ", relay->error()));
  }
  const std::string content_type = relay->content_type();
  if (relay->status() != 200 || !absl::StartsWith(content_type, "text/event-stream")) {
    // An error (or an engine that ignored "stream"): one body, status and all.
    std::string body;
    if (!relay->Drain(&body)) {
      return ReplyBadGateway(
          res, absl::StrCat("the answer from ", what, " broke off: ", relay->error()));
    }
    res.status = relay->status();
    res.set_content(body, OrJson(content_type));
    return;
  }
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  // The relay (and with it the lease) lives as long as the response: until the stream is over or
  // our client is gone.
  res.set_chunked_content_provider(
      content_type,
      [relay](size_t /*offset*/, httplib::DataSink& sink) { return relay->Pump(sink); },
      [relay](bool /*success*/) { relay->Cancel(); });
}

}  // namespace gswarm::host
