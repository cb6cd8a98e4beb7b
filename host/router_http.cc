// The router's HTTP face: the /v1/ endpoints on the host's HTTP server (host/router.h).

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/worker_pool.h"
#include "host/host_metrics.h"
#include "host/http_server.h"
#include "host/http_upstream.h"
#include "host/request_body.h"
#include "host/router.h"

namespace gswarm::host {
namespace {

using json = nlohmann::json;

http::Response ErrorResponse(int status, const absl::Status& why) {
  const std::string message(why.message());
  http::Response response;
  switch (status) {
    case 400:
      return OpenAiError(status, message, "invalid_request_error", nullptr);
    case 404:
      return OpenAiError(status, message, "invalid_request_error", "model_not_found");
    case 429:
      response = OpenAiError(status, message, "rate_limit_error", "rate_limit_exceeded");
      response.headers.emplace_back("Retry-After", "1");
      return response;
    case 503:
      response = OpenAiError(status, message, "server_error", "service_unavailable");
      response.headers.emplace_back("Retry-After", "1");
      return response;
    default:
      return OpenAiError(status, message, "server_error", nullptr);
  }
}

http::Response JsonResponse(const json& body) {
  http::Response response;
  response.body = body.dump() + "\n";
  return response;
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

}  // namespace

void Router::Install(http::HttpServer& server) {
  server.Route("GET", "/v1/models", [this](std::shared_ptr<http::Exchange> exchange) {
    HandleModels(std::move(exchange));
  });
  server.Route("POST", "/v1/models/switch", [this](std::shared_ptr<http::Exchange> exchange) {
    HandleSwitch(std::move(exchange));
  });
  server.Route("POST", "/v1/models/load", [this](std::shared_ptr<http::Exchange> exchange) {
    HandleLoad(std::move(exchange));
  });
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}) {
    server.Route("POST", path, [this](std::shared_ptr<http::Exchange> exchange) {
      HandleInference(std::move(exchange));
    });
  }
}

void Router::HandleModels(std::shared_ptr<http::Exchange> exchange) {
  // The catalog is SQLite: not on an I/O thread.
  absl::Status submitted = OffThread([this, exchange] {
    std::vector<json> entries = placement_->ModelEntries();
    const std::string active = active_model();
    for (json& entry : entries) {
      entry["is_active"] = !active.empty() && entry.is_object() && entry.contains("id") &&
                           entry["id"].is_string() && entry["id"].get<std::string>() == active;
    }
    exchange->Reply(JsonResponse(json{{"object", "list"}, {"data", std::move(entries)}}));
  });
  if (!submitted.ok()) exchange->Reply(ErrorResponse(503, submitted));
}

void Router::HandleSwitch(std::shared_ptr<http::Exchange> exchange) {
  const json body = json::parse(exchange->request().body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
    return exchange->Reply(ErrorResponse(
        400, absl::InvalidArgumentError(
                 "the body must be a JSON object with a \"model\" string: the model to make "
                 "active, e.g. {\"model\": \"llama2-7b\"}")));
  }
  absl::Status submitted = OffThread([this, exchange, model = body["model"].get<std::string>()] {
    absl::StatusOr<json> answer = Switch(model);
    if (!answer.ok()) return exchange->Reply(ErrorResponse(404, answer.status()));
    exchange->Reply(JsonResponse(*answer));
  });
  if (!submitted.ok()) exchange->Reply(ErrorResponse(503, submitted));
}

