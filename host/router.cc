#include "host/router.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_util.h"
#include "common/model_name.h"
#include "common/mutex.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/worker_pool.h"
#include "host/event_bus.h"
#include "host/host_metrics.h"
#include "host/http_server.h"
#include "host/http_upstream.h"
#include "host/request_body.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

// The HTTP status for a failed load: no node holds the model (any more) is the client's 404, a
// bad name its 400, no room 429; the rest (an engine that did not start, a node gone) 503.
int LoadFailureStatus(const absl::Status& status) {
  const int http = common::HttpStatusFor(status.code());
  return http == 404 || http == 400 || http == 429 ? http : 503;
}

using json = nlohmann::json;

absl::Status ShuttingDown() { return absl::UnavailableError("the host is shutting down"); }

absl::Status UnknownModel(const std::string& model) {
  return absl::NotFoundError(
      absl::StrCat("model \"", model,
                   "\" is not registered (GET /v1/models lists the models; register one with "
                   "POST /models or gswarm discover)"));
}

}  // namespace

Router::Lease::Lease(Router* router, Backend backend)
    : router_(router), backend_(std::move(backend)) {}

Router::Lease::~Lease() { router_->Release(backend_); }

struct Router::Flight {
  bool done = false;
  absl::StatusOr<Backend> result = absl::UnknownError("load not finished");
  // Requests waiting for it.
  std::vector<std::shared_ptr<Waiter>> waiters;
};

struct Router::Waiter {
  std::string model;
  absl::Time arrived;
  absl::Time deadline;
  Granted granted;
  // The instance a load made for this request, before the placement lists it as ready.
  std::optional<Backend> loaded;
  // Loads even with autoload off (an explicit load).
  bool explicit_load = false;
};

Router::Router(Options options, Placement* placement)
    : options_(std::move(options)),
      placement_(placement),
      upstreams_(std::make_unique<UpstreamPool>(
          UpstreamPool::Options{.connect_timeout = options_.connect_timeout,
                                .read_timeout = options_.upstream_read_timeout})) {
  sweeper_ = std::thread([this] { Sweep(); });
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
  Shutdown();
  std::vector<std::pair<std::shared_ptr<Flight>, std::thread>> loaders;
  {
    gswarm::MutexLock lock(&mu_);
    loaders.swap(loaders_);
  }
  for (auto& [flight, thread] : loaders) thread.join();
}

void Router::Shutdown() {
  absl::flat_hash_map<std::string, std::deque<std::shared_ptr<Waiter>>> queued;
  std::vector<std::shared_ptr<Waiter>> loading;
  {
    gswarm::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    queued.swap(queued_);
    for (auto& [model, flight] : flights_) {
      for (std::shared_ptr<Waiter>& waiter : flight->waiters) loading.push_back(std::move(waiter));
      flight->waiters.clear();
    }
    waiting_ = 0;
    stop_sweeping_.SignalAll();
  }
  if (sweeper_.joinable()) sweeper_.join();
  upstreams_->Close();
  for (auto& [model, waiters] : queued) {
    for (const std::shared_ptr<Waiter>& waiter : waiters) waiter->granted(ShuttingDown(), 503);
  }
  for (const std::shared_ptr<Waiter>& waiter : loading) waiter->granted(ShuttingDown(), 503);
}

