#pragma once

// The OpenAI-compatible front door on the host's HTTP port: requests naming a model go to a ready
// instance of it with the fewest requests in flight, an instance is loaded on demand when none is
// ready, and the "default" alias (the active model) can be switched atomically.
//
// Thread safety: thread-safe. Handlers run on the HTTP server's I/O threads and never block
// there: a request that must wait (for room on an instance, for a load) is queued and answered
// when its lease is granted, from whichever thread grants it; catalog lookups (SQLite) run on the
// `blocking` pool. Upstream exchanges run on the same I/O threads (host/http_upstream.h).
//
// Lifetime: Shutdown() before the server stops; the Router outlives the I/O threads (a lease
// held by an exchange in progress is released when that exchange goes), and `placement` outlives
// the Router.

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace gswarm::common {
class WorkerPool;
}

namespace gswarm::host {

class EventBus;
class HostMetrics;
class UpstreamPool;
namespace http {
class Exchange;
class HttpServer;
}  // namespace http

class Router {
 public:
  struct Backend {
    std::string instance_id;
    std::string model;
    std::string endpoint;  // "http://127.0.0.1:port"
  };

  // What the router needs from the rest of the host. Called without the router's lock held, from
  // request threads and from the router's load threads.
  class Placement {
   public:
    virtual ~Placement() = default;
    // The ready instances of `model` now.
    virtual std::vector<Backend> ReadyBackends(const std::string& model) = 0;
    // Whether `model` is registered in the catalog.
    virtual bool IsKnownModel(const std::string& model) = 0;
    // Whether the instance may take a new request now (ready; not draining or gone). Called with
    // the router's lock held: it must neither call the router nor wait for a lock that is held
    // while calling it.
    virtual bool Routable(const std::string& instance_id) = 0;
    // Starts an instance of `model` and returns it once ready, giving up at `deadline`. The
    // router calls it at most once at a time per model (single flight), on a thread of its own.
    virtual absl::StatusOr<Backend> Load(const std::string& model, absl::Time deadline) = 0;
    // Entries for GET /v1/models: {"id", "object": "model", "owned_by": "gswarm", "size_mb",
    // "load_time_ms", ...}; the router adds "is_active".
    virtual std::vector<nlohmann::json> ModelEntries() = 0;
    // Every request's "keep_alive" for the instance it was sent to, as Ollama takes it: how long
    // that instance may stay idle from now on (absl::InfiniteDuration(): for ever, zero: unload
    // once idle); nullopt, for a request without one, restores the default.
    virtual void KeepAlive(const std::string& instance_id,
                           std::optional<absl::Duration> keep_alive) = 0;
  };

  // The model name that means the active model.
  static constexpr char kAlias[] = "default";

  struct Options {
    // Requests in flight per instance (client.max_concurrent_requests); more wait in the queue.
    int max_concurrent_per_instance = 256;
    // Requests waiting for a free instance, across the router; beyond it: 429 with Retry-After.
    int max_queue = 1024;
    // How long a request waits, in the queue or for a load, before it gets 503.
    absl::Duration queue_timeout = absl::Seconds(60);
    // Load an instance when a request names a model with none ready; off: 503 at once.
    bool autoload = true;
    // The deadline given to Placement::Load. A load outlives the requests that gave up on it,
    // so a retry finds the instance.
    absl::Duration load_timeout = absl::Minutes(10);
    // Connecting to an instance; past it: 502.
    absl::Duration connect_timeout = absl::Seconds(5);
    // Silence from an instance mid-answer (between two chunks of a stream, or before a
    // non-streaming answer); past it: 502 (or a cut stream).
    absl::Duration upstream_read_timeout = absl::Minutes(10);
    // Where "router" events go (load requested, load failed, switched, queue full); may be null.
    EventBus* events = nullptr;
    // Where the active model (the "default" alias) is kept across host restarts: read at
    // construction, rewritten atomically by every Switch. Empty: not kept.
    std::string active_model_file;
    // Where work that may block (the catalog's SQLite) runs; null: on the calling thread.
    common::WorkerPool* blocking = nullptr;
    // Told of every request and queue wait (GET /metrics); may be null.
    HostMetrics* metrics = nullptr;
  };

  // One request in flight on an instance, counted for as long as it lives.
  class Lease {
   public:
    Lease(Router* router, Backend backend);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    const Backend& backend() const { return backend_; }

   private:
    Router* const router_;
    const Backend backend_;
  };
  // What a waiting request is told: a lease, or why not and the HTTP status to answer with.
  using Granted =
      std::function<void(absl::StatusOr<std::unique_ptr<Lease>> lease, int http_status)>;

  // `placement` is not owned.
  Router(Options options, Placement* placement);
  ~Router();  // Shutdown(), then waits for load threads (Placement::Load honours its deadline)

