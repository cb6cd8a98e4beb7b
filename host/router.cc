#include "host/router.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/model_name.h"
#include "common/paths.h"
#include "common/status.h"
#include "host/event_bus.h"
#include "host/request_body.h"
#include "host/router_proxy.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

using json = nlohmann::json;

constexpr char kAlias[] = "default";

void ReplyError(httplib::Response& res, int status, const absl::Status& why) {
  switch (status) {
    case 400:
      return ReplyOpenAiError(res, status, std::string(why.message()), "invalid_request_error",
                              nullptr);
    case 404:
      return ReplyOpenAiError(res, status, std::string(why.message()), "invalid_request_error",
                              "model_not_found");
    case 429:
      res.set_header("Retry-After", "1");
      return ReplyOpenAiError(res, status, std::string(why.message()), "rate_limit_error",
                              "rate_limit_exceeded");
    case 503:
      res.set_header("Retry-After", "1");
      return ReplyOpenAiError(res, status, std::string(why.message()), "server_error",
                              "service_unavailable");
    default:
      return ReplyOpenAiError(res, status, std::string(why.message()), "server_error", nullptr);
  }
}

// Ollama's "keep_alive": seconds as a number, or a duration ("5m", "1h30m", "300ms"); negative
// keeps the instance loaded for ever.
absl::StatusOr<absl::Duration> ParseKeepAlive(const json& value) {
  absl::Duration duration;
  bool ok = false;
  if (value.is_number()) {
    const double seconds = value.get<double>();
    ok = std::isfinite(seconds);
    if (ok) duration = absl::Seconds(seconds);
  } else if (value.is_string()) {
    const std::string text = value.get<std::string>();
    double seconds = 0;
    if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds)) {
      duration = absl::Seconds(seconds);
      ok = true;
    } else {
      ok = absl::ParseDuration(text, &duration) && duration != absl::InfiniteDuration() &&
           duration != -absl::InfiniteDuration();
    }
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"keep_alive\" must be seconds (a number: 300; -1 keeps the model loaded) or "
                     "a duration (\"5m\", \"1h\"), not ",
                     value.dump()));
  }
  return duration < absl::ZeroDuration() ? absl::InfiniteDuration() : duration;
}

absl::Status UnknownModel(const std::string& model) {
  return absl::NotFoundError(
      absl::StrCat("model \"", model,
                   "\" is not registered (GET /v1/models lists the models; register one with "
                   "POST /models or gswarm discover)"));
}

}  // namespace

// Counts one request in flight on an instance for as long as it lives.
class Router::Lease {
 public:
  Lease(Router* router, Backend backend) : router_(router), backend_(std::move(backend)) {}
  ~Lease() { router_->Release(backend_.instance_id); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  const Backend& backend() const { return backend_; }

 private:
  Router* const router_;
  const Backend backend_;
};

struct Router::Flight {
  bool done = false;
  absl::StatusOr<Backend> result = absl::UnknownError("load not finished");
};

Router::Router(Options options, Placement* placement)
    : options_(std::move(options)),
      placement_(placement),
      upstreams_(std::make_unique<UpstreamPool>(options_.connect_timeout,
                                                options_.upstream_read_timeout)) {
  if (options_.active_model_file.empty()) return;
  absl::StatusOr<std::string> kept = common::ReadFile(options_.active_model_file);
  if (kept.ok()) {
    const std::string model(absl::StripAsciiWhitespace(*kept));
    if (common::ValidateModelName(model).ok()) {
      active_model_ = model;
      spdlog::info("router: active model {} (kept in {})", model, options_.active_model_file);
    }
  } else if (!absl::IsNotFound(kept.status())) {
    spdlog::warn("router: the active model is not restored: {}", kept.status().message());
  }
}

Router::~Router() {
  std::vector<std::pair<std::shared_ptr<Flight>, std::thread>> loaders;
  {
    absl::MutexLock lock(&mu_);
    loaders.swap(loaders_);
  }
  for (auto& [flight, thread] : loaders) thread.join();
}

void Router::Install(httplib::Server& server) {
  server.Get("/v1/models",
             [this](const httplib::Request&, httplib::Response& res) { HandleModels(res); });
  server.Post("/v1/models/switch", [this](const httplib::Request& req, httplib::Response& res) {
    HandleSwitch(req, res);
  });
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}) {
    server.Post(path, [this](const httplib::Request& req, httplib::Response& res) {
      HandleInference(req, res);
    });
  }
}