void Router::HandleLoad(std::shared_ptr<http::Exchange> exchange) {
  const json body = json::parse(exchange->request().body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
    return exchange->Reply(ErrorResponse(
        400, absl::InvalidArgumentError(
                 "the body must be a JSON object with a \"model\" string: the model to load, "
                 "e.g. {\"model\": \"llama2-7b\"}")));
  }
  std::string model = body["model"].get<std::string>();
  if (model == kAlias) model = active_model();
  const absl::Time start = absl::Now();
  // A load is answered once an instance is ready (the lease taken to learn which is let go at
  // once): the same single flight, placement and eviction as a request's load.
  Acquire(
      model, start + options_.load_timeout,
      [exchange, model, start](absl::StatusOr<std::unique_ptr<Lease>> lease, int http_status) {
        if (!lease.ok()) return exchange->Reply(ErrorResponse(http_status, lease.status()));
        const Backend& backend = (*lease)->backend();
        exchange->Reply(
            JsonResponse(json{{"success", true},
                              {"model", model},
                              {"instance_id", backend.instance_id},
                              {"endpoint", backend.endpoint},
                              {"load_time_ms", absl::ToInt64Milliseconds(absl::Now() - start)}}));
      },
      /*explicit_load=*/true);
}

void Router::HandleInference(std::shared_ptr<http::Exchange> exchange) {
  const http::Request& req = exchange->request();
  // The model the request is counted under once it is known (requests refused before: "").
  auto counted_as = std::make_shared<std::string>();
  if (options_.metrics != nullptr) {
    exchange->OnFinish([metrics = options_.metrics, counted_as](const http::Finished& finished) {
      std::optional<double> first_byte;
      if (finished.first_byte.has_value()) {
        first_byte = absl::ToDoubleSeconds(*finished.first_byte);
      }
      metrics->RouterRequest(*counted_as, finished.status, absl::ToDoubleSeconds(finished.total),
                             first_byte);
    });
  }
  const absl::Time deadline = absl::Now() + options_.queue_timeout;
  absl::StatusOr<RequestBody> body = RequestBody::Parse(req.body);
  if (!body.ok()) {
    return exchange->Reply(ErrorResponse(
        400, absl::Status(body.status().code(),
                          absl::StrCat("POST ", req.path, ": ", body.status().message()))));
  }
  std::string model = body->model().value_or(kAlias);
  const bool aliased = model == kAlias;
  if (aliased) {
    model = active_model();
    if (model.empty()) {
      return exchange->Reply(ErrorResponse(
          400, absl::InvalidArgumentError(
                   "no model named and no active model: name one in \"model\", or set the "
                   "active model with POST /v1/models/switch (gswarm switch NAME)")));
    }
  }
  *counted_as = model;
  std::optional<absl::Duration> keep_alive;
  if (body->keep_alive().has_value() && !body->keep_alive()->is_null()) {
    absl::StatusOr<absl::Duration> parsed = ParseKeepAlive(*body->keep_alive());
    if (!parsed.ok()) return exchange->Reply(ErrorResponse(400, parsed.status()));
    keep_alive = *parsed;
  }
  // The engine knows the model by its own name, not by our alias, and "keep_alive" is ours; any
  // other body goes upstream byte for byte.
  const bool drop_keep_alive = body->keep_alive().has_value();
  const std::string content_type = req.header("Content-Type");
  UpstreamCall call{.endpoint = "",
                    .path = req.path,
                    .body = aliased || drop_keep_alive
                                ? body->Rewrite(req.body, model, drop_keep_alive)
                                : req.body,
                    .content_type = content_type.empty() ? "application/json" : content_type,
                    .what = "",
                    .stream = req.path != "/v1/embeddings" && body->stream()};
  Acquire(model, deadline,
          [this, exchange, model, keep_alive, call = std::move(call)](
              absl::StatusOr<std::unique_ptr<Lease>> lease, int http_status) mutable {
            if (!lease.ok()) return exchange->Reply(ErrorResponse(http_status, lease.status()));
            const Backend& backend = (*lease)->backend();
            placement_->KeepAlive(backend.instance_id, keep_alive);
            call.endpoint = backend.endpoint;
            call.what = absl::StrCat("instance ", backend.instance_id, " of model \"", model,
                                     "\" at ", backend.endpoint);
            upstreams_->Proxy(std::move(call), exchange, std::shared_ptr<Lease>(*std::move(lease)));
          });
}

}  // namespace gswarm::host