  // Answers every waiting request 503 and refuses new ones. Idempotent.
  void Shutdown();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Adds GET /v1/models, POST /v1/chat/completions, /v1/completions, /v1/embeddings, POST
  // /v1/models/switch and POST /v1/models/load to `server`. Auth is the server's filter's concern.
  void Install(http::HttpServer& server);

  // Hot swap: the alias "default" (and requests naming no model) go to `model` from now on;
  // requests in flight finish where they are. Returns {"success": true, "active_model",
  // "switch_time_us", "previous_model"}; NOT_FOUND for a model not in the catalog.
  absl::StatusOr<nlohmann::json> Switch(const std::string& model);
  std::string active_model() const;
  // Requests queued or waiting for a load now.
  int waiting() const;

  // A lease on the least busy ready instance of `model`, loading one if none is ready, as an
  // HTTP request takes it: the instance counts it in flight until the handle is destroyed. For
  // front doors other than the HTTP one (and tests).
  absl::StatusOr<std::shared_ptr<const Backend>> Reserve(const std::string& model,
                                                         absl::Time deadline);

  // Leases for eviction: requests in flight on an instance (streams included), and when it was
  // last picked or released (absl::InfinitePast() if never).
  int InFlight(const std::string& instance_id) const;
  absl::Time LastUsed(const std::string& instance_id) const;
  // Takes the instance out of rotation if no request holds a lease on it and none was sent to it
  // after `idle_since`: then `take_out` (the placement's drain, after which Routable is false)
  // runs with the router's lock held, and its answer is returned; false without calling it when a
  // request holds or used the instance. Atomic with leasing: once this returns true no request
  // is sent there again, so the instance can be stopped under nobody.
  bool TryRetire(const std::string& instance_id, absl::Time idle_since,
                 const std::function<bool()>& take_out);
  // Drops what the router knows of an instance that is gone.
  void Forget(const std::string& instance_id);
  // Starts loading `model` unless a load of it is in flight (the single flight requests share),
  // without waiting for it: host.preload.
  void StartLoad(const std::string& model);

 private:
  struct Flight;
  struct Waiter;

  void HandleModels(std::shared_ptr<http::Exchange> exchange);
  void HandleSwitch(std::shared_ptr<http::Exchange> exchange);
  void HandleLoad(std::shared_ptr<http::Exchange> exchange);
  void HandleInference(std::shared_ptr<http::Exchange> exchange);

  // A lease on the least busy ready instance of `model`: `granted` runs at once when one has
  // room, later when the request had to wait (queue, load), with an error at `deadline`.
  // `explicit_load`: load even with autoload off (POST /v1/models/load).
  void Acquire(const std::string& model, absl::Time deadline, Granted granted,
               bool explicit_load = false);
  // One try for `waiter`: granted, refused, queued for room, or waiting for a load. `queued`:
  // it already counts in waiting_ (it comes back from the queue or a load).
  void Attempt(std::shared_ptr<Waiter> waiter, bool queued);
  // No ready instance: the catalog check and the load, on the blocking pool.
  void AttemptLoad(std::shared_ptr<Waiter> waiter, bool queued);
  // Runs `work` on the blocking pool (inline without one); UNAVAILABLE when the pool is full.
  absl::Status OffThread(std::function<void()> work);
  // The load of `model` in flight, started if none is. Threads of finished loads are moved to
  // `finished` for the caller to join outside the lock.
  std::shared_ptr<Flight> EnsureLoading(const std::string& model,
                                        std::vector<std::thread>* finished)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunLoad(const std::string& model, std::shared_ptr<Flight> flight);
  // The ready instance with the fewest requests in flight, if one has room.
  const Backend* LeastBusy(const std::vector<Backend>& ready) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<Lease> Grant(const Backend& backend) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Release(const Backend& backend);
  // A queued request got its lease: how long it waited goes to the metrics.
  void WaitedFor(const Waiter& waiter) const;
  // Wakes every 500 ms: answers waiters past their deadline and retries the queued ones (an
  // instance that became ready frees no lease).
  void Sweep();
  void Publish(const std::string& action, const std::string& model,
               const std::string& message) const;
  // A "queue_full" event, at most once a second.
  void QueueFull(const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  Placement* const placement_;
  std::unique_ptr<UpstreamPool> upstreams_;

  gswarm::Mutex persist_mu_;  // one write of options_.active_model_file at a time
  mutable gswarm::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  gswarm::CondVar stop_sweeping_;
  std::thread sweeper_;
  // Requests waiting for room on a ready instance, per model, oldest first.
  absl::flat_hash_map<std::string, std::deque<std::shared_ptr<Waiter>>> queued_
      ABSL_GUARDED_BY(mu_);
  std::string active_model_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::Time> last_used_ ABSL_GUARDED_BY(mu_);
  // Requests queued or waiting for a load.
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_queue_full_event_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::shared_ptr<Flight>, std::thread>> loaders_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gswarm::host