absl::StatusOr<nlohmann::json> Router::Switch(const std::string& model) {
  if (model == kAlias || !placement_->IsKnownModel(model)) return UnknownModel(model);
  const auto start = std::chrono::steady_clock::now();
  std::string previous;
  {
    gswarm::MutexLock lock(&mu_);
    previous = std::exchange(active_model_, model);
  }
  const double micros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  if (!options_.active_model_file.empty()) {
    // Kept for the next host; the switch itself has happened either way. Whatever is active
    // when the write starts is written, so concurrent switches leave the last one on disk.
    gswarm::MutexLock persist(&persist_mu_);
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

int Router::waiting() const {
  gswarm::MutexLock lock(&mu_);
  return waiting_;
}

void Router::WaitedFor(const Waiter& waiter) const {
  if (options_.metrics == nullptr) return;
  options_.metrics->QueueWait(waiter.model, absl::ToDoubleSeconds(absl::Now() - waiter.arrived));
}

std::string Router::active_model() const {
  gswarm::MutexLock lock(&mu_);
  return active_model_;
}

absl::StatusOr<std::shared_ptr<const Router::Backend>> Router::Reserve(const std::string& model,
                                                                       absl::Time deadline) {
  gswarm::Notification done;
  absl::StatusOr<std::unique_ptr<Lease>> result;
  Acquire(model, deadline, [&](absl::StatusOr<std::unique_ptr<Lease>> lease, int) {
    result = std::move(lease);
    done.Notify();
  });
  done.WaitForNotification();
  ASSIGN_OR_RETURN(std::unique_ptr<Lease> lease, std::move(result));
  Lease* held = lease.release();
  return std::shared_ptr<const Backend>(&held->backend(), [held](const Backend*) { delete held; });
}

int Router::InFlight(const std::string& instance_id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = in_flight_.find(instance_id);
  return it == in_flight_.end() ? 0 : it->second;
}

absl::Time Router::LastUsed(const std::string& instance_id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = last_used_.find(instance_id);
  return it == last_used_.end() ? absl::InfinitePast() : it->second;
}

void Router::Acquire(const std::string& model, absl::Time deadline, Granted granted,
                     bool explicit_load) {
  auto waiter = std::make_shared<Waiter>();
  waiter->explicit_load = explicit_load;
  waiter->model = model;
  waiter->arrived = absl::Now();
  waiter->deadline = deadline;
  waiter->granted = std::move(granted);
  Attempt(std::move(waiter), /*queued=*/false);
}

void Router::Attempt(std::shared_ptr<Waiter> waiter, bool queued) {
  const std::string& model = waiter->model;
  std::vector<Backend> ready = placement_->ReadyBackends(model);
  std::unique_ptr<Lease> lease;
  absl::Status refused;
  int http_status = 503;
  {
    gswarm::MutexLock lock(&mu_);
    if (shut_down_) {
      refused = ShuttingDown();
    } else {
      if (ready.empty() && waiter->loaded.has_value()) ready.push_back(*waiter->loaded);
      std::erase_if(ready, [this](const Backend& backend) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !placement_->Routable(backend.instance_id);
      });
      if (ready.empty()) {
        // Off the path of a model with ready instances: the catalog (SQLite) and a load.
      } else if (const Backend* best = LeastBusy(ready); best != nullptr) {
        lease = Grant(*best);
        if (queued) --waiting_;
      } else if (absl::Now() >= waiter->deadline) {
        if (queued) --waiting_;
        refused = absl::DeadlineExceededError(absl::StrCat(
            "model \"", model, "\": no instance had room within ",
            absl::FormatDuration(options_.queue_timeout), " (all ", ready.size(), " at ",
            options_.max_concurrent_per_instance, " requests in flight); retry later"));
      } else if (!queued && waiting_ >= options_.max_queue) {
        http_status = 429;
        QueueFull(model);
        refused = absl::ResourceExhaustedError(absl::StrCat(
            "model \"", model, "\": all ", ready.size(), " ready instance(s) are at ",
            options_.max_concurrent_per_instance, " requests in flight and ", waiting_,
            " requests are already waiting (client.max_concurrent_requests and "
            "host.router_queue_size are full; retry after the Retry-After header's seconds)"));
      } else {
        if (!queued) ++waiting_;
        queued_[model].push_back(std::move(waiter));
        return;  // Release or the sweep grants it
      }
    }
  }
  if (lease != nullptr) {
    if (queued) WaitedFor(*waiter);
    return waiter->granted(std::move(lease), 200);
  }
  if (!refused.ok()) return waiter->granted(refused, http_status);
  absl::Status submitted = OffThread([this, waiter, queued] { AttemptLoad(waiter, queued); });
  if (!submitted.ok()) {
    if (queued) {
      gswarm::MutexLock lock(&mu_);
      --waiting_;
    }
    waiter->granted(submitted, 503);
  }
}

void Router::AttemptLoad(std::shared_ptr<Waiter> waiter, bool queued) {
  const std::string& model = waiter->model;
  auto refuse = [&](const absl::Status& why, int http_status) {
    if (queued) {
      gswarm::MutexLock lock(&mu_);
      --waiting_;
    }
    waiter->granted(why, http_status);
  };
  // The catalog refuses to delete a model while an instance serves it.
  if (!waiter->loaded.has_value() && !placement_->IsKnownModel(model)) {
    return refuse(UnknownModel(model), 404);
  }
  if (!options_.autoload && !waiter->explicit_load) {
    return refuse(absl::UnavailableError(absl::StrCat(
                      "model \"", model,
                      "\" has no ready instance and autoload is off (load it with POST "
                      "/api/models/",
                      model, "/load, or turn host.autoload on)")),
                  503);
  }
  std::vector<std::thread> finished;
  absl::Status refused;
  {
    gswarm::MutexLock lock(&mu_);
    if (shut_down_) {
      refused = ShuttingDown();
    } else if (!queued && waiting_ >= options_.max_queue) {
      // A request waiting for a load counts like one in the queue: the same bound.
      QueueFull(model);
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "model \"", model, "\" is loading and ", waiting_,
          " requests are already waiting (host.router_queue_size is full; retry after the "
          "Retry-After header's seconds)"));
    } else {
      if (!queued) ++waiting_;
      if (!flights_.contains(model)) {
        spdlog::info("router: loading model {} for a request (no ready instance)", model);
      }
      EnsureLoading(model, &finished)->waiters.push_back(waiter);
    }
  }
  for (std::thread& thread : finished) thread.join();  // done: they exit at once
  if (!refused.ok()) {
    waiter->granted(refused, absl::IsResourceExhausted(refused) ? 429 : 503);
  }
}