absl::StatusOr<nlohmann::json> Router::Switch(const std::string& model) {
  if (model == kAlias || !placement_->IsKnownModel(model)) return UnknownModel(model);
  const auto start = std::chrono::steady_clock::now();
  std::string previous;
  {
    absl::MutexLock lock(&mu_);
    previous = std::exchange(active_model_, model);
  }
  const double micros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  if (!options_.active_model_file.empty()) {
    // Kept for the next host; the switch itself has happened either way. Whatever is active
    // when the write starts is written, so concurrent switches leave the last one on disk.
    absl::MutexLock persist(&persist_mu_);
    absl::Status kept =
        common::WriteFileAtomically(options_.active_model_file, active_model() + "\n");
    if (!kept.ok()) spdlog::warn("router: the active model is not kept: {}", kept.message());
  }
  spdlog::info("router: active model {} -> {} in {:.1f} us", previous.empty() ? "(none)" : previous,
               model, micros);
  Publish("switched", model,
          absl::StrCat("active model ", previous.empty() ? "(none)" : previous, " -> ", model));
  json answer = {{"success", true},
                 {"active_model", model},
                 {"switch_time_us", micros},
                 {"previous_model", nullptr}};
  if (!previous.empty()) answer["previous_model"] = previous;
  return answer;
}

std::string Router::active_model() const {
  absl::MutexLock lock(&mu_);
  return active_model_;
}

absl::StatusOr<std::shared_ptr<const Router::Backend>> Router::Reserve(const std::string& model,
                                                                       absl::Time deadline) {
  int http_status = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<Lease> lease, Acquire(model, deadline, &http_status));
  Lease* held = lease.release();
  return std::shared_ptr<const Backend>(&held->backend(), [held](const Backend*) { delete held; });
}

int Router::InFlight(const std::string& instance_id) const {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(instance_id);
  return it == in_flight_.end() ? 0 : it->second;
}

absl::Time Router::LastUsed(const std::string& instance_id) const {
  absl::MutexLock lock(&mu_);
  auto it = last_used_.find(instance_id);
  return it == last_used_.end() ? absl::InfinitePast() : it->second;
}

void Router::HandleModels(httplib::Response& res) {
  std::vector<json> entries = placement_->ModelEntries();
  const std::string active = active_model();
  for (json& entry : entries) {
    entry["is_active"] = !active.empty() && entry.is_object() && entry.contains("id") &&
                         entry["id"].is_string() && entry["id"].get<std::string>() == active;
  }
  res.set_content(json{{"object", "list"}, {"data", std::move(entries)}}.dump() + "\n",
                  "application/json");
}

void Router::HandleSwitch(const httplib::Request& req, httplib::Response& res) {
  const json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
    return ReplyError(res, 400,
                      absl::InvalidArgumentError(
                          "the body must be a JSON object with a \"model\" string: the model to "
                          "make active, e.g. {\"model\": \"llama2-7b\"}"));
  }
  absl::StatusOr<json> answer = Switch(body["model"].get<std::string>());
  if (!answer.ok()) return ReplyError(res, 404, answer.status());
  res.set_content(answer->dump() + "\n", "application/json");
}

void Router::HandleInference(const httplib::Request& req, httplib::Response& res) {
  const absl::Time deadline = absl::Now() + options_.queue_timeout;
  absl::StatusOr<RequestBody> body = RequestBody::Parse(req.body);
  if (!body.ok()) {
    return ReplyError(res, 400,
                      absl::Status(body.status().code(),
                                   absl::StrCat("POST ", req.path, ": ", body.status().message())));
  }
  std::string model = body->model().value_or(kAlias);
  const bool aliased = model == kAlias;
  if (aliased) {
    model = active_model();
    if (model.empty()) {
      return ReplyError(res, 400,
                        absl::InvalidArgumentError(
                            "no model named and no active model: name one in \"model\", or set "
                            "the active model with POST /v1/models/switch (gswarm switch NAME)"));
    }
  }
  std::optional<absl::Duration> keep_alive;
  if (body->keep_alive().has_value() && !body->keep_alive()->is_null()) {
    absl::StatusOr<absl::Duration> parsed = ParseKeepAlive(*body->keep_alive());
    if (!parsed.ok()) return ReplyError(res, 400, parsed.status());
    keep_alive = *parsed;
  }
  // The engine knows the model by its own name, not by our alias, and "keep_alive" is ours; any
  // other body goes upstream byte for byte.
  const bool drop_keep_alive = body->keep_alive().has_value();
  std::string upstream_body =
      aliased || drop_keep_alive ? body->Rewrite(req.body, model, drop_keep_alive) : req.body;
  const bool stream = req.path != "/v1/embeddings" && body->stream();

  int http_status = 503;
  absl::StatusOr<std::unique_ptr<Lease>> lease = Acquire(model, deadline, &http_status);
  if (!lease.ok()) return ReplyError(res, http_status, lease.status());
  const Backend& backend = (*lease)->backend();
  placement_->KeepAlive(backend.instance_id, keep_alive);
  std::string content_type = req.get_header_value("Content-Type");
  UpstreamCall call{.endpoint = backend.endpoint,
                    .path = req.path,
                    .body = std::move(upstream_body),
                    .content_type = OrJson(std::move(content_type)),
                    .what = absl::StrCat("instance ", backend.instance_id, " of model \"", model,
                                         "\" at ", backend.endpoint)};
  if (stream) {
    ProxyStream(*upstreams_, std::move(call), std::shared_ptr<Lease>(*std::move(lease)), res);
  } else {
    ProxyRequest(*upstreams_, call, res);  // the lease ends with this scope
  }
}

