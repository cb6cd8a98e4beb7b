#pragma once

// The OpenAI-compatible front door on the host's HTTP port: requests naming a model go to a ready
// instance of it with the fewest requests in flight, an instance is loaded on demand when none is
// ready, and the "default" alias (the active model) can be switched atomically.
//
// Thread safety: thread-safe. Handlers run on the server's pool: each waiting request (queue,
// load) and each stream holds one server thread for its duration, so size the server's pool for
// max_queue plus the streams expected. A stream also runs its upstream request on a thread of
// its own, so that the engine's status (and a connection failure: 502) reaches the client before
// our headers go out.
//
// Lifetime: the Router must outlive the server it is installed on (stop the server first), and
// `placement` must outlive the Router. The process must ignore SIGPIPE: httplib 0.11 writes with
// send() flags 0, so a client that disconnects mid-stream would otherwise kill it.

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
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace gswarm::host {

class EventBus;
class UpstreamPool;

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
  };

  // `placement` is not owned.
  Router(Options options, Placement* placement);
  ~Router();  // waits for load threads (Placement::Load honours its deadline)
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Adds GET /v1/models, POST /v1/chat/completions, /v1/completions, /v1/embeddings and POST
  // /v1/models/switch to `server`. Auth is the server's pre-routing concern.
  void Install(httplib::Server& server);

  // Hot swap: the alias "default" (and requests naming no model) go to `model` from now on;
  // requests in flight finish where they are. Returns {"success": true, "active_model",
  // "switch_time_us", "previous_model"}; NOT_FOUND for a model not in the catalog.
  absl::StatusOr<nlohmann::json> Switch(const std::string& model);
  std::string active_model() const;

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
  class Lease;
  struct Flight;

  void HandleModels(httplib::Response& res);
  void HandleSwitch(const httplib::Request& req, httplib::Response& res);
  void HandleInference(const httplib::Request& req, httplib::Response& res);

  // A lease on the least busy ready instance of `model`, waiting (queue, load) until `deadline`.
  // Fills `http_status` with the answer's status on failure.
  absl::StatusOr<std::unique_ptr<Lease>> Acquire(const std::string& model, absl::Time deadline,
                                                 int* http_status);
  // Waits for the single load of `model` in flight, starting it if none is.
  absl::StatusOr<Backend> AwaitLoad(const std::string& model, absl::Time deadline);
  // The load of `model` in flight, started if none is. Threads of finished loads are moved to
  // `finished` for the caller to join outside the lock.
  std::shared_ptr<Flight> EnsureLoading(const std::string& model,
                                        std::vector<std::thread>* finished)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunLoad(const std::string& model, std::shared_ptr<Flight> flight);
  void Release(const std::string& instance_id);
  void Publish(const std::string& action, const std::string& model,
               const std::string& message) const;
  // A "queue_full" event, at most once a second.
  void QueueFull(const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  Placement* const placement_;
  std::unique_ptr<UpstreamPool> upstreams_;

  absl::Mutex persist_mu_;  // one write of options_.active_model_file at a time
  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // an instance freed up or a load finished
  std::string active_model_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::Time> last_used_ ABSL_GUARDED_BY(mu_);
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_queue_full_event_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::shared_ptr<Flight>, std::thread>> loaders_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gswarm::host