absl::Status Router::OffThread(std::function<void()> work) {
  if (options_.blocking == nullptr) {
    work();
    return absl::OkStatus();
  }
  absl::Status submitted = options_.blocking->Submit(std::move(work));
  if (submitted.ok()) return submitted;
  return absl::UnavailableError(absl::StrCat("the host is overloaded: ", submitted.message()));
}

const Router::Backend* Router::LeastBusy(const std::vector<Backend>& ready) const {
  const Backend* best = nullptr;
  int best_count = 0;
  for (const Backend& backend : ready) {
    auto it = in_flight_.find(backend.instance_id);
    const int count = it == in_flight_.end() ? 0 : it->second;
    if (count < options_.max_concurrent_per_instance && (best == nullptr || count < best_count)) {
      best = &backend;
      best_count = count;
    }
  }
  return best;
}

std::unique_ptr<Router::Lease> Router::Grant(const Backend& backend) {
  ++in_flight_[backend.instance_id];
  last_used_[backend.instance_id] = absl::Now();
  return std::make_unique<Lease>(this, backend);
}

void Router::Release(const Backend& backend) {
  std::shared_ptr<Waiter> next;
  std::unique_ptr<Lease> lease;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = in_flight_.find(backend.instance_id);
    if (it != in_flight_.end() && --it->second <= 0) in_flight_.erase(it);
    last_used_[backend.instance_id] = absl::Now();
    // The slot goes to the oldest request waiting for this model, if the instance still takes
    // requests.
    auto queue = queued_.find(backend.model);
    if (queue != queued_.end() && !queue->second.empty() &&
        placement_->Routable(backend.instance_id)) {
      next = std::move(queue->second.front());
      queue->second.pop_front();
      if (queue->second.empty()) queued_.erase(queue);
      --waiting_;
      lease = Grant(backend);
    }
  }
  if (next != nullptr) {
    WaitedFor(*next);
    next->granted(std::move(lease), 200);
  }
}

void Router::Sweep() {
  for (;;) {
    std::vector<std::shared_ptr<Waiter>> retry;
    std::vector<std::shared_ptr<Waiter>> late;
    {
      gswarm::MutexLock lock(&mu_);
      if (!shut_down_) stop_sweeping_.WaitWithTimeout(&mu_, absl::Milliseconds(500));
      if (shut_down_) return;
      const absl::Time now = absl::Now();
      for (auto& [model, waiters] : queued_) {
        for (std::shared_ptr<Waiter>& waiter : waiters) retry.push_back(std::move(waiter));
      }
      queued_.clear();
      for (auto& [model, flight] : flights_) {
        std::erase_if(flight->waiters, [&](std::shared_ptr<Waiter>& waiter) {
          if (waiter->deadline > now) return false;
          late.push_back(std::move(waiter));
          return true;
        });
      }
      waiting_ -= static_cast<int>(late.size());
    }
    // Still queued ones go back to the end of their queue, in their order.
    for (std::shared_ptr<Waiter>& waiter : retry) Attempt(std::move(waiter), /*queued=*/true);
    for (const std::shared_ptr<Waiter>& waiter : late) {
      waiter->granted(absl::DeadlineExceededError(
                          absl::StrCat("model \"", waiter->model, "\" is still loading after ",
                                       absl::FormatDuration(options_.queue_timeout),
                                       " (the load goes on in the background; retry later)")),
                      503);
    }
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
    gswarm::MutexLock lock(&mu_);
    EnsureLoading(model, &finished);
  }
  for (std::thread& thread : finished) thread.join();  // done: they exit at once
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
  std::vector<std::shared_ptr<Waiter>> waiters;
  {
    gswarm::MutexLock lock(&mu_);
    flight->result = result;
    flight->done = true;
    waiters.swap(flight->waiters);
    auto it = flights_.find(model);
    if (it != flights_.end() && it->second == flight) flights_.erase(it);
    if (!result.ok()) waiting_ -= static_cast<int>(waiters.size());
  }
  for (std::shared_ptr<Waiter>& waiter : waiters) {
    if (!result.ok()) {
      waiter->granted(result.status(), LoadFailureStatus(result.status()));
      continue;
    }
    waiter->loaded = *result;
    Attempt(std::move(waiter), /*queued=*/true);
  }
}

bool Router::TryRetire(const std::string& instance_id, absl::Time idle_since,
                       const std::function<bool()>& take_out) {
  gswarm::MutexLock lock(&mu_);
  if (in_flight_.contains(instance_id)) return false;
  if (auto it = last_used_.find(instance_id); it != last_used_.end() && it->second > idle_since) {
    return false;
  }
  return take_out();
}

void Router::Forget(const std::string& instance_id) {
  gswarm::MutexLock lock(&mu_);
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

}  // namespace gswarm::host
