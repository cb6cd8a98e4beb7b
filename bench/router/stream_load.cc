// stream_load: C concurrent streamed completions against one URL, each on its own connection,
// every stream checked whole and in order (bench/router/run.sh; the engine is sse_engine).
//
//   stream_load --url http://127.0.0.1:PORT/v1/chat/completions --model NAME --streams 10000
//               --chunks 40 [--ramp 64] [--timeout-s 300] [--rss-pid PID] [--sample-ms 50]
//
// Each stream POSTs {"model", "messages", "stream": true} and reads the answer: status 200,
// text/event-stream, a body framed by chunked transfer encoding, Content-Length or the close.
// It is ok only when the body ends after exactly --chunks `data:` events whose text is "c0",
// "c1", ... in order, then `data: [DONE]`. Connects are ramped: at most --ramp streams are
// waiting for their response headers at once, so the server's accept queue cannot overflow.
// With --rss-pid, that process's VmRSS is sampled before the first connect and every --sample-ms
// while streams run. Prints one JSON object on stdout; one thread, Boost.Asio.
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/router/sse_response.h"
#include "bench/router/tool_util.h"

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using gswarm::bench::SseResponse;

struct Options {
  std::string url, model = "bench";
  int streams = 100, chunks = 40, ramp = 64, sample_ms = 50;
  double timeout_s = 300;
  long rss_pid = 0;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

long ReadRssKib(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

std::string JsonString(std::string_view s) { return "\"" + gswarm::bench::JsonEscape(s) + "\""; }

class Load;

// One streamed request on its own connection; reports to the Load when it ends either way.
class Stream : public std::enable_shared_from_this<Stream> {
 public:
  Stream(asio::io_context& io, Load& load, int id, int chunks)
      : socket_(io), load_(load), id_(id), response_(chunks) {}
  // `request` must outlive the stream (it is the Load's).
  void Start(const tcp::endpoint& ep, const std::string& request);
  void Abort(const std::string& why) { Finish(false, "timeout", why); }
  bool finished() const { return finished_; }

 private:
  void Read();
  void After(SseResponse::State before);
  void Finish(bool ok, const std::string& kind, const std::string& why);

  tcp::socket socket_;
  Load& load_;
  const int id_;
  SseResponse response_;
  Clock::time_point start_;
  char buf_[4096];
  bool open_ = false;  // the response headers came: the Load counts the stream as open
  bool finished_ = false;
};

class Load {
 public:
  Load(asio::io_context& io, const Options& o, tcp::endpoint ep, std::string request)
      : io_(io), o_(o), ep_(ep), request_(std::move(request)), sampler_(io), deadline_(io) {}

  void Run() {
    if (o_.rss_pid > 0) rss_before_ = ReadRssKib(o_.rss_pid);
    start_ = Clock::now();
    deadline_.expires_after(std::chrono::milliseconds(static_cast<long>(o_.timeout_s * 1000)));
    deadline_.async_wait([this](boost::system::error_code ec) {
      if (ec || ended_ >= o_.streams) return;
      stopping_ = true;
      for (auto& s : streams_) {
        if (!s->finished()) s->Abort("no end within --timeout-s");
      }
      if (started_ < o_.streams) {
        errors_["not-started"] += o_.streams - started_;
        ended_ += o_.streams - started_;
        if (first_error_.empty()) first_error_ = "streams not started within --timeout-s";
        MaybeDone();
      }
    });
    if (o_.rss_pid > 0) Sample();
    Launch();
    io_.run();
  }
  void OnHeaders() {
    --waiting_;
    ++open_;
    max_open_ = std::max(max_open_, open_);
    if (open_ == o_.streams) all_open_s_ = Seconds(Clock::now() - start_);
    Launch();
  }
  void OnEnd(bool had_headers, double seconds, bool ok, const std::string& kind,
             const std::string& why) {
    if (had_headers) {
      --open_;
    } else {
      --waiting_;
    }
    if (ok) {
      durations_.push_back(seconds);
    } else {
      ++errors_[kind];
      if (first_error_.empty()) first_error_ = why;
    }
    ++ended_;
    MaybeDone();
    Launch();
  }
  void Print() const;

 private:
  void MaybeDone() {
    if (ended_ < o_.streams) return;
    wall_s_ = Seconds(Clock::now() - start_);
    sampler_.cancel();
    deadline_.cancel();
  }
  void Launch() {
    while (!stopping_ && started_ < o_.streams && waiting_ < o_.ramp) {
      auto s = std::make_shared<Stream>(io_, *this, started_++, o_.chunks);
      streams_.push_back(s);
      ++waiting_;
      s->Start(ep_, request_);
    }
  }
  void Sample() {
    const long rss = ReadRssKib(o_.rss_pid);
    // The figure per stream is taken at the most streams open at once (all of them, normally).
    if (open_ > rss_open_ || (open_ == rss_open_ && rss > rss_at_open_)) {
      rss_open_ = open_;
      rss_at_open_ = rss;
    }
    rss_peak_ = std::max(rss_peak_, rss);
    // A wait that had already expired when MaybeDone cancelled it still lands here.
    if (ended_ >= o_.streams) return;
    sampler_.expires_after(std::chrono::milliseconds(o_.sample_ms));
    sampler_.async_wait([this](boost::system::error_code ec) {
      if (!ec) Sample();
    });
  }

  asio::io_context& io_;
  const Options& o_;
  const tcp::endpoint ep_;
  const std::string request_;
  asio::steady_timer sampler_, deadline_;
  std::vector<std::shared_ptr<Stream>> streams_;
  Clock::time_point start_;
  bool stopping_ = false;
  int started_ = 0, waiting_ = 0, open_ = 0, max_open_ = 0, ended_ = 0, rss_open_ = 0;
  double wall_s_ = 0, all_open_s_ = -1;
  long rss_before_ = -1, rss_peak_ = -1, rss_at_open_ = -1;
  std::vector<double> durations_;  // of the streams that were ok, from their connect
  std::map<std::string, int> errors_;
  std::string first_error_;
};

void Stream::Start(const tcp::endpoint& ep, const std::string& request) {
  start_ = Clock::now();
  socket_.async_connect(ep, [self = shared_from_this(), &request](boost::system::error_code ec) {
    if (ec) return self->Finish(false, "connect", "connect: " + ec.message());
    self->socket_.set_option(tcp::no_delay(true), ec);
    asio::async_write(self->socket_, asio::buffer(request),
                      [self](boost::system::error_code ec, size_t) {
                        if (!ec) return self->Read();
                        self->Finish(false, "write", "write: " + ec.message());
                      });
  });
}

void Stream::Read() {
  socket_.async_read_some(asio::buffer(buf_),
                          [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                            if (self->finished_) return;
                            const SseResponse::State before = self->response_.state();
                            if (ec) {
                              self->response_.Closed(ec == asio::error::eof ? "" : ec.message());
                            } else {
                              self->response_.Feed(std::string_view(self->buf_, n));
                            }
                            self->After(before);
                          });
}

void Stream::After(SseResponse::State before) {
  using State = SseResponse::State;
  const State now = response_.state();
  if (before == State::kHeaders && now != State::kHeaders && now != State::kFailed) {
    open_ = true;
    load_.OnHeaders();
  }
  if (now == State::kOk) return Finish(true, "", "");
  if (now == State::kFailed) return Finish(false, response_.error_kind(), response_.error());
  Read();
}

void Stream::Finish(bool ok, const std::string& kind, const std::string& why) {
  if (finished_) return;
  finished_ = true;
  boost::system::error_code ignored;
  socket_.close(ignored);
  load_.OnEnd(open_, Seconds(Clock::now() - start_), ok, kind,
              ok ? "" : "stream " + std::to_string(id_) + ": " + why);
}

void Load::Print() const {
  std::vector<double> d = durations_;
  std::sort(d.begin(), d.end());
  auto pct = [&d](double p) {
    return d.empty() ? -1.0 : d[static_cast<size_t>((d.size() - 1) * p / 100.0 + 0.5)];
  };
  const int ok = static_cast<int>(d.size());
  std::string errors = "{";
  for (const auto& [kind, n] : errors_) {
    errors += (errors.size() > 1 ? "," : "") + JsonString(kind) + ":" + std::to_string(n);
  }
  errors += "}";
  const double per_stream =
      rss_open_ > 0 && rss_before_ >= 0 ? double(rss_at_open_ - rss_before_) / rss_open_ : -1;
  std::printf(
      "{\"streams\":%d,\"chunks\":%d,\"ok\":%d,\"failed\":%d,\"wall_s\":%.3f,\"p50_s\":%.3f,"
      "\"p99_s\":%.3f,\"max_open\":%d,\"all_open_s\":%.3f,\"errors\":%s,\"first_error\":%s,"
      "\"rss_before_kib\":%ld,\"rss_peak_kib\":%ld,\"rss_at_max_open_kib\":%ld,"
      "\"rss_open_streams\":%d,\"rss_per_stream_kib\":%.2f}\n",
      o_.streams, o_.chunks, ok, o_.streams - ok, wall_s_, pct(50), pct(99), max_open_, all_open_s_,
      errors.c_str(), JsonString(first_error_).c_str(), rss_before_, rss_peak_, rss_at_open_,
      rss_open_, per_stream);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  gswarm::bench::Flags flags("stream_load");
  flags.Add("--url", &o.url);
  flags.Add("--model", &o.model);
  flags.Add("--streams", &o.streams, 1);
  flags.Add("--chunks", &o.chunks, 1);
  flags.Add("--ramp", &o.ramp, 1);
  flags.Add("--sample-ms", &o.sample_ms, 1);
  flags.Add("--timeout-s", &o.timeout_s, 0);
  flags.Add("--rss-pid", &o.rss_pid, 0);
  if (!flags.Parse(argc, argv)) return 2;
  if (o.url.rfind("http://", 0) != 0) {
    std::cerr << "stream_load: --url http://HOST:PORT/PATH is needed\n";
    return 2;
  }
  const std::string rest = o.url.substr(7);
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  const std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  const size_t colon = authority.rfind(':');
  const std::string host = authority.substr(0, colon);
  const std::string port = colon == std::string::npos ? "80" : authority.substr(colon + 1);

  if (gswarm::bench::RaiseNofileLimit() < static_cast<rlim_t>(o.streams) + 64) {
    std::cerr << "stream_load: warning: the open files limit is below --streams\n";
  }

  asio::io_context io(1);
  boost::system::error_code ec;
  const auto resolved = tcp::resolver(io).resolve(host, port, ec);
  if (ec || resolved.empty()) {
    std::cerr << "stream_load: cannot resolve " << authority << ": " << ec.message() << "\n";
    return 2;
  }
  const std::string body = R"({"model":)" + JsonString(o.model) +
                           R"(,"messages":[{"role":"user","content":"hi"}],"stream":true})";
  std::string request = "POST " + path + " HTTP/1.1\r\nHost: " + authority +
                        "\r\nAccept: text/event-stream\r\nContent-Type: application/json"
                        "\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  Load load(io, o, resolved.begin()->endpoint(), std::move(request));
  load.Run();
  load.Print();
  return 0;
}
