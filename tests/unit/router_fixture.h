#pragma once

// The fixture of the router's tests (router_test.cc): real fake-engine processes, a test
// placement whose ready set, loads and drains the test controls, and an HTTP client.
// Test-only: one test file includes it.

#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "host/http_server.h"
#include "host/router.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"

namespace gswarm::host {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Backend = Router::Backend;

constexpr char kPython[] = GSWARM_TEST_PYTHON;
constexpr char kFakeEngine[] = GSWARM_FAKE_ENGINE;

std::string MakeTempDir(const char* prefix) {
  std::string pattern = absl::StrCat(fs::temp_directory_path().string(), "/", prefix, "XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made == nullptr ? "" : std::string(made);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// A fake engine process serving `model`, on a port it picks itself.
class Engine {
 public:
  static std::unique_ptr<Engine> Start(const std::string& model_dir, const std::string& log_dir,
                                       const std::string& model, double tokens_per_second) {
    auto engine = std::unique_ptr<Engine>(new Engine());
    engine->log_ = absl::StrCat(log_dir, "/engine-", model, "-", counter_++, ".log");
    auto process = testing::Subprocess::Start(
        {kPython, "-B", kFakeEngine, "--model", model_dir, "--served-model-name", model, "--host",
         "127.0.0.1", "--port", "0", "--tokens-per-second", absl::StrCat(tokens_per_second),
         "--disable-log-requests"},
        engine->log_);
    EXPECT_TRUE(process.ok()) << process.status();
    if (!process.ok()) return nullptr;
    engine->process_ = *std::move(process);
    const bool listening = testing::WaitFor(
        [&] {
          const std::string log = Slurp(engine->log_);
          const size_t at = log.find("listening on ");
          if (at == std::string::npos) return false;
          const size_t begin = at + std::strlen("listening on ");
          engine->url_ = log.substr(begin, log.find(' ', begin) - begin);
          return true;
        },
        absl::Seconds(20));
    EXPECT_TRUE(listening) << Slurp(engine->log_);
    if (!listening) return nullptr;
    httplib::Client client(engine->url_);
    const bool ready = testing::WaitFor(
        [&] {
          httplib::Result health = client.Get("/health");
          return health && health->status == 200;
        },
        absl::Seconds(20));
    EXPECT_TRUE(ready) << Slurp(engine->log_);
    if (!ready) return nullptr;
    return engine;
  }

  ~Engine() {
    if (process_ != nullptr) process_->Stop(SIGTERM, absl::Seconds(5));
  }

  const std::string& url() const { return url_; }

  json Stats() const {
    httplib::Client client(url_);
    httplib::Result result = client.Get("/_fake/stats");
    if (!result || result->status != 200) return json::object();
    return json::parse(result->body, nullptr, false);
  }
  void ResetStats() const {
    httplib::Client client(url_);
    client.Post("/_fake/stats/reset", "", "application/json");
  }
  int Streams() const { return Stats().value("streams", -1); }
  int InFlight() const { return Stats().value("in_flight", -1); }

 private:
  Engine() = default;
  static inline std::atomic<int> counter_ = 0;
  std::unique_ptr<testing::Subprocess> process_;
  std::string log_;
  std::string url_;
};

// The rest of the host, as the router sees it: a catalog and ready instances set by the test,
// and a load that the test supplies.
class TestPlacement : public Router::Placement {
 public:
  using LoadFn = std::function<absl::StatusOr<Backend>(const std::string&, absl::Time)>;

  void AddModel(const std::string& model) {
    gswarm::MutexLock lock(&mu_);
    known_.insert(model);
  }
  void AddReady(const Backend& backend) {
    gswarm::MutexLock lock(&mu_);
    known_.insert(backend.model);
    ready_[backend.model].push_back(backend);
  }
  void SetLoad(LoadFn load) {
    gswarm::MutexLock lock(&mu_);
    load_ = std::move(load);
  }
  int load_calls() const { return load_calls_.load(); }

  std::vector<Backend> ReadyBackends(const std::string& model) override {
    gswarm::MutexLock lock(&mu_);
    auto it = ready_.find(model);
    return it == ready_.end() ? std::vector<Backend>{} : it->second;
  }
  bool IsKnownModel(const std::string& model) override {
    gswarm::MutexLock lock(&mu_);
    return known_.contains(model);
  }
  bool Routable(const std::string& instance_id) override {
    gswarm::MutexLock lock(&mu_);
    return !drained_.contains(instance_id);
  }
  // What the real placement's drain does: the instance takes no new request from now on.
  bool Drain(const std::string& instance_id) {
    gswarm::MutexLock lock(&mu_);
    drained_.insert(instance_id);
    return true;
  }
  absl::StatusOr<Backend> Load(const std::string& model, absl::Time deadline) override {
    ++load_calls_;
    LoadFn load;
    {
      gswarm::MutexLock lock(&mu_);
      load = load_;
    }
    if (!load) return absl::UnavailableError("no load in this test");
    absl::StatusOr<Backend> backend = load(model, deadline);
    if (backend.ok()) AddReady(*backend);
    return backend;
  }
  void KeepAlive(const std::string& instance_id,
                 std::optional<absl::Duration> keep_alive) override {
    gswarm::MutexLock lock(&mu_);
    keep_alive_[instance_id] = keep_alive;
  }
  // The last request's keep_alive for the instance (nullopt: it had none).
  std::optional<absl::Duration> keep_alive(const std::string& instance_id) {
    gswarm::MutexLock lock(&mu_);
    auto it = keep_alive_.find(instance_id);
    return it == keep_alive_.end() ? std::nullopt : it->second;
  }
  std::vector<json> ModelEntries() override {
    gswarm::MutexLock lock(&mu_);
    std::vector<json> entries;
    for (const std::string& model : known_) {
      entries.push_back({{"id", model},
                         {"object", "model"},
                         {"owned_by", "gswarm"},
                         {"size_mb", 1},
                         {"load_time_ms", 0}});
    }
    return entries;
  }

 private:
  gswarm::Mutex mu_;
  absl::flat_hash_set<std::string> known_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> drained_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<Backend>> ready_ ABSL_GUARDED_BY(mu_);
  LoadFn load_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::optional<absl::Duration>> keep_alive_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> load_calls_ = 0;
};

struct Reply {
  int status = 0;
  json body;
  std::string retry_after;
};

struct StreamReply {
  int status = 0;
  std::string body;
  std::vector<absl::Duration> arrivals;  // when each chunk arrived, from the request's start
  std::vector<std::string> events;       // the "data: " payloads, in order
};

class RouterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A client that leaves mid-stream must not kill the process (see router.h).
    ::signal(SIGPIPE, SIG_IGN);
    dir_ = MakeTempDir("gswarm-router-");
    const std::string support = fs::path(kFakeEngine).parent_path().string();
    auto writer = testing::Subprocess::Start(
        {kPython, "-B", "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import fake_engine; "
         "fake_engine.write_tiny_model(sys.argv[2])",
         support, dir_ + "/tiny"});
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE(testing::WaitFor([&] { return (*writer)->Exited(); }, absl::Seconds(30)));
    ASSERT_EQ((*writer)->status(), 0);
    // Two instances of "m" and one of "m2", 20 tokens a second: max_tokens sets a request's
    // length (50 ms a token).
    a_ = Engine::Start(dir_ + "/tiny", dir_, "m", 20).release();
    b_ = Engine::Start(dir_ + "/tiny", dir_, "m", 20).release();
    c_ = Engine::Start(dir_ + "/tiny", dir_, "m2", 20).release();
  }

  static void TearDownTestSuite() {
    delete a_;
    delete b_;
    delete c_;
    fs::remove_all(dir_);
  }

  void SetUp() override {
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    ASSERT_NE(c_, nullptr);
    for (Engine* engine : {a_, b_, c_}) engine->ResetStats();
  }

  void TearDown() override {
    // The host's order: waiting requests answered, connections closed, I/O threads stopped;
    // leases still held by exchanges go with the io_context, before the router.
    if (router_ != nullptr) router_->Shutdown();
    if (server_ != nullptr) server_->Stop();
    if (io_ != nullptr) io_->Stop();
    server_.reset();
    io_.reset();
    router_.reset();
  }

  void AddStandardBackends() {
    placement_.AddReady({"a", "m", a_->url()});
    placement_.AddReady({"b", "m", b_->url()});
    placement_.AddReady({"c", "m2", c_->url()});
  }

  void StartRouter(Router::Options options = {}) {
    io_ = std::make_unique<http::IoThreads>(2);
    router_ = std::make_unique<Router>(options, &placement_);
    absl::StatusOr<std::unique_ptr<http::HttpServer>> server =
        http::HttpServer::Create(io_.get(), http::HttpServer::Options{});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    router_->Install(*server_);
    absl::StatusOr<int> port = server_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
  }

  Reply Post(const std::string& path, const json& body) const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(30);
    Reply reply;
    httplib::Result result = client.Post(path, body.dump(), "application/json");
    if (!result) return reply;
    reply.status = result->status;
    reply.body = json::parse(result->body, nullptr, false);
    reply.retry_after = result->get_header_value("Retry-After");
    return reply;
  }

