#pragma once

// The one owner of every inference instance's state on the host.
//
// Input, in the order the agents sent it (the orchestrator feeds it from its single event
// queue): a node's inventory on connect (ApplyInventory), and each instance report from a
// heartbeat or a command update (ApplyReport). Agents stamp every change with a generation that
// only grows; a report older than the one held is stale and dropped, so a late "ready" can never
// overwrite a newer "stopped". The host's own steps are Plan (a serve was sent: its GPU room is
// held from then on), PlanEnded (the serve ended without an instance) and Drain/Undrain (the
// router takes an instance out of rotation before stopping it, or puts it back).
//
// Every change goes through one Transition(), which checks the edge (instance_state.h), logs
// `node= model= instance= a -> b (reason)` and publishes an "instance" event. Listeners hear of
// each change after the manager's lock is released.
//
// Thread safety: thread-safe.

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "gswarm/v1/common.pb.h"
#include "host/event_bus.h"
#include "host/instance_state.h"

namespace gswarm::host {

class InstanceManager {
 public:
  // Ended instances stay listed (gswarm ps, GET /serving) until this many more have ended.
  static constexpr size_t kKeepEnded = 1000;

  // Called after every state change, with the instance as it is now.
  using Listener =
      std::function<void(const v1::Instance& instance, InstanceState from, InstanceState to)>;

  // `events` may be null (no events published); it must outlive the manager.
  explicit InstanceManager(EventBus* events);

  // Registers a listener; it hears of changes from then on.
  void AddListener(Listener listener);

  // The node's complete list, from its Hello: it replaces what the host held for the node, except
  // instances still planned (their serve is sent again on reconnect).
  void ApplyInventory(const std::string& node_id, const std::vector<v1::Instance>& instances);
  // One instance as the agent reports it now. False when the report is stale (an older
  // generation than the one held) and was dropped.
  bool ApplyReport(const std::string& node_id, v1::Instance report);

  // A serve was sent for `instance` (id, model, node, gpu, managed_by filled in): holds
  // `reserved_bytes` on its GPU until the agent's report says what it really uses.
  void Plan(v1::Instance instance, uint64_t reserved_bytes);
  // The serve ended without the agent reporting the instance: a planned one fails with `why`.
  void PlanEnded(const std::string& instance_id, const std::string& why);
  // Takes a ready (or sleeping) instance out of rotation. FAILED_PRECONDITION otherwise.
  absl::Status Drain(const std::string& instance_id, const std::string& why);
  // Puts a draining instance back into rotation (its stop could not be sent).
  absl::Status Undrain(const std::string& instance_id, const std::string& why);

  std::vector<v1::Instance> List(const std::string& model_name = "",
                                 const std::string& node_id = "") const;
  std::optional<v1::Instance> Get(const std::string& id) const;
  // The instance's state alone (no copy of the rest): the router asks it per request.
  std::optional<InstanceState> State(const std::string& id) const;
  // Active instances (instance_state.h: planned up to stopping), sorted by id.
  std::vector<v1::Instance> Active(const std::string& model_name = "",
                                   const std::string& node_id = "") const;
  // What the host holds for an instance on its GPU until reported: the bytes Plan() reserved.
  uint64_t ReservedBytes(const std::string& id) const;
  // Reports dropped as stale so far.
  uint64_t stale_reports() const;

 private:
  struct Record {
    v1::Instance info;  // info.state() mirrors `state`, for the API edge
    InstanceState state = InstanceState::kPlanned;
    uint64_t reserved_bytes = 0;
  };
  struct Change {
    v1::Instance instance;
    InstanceState from;
    InstanceState to;
  };

  // The one place a state changes. Refuses an edge the machine lacks (logged, and false) unless
  // `forced`: the agent is the truth for its node, so its newer reports are applied whatever
  // the edge, with a warning. REQUIRES: mu_ held.
  bool Transition(Record& record, InstanceState to, const std::string& reason, bool forced,
                  std::vector<Change>* changes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Notify(const std::vector<Change>& changes) ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets the oldest ended instances beyond kKeepEnded (they are listed until then).
  void PruneEnded() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  EventBus* const events_;
  gswarm::Mutex listeners_mu_;
  std::vector<Listener> listeners_ ABSL_GUARDED_BY(listeners_mu_);
  mutable gswarm::Mutex mu_;
  absl::flat_hash_map<std::string, Record> records_ ABSL_GUARDED_BY(mu_);
  uint64_t stale_ ABSL_GUARDED_BY(mu_) = 0;
  // Ids of instances as they ended, oldest first (an id may repeat if it ended twice).
  std::deque<std::string> ended_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gswarm::host