absl::StatusOr<std::unique_ptr<Router::Lease>> Router::Acquire(const std::string& model,
                                                               absl::Time deadline,
                                                               int* http_status) {
  std::optional<Backend> loaded;
  for (;;) {
    std::vector<Backend> ready = placement_->ReadyBackends(model);
    {
      absl::MutexLock lock(&mu_);
      if (ready.empty() && loaded.has_value()) ready.push_back(*loaded);  // not listed yet
      std::erase_if(ready, [this](const Backend& backend) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !placement_->Routable(backend.instance_id);
      });
      if (!ready.empty()) {
        const Backend* best = nullptr;
        int best_count = 0;
        for (const Backend& backend : ready) {
          auto it = in_flight_.find(backend.instance_id);
          const int count = it == in_flight_.end() ? 0 : it->second;
          if (count < options_.max_concurrent_per_instance &&
              (best == nullptr || count < best_count)) {
            best = &backend;
            best_count = count;
          }
        }
        if (best != nullptr) {
          ++in_flight_[best->instance_id];
          last_used_[best->instance_id] = absl::Now();
          return std::make_unique<Lease>(this, *best);
        }
        if (waiting_ >= options_.max_queue) {
          *http_status = 429;
          QueueFull(model);
          return absl::ResourceExhaustedError(absl::StrCat(
              "model \"", model, "\": all ", ready.size(), " ready instance(s) are at ",
              options_.max_concurrent_per_instance, " requests in flight and ", waiting_,
              " requests are already waiting (client.max_concurrent_requests and "
              "host.router_queue_size are full; retry after the Retry-After header's seconds)"));
        }
        if (absl::Now() >= deadline) {
          *http_status = 503;
          return absl::DeadlineExceededError(absl::StrCat(
              "model \"", model, "\": no instance had room within ",
              absl::FormatDuration(options_.queue_timeout), " (all ", ready.size(), " at ",
              options_.max_concurrent_per_instance, " requests in flight); retry later"));
        }
        // Re-read the ready set now and then: an instance that becomes ready frees no lease.
        ++waiting_;
        changed_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Milliseconds(500)));
        --waiting_;
        continue;
      }
    }
    // Checked only here, off the path of a model with ready instances: the catalog refuses to
    // delete a model while an instance serves it.
    if (!loaded.has_value() && !placement_->IsKnownModel(model)) {
      *http_status = 404;
      return UnknownModel(model);
    }
    if (!options_.autoload) {
      *http_status = 503;
      return absl::UnavailableError(absl::StrCat(
          "model \"", model,
          "\" has no ready instance and autoload is off (load it with POST /api/models/", model,
          "/load, or turn host.autoload on)"));
    }
    absl::StatusOr<Backend> backend = AwaitLoad(model, deadline);
    if (!backend.ok()) {
      *http_status = absl::IsResourceExhausted(backend.status()) ? 429 : 503;
      return backend.status();
    }
    loaded = *std::move(backend);
  }
}