  Reply Get(const std::string& path) const {
    httplib::Client client("127.0.0.1", port_);
    Reply reply;
    httplib::Result result = client.Get(path);
    if (!result) return reply;
    reply.status = result->status;
    reply.body = json::parse(result->body, nullptr, false);
    return reply;
  }

  // Streams `body` (with "stream": true); `keep_going(chunks so far)` false hangs up.
  StreamReply Stream(json body, std::function<bool(size_t)> keep_going = nullptr) const {
    body["stream"] = true;
    StreamReply reply;
    const absl::Time start = absl::Now();
    {
      httplib::Client client("127.0.0.1", port_);
      client.set_read_timeout(30);
      httplib::Request request;
      request.method = "POST";
      request.path = "/v1/chat/completions";
      request.headers = {{"Content-Type", "application/json"}};
      request.body = body.dump();
      request.response_handler = [&](const httplib::Response& response) {
        reply.status = response.status;
        return true;
      };
      request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
        reply.arrivals.push_back(absl::Now() - start);
        reply.body.append(data, size);
        return keep_going == nullptr || keep_going(reply.arrivals.size());
      };
      httplib::Response response;
      httplib::Error error = httplib::Error::Success;
      client.send(request, response, error);
    }  // the client's connection closes here
    for (absl::string_view event : absl::StrSplit(reply.body, "\n\n", absl::SkipEmpty())) {
      if (absl::ConsumePrefix(&event, "data: ")) reply.events.emplace_back(event);
    }
    return reply;
  }

  static json Chat(const std::string& model, int max_tokens) {
    json body = {{"messages", {{{"role", "user"}, {"content", "alpha beta gamma"}}}},
                 {"max_tokens", max_tokens}};
    if (!model.empty()) body["model"] = model;
    return body;
  }

  static inline std::string dir_;
  static inline Engine* a_ = nullptr;
  static inline Engine* b_ = nullptr;
  static inline Engine* c_ = nullptr;

  TestPlacement placement_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<http::IoThreads> io_;
  std::unique_ptr<http::HttpServer> server_;
  int port_ = 0;
};

}  // namespace
}  // namespace gswarm::host