std::shared_ptr<Router::Flight> Router::EnsureLoading(const std::string& model,
                                                      std::vector<std::thread>* finished) {
  std::shared_ptr<Flight>& slot = flights_[model];
  if (slot == nullptr) {
    slot = std::make_shared<Flight>();
    Publish("load_requested", model, absl::StrCat("loading model ", model));
    for (auto it = loaders_.begin(); it != loaders_.end();) {
      if (it->first->done) {
        finished->push_back(std::move(it->second));
        it = loaders_.erase(it);
      } else {
        ++it;
      }
    }
    loaders_.emplace_back(slot, std::thread(&Router::RunLoad, this, model, slot));
  }
  return slot;
}

void Router::StartLoad(const std::string& model) {
  std::vector<std::thread> finished;
  {
    absl::MutexLock lock(&mu_);
    EnsureLoading(model, &finished);
  }
  for (std::thread& thread : finished) thread.join();  // done: they exit at once
}

absl::StatusOr<Router::Backend> Router::AwaitLoad(const std::string& model, absl::Time deadline) {
  std::vector<std::thread> finished;
  absl::StatusOr<Backend> result;
  {
    absl::MutexLock lock(&mu_);
    // A request waiting for a load holds a server thread like one in the queue: the same bound.
    if (waiting_ >= options_.max_queue) {
      QueueFull(model);
      return absl::ResourceExhaustedError(absl::StrCat(
          "model \"", model, "\" is loading and ", waiting_,
          " requests are already waiting (host.router_queue_size is full; retry after the "
          "Retry-After header's seconds)"));
    }
    if (!flights_.contains(model)) {
      spdlog::info("router: loading model {} for a request (no ready instance)", model);
    }
    std::shared_ptr<Flight> flight = EnsureLoading(model, &finished);
    ++waiting_;
    while (!flight->done) {
      if (changed_.WaitWithDeadline(&mu_, deadline)) break;
    }
    --waiting_;
    if (flight->done) {
      result = flight->result;
    } else {
      result = absl::DeadlineExceededError(
          absl::StrCat("model \"", model, "\" is still loading after ",
                       absl::FormatDuration(options_.queue_timeout),
                       " (the load goes on in the background; retry later)"));
    }
  }
  for (std::thread& thread : finished) thread.join();  // done: they exit at once
  return result;
}

void Router::RunLoad(const std::string& model, std::shared_ptr<Flight> flight) {
  const absl::Time start = absl::Now();
  absl::StatusOr<Backend> result = placement_->Load(model, start + options_.load_timeout);
  if (result.ok()) {
    spdlog::info("router: model {} loaded as instance {} at {} in {}", model, result->instance_id,
                 result->endpoint, absl::FormatDuration(absl::Now() - start));
  } else {
    spdlog::warn("router: loading model {} failed: {}", model, result.status().ToString());
    Publish("load_failed", model,
            absl::StrCat("loading model ", model, " failed: ", result.status().message()));
    result = absl::Status(
        result.status().code(),
        absl::StrCat("loading model \"", model, "\" failed: ", result.status().message()));
  }
  absl::MutexLock lock(&mu_);
  flight->result = std::move(result);
  flight->done = true;
  auto it = flights_.find(model);
  if (it != flights_.end() && it->second == flight) flights_.erase(it);
  changed_.SignalAll();
}

bool Router::TryRetire(const std::string& instance_id, absl::Time idle_since,
                       const std::function<bool()>& take_out) {
  absl::MutexLock lock(&mu_);
  if (in_flight_.contains(instance_id)) return false;
  if (auto it = last_used_.find(instance_id); it != last_used_.end() && it->second > idle_since) {
    return false;
  }
  return take_out();
}

void Router::Forget(const std::string& instance_id) {
  absl::MutexLock lock(&mu_);
  last_used_.erase(instance_id);
}

void Router::Publish(const std::string& action, const std::string& model,
                     const std::string& message) const {
  if (options_.events == nullptr) return;
  v1::Event event = MakeEvent("router", action, message);
  event.set_model_name(model);
  options_.events->Publish(std::move(event));
}

void Router::QueueFull(const std::string& model) {
  // Once a second at most: an overloaded router refuses thousands of requests a second.
  const absl::Time now = absl::Now();
  if (now - last_queue_full_event_ < absl::Seconds(1)) return;
  last_queue_full_event_ = now;
  Publish("queue_full", model,
          absl::StrCat("queue full: requests for ", model, " refused with 429 (", waiting_,
                       " waiting)"));
}

void Router::Release(const std::string& instance_id) {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(instance_id);
  if (it != in_flight_.end() && --it->second <= 0) in_flight_.erase(it);
  last_used_[instance_id] = absl::Now();
  changed_.SignalAll();
}

}  // namespace gswarm::host
