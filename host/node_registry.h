#pragma once

// The host's view of every node that connected during this run: who is online, their hardware
// and their memory as of the last heartbeat.
//
// A node is online while its agent's stream is open and heartbeats arrive; it goes offline when
// the stream ends or when it misses `missed_heartbeats` heartbeats in a row (a frozen agent or a
// silent network keeps the stream open), and comes back when heartbeats resume. A second session
// for the same node id replaces the first, whose stream is closed.
//
// Thread safety: thread-safe. Sessions are closed outside the registry's lock, so a session's
// Close may call back into the registry.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/mutex.h"
#include "absl/time/time.h"
#include "gswarm/v1/agent.pb.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::host {

class EventBus;

class NodeRegistry {
 public:
  // A connected agent's stream, as the registry sees it.
  class Session {
   public:
    virtual ~Session() = default;
    // Ends the stream with `reason` (sent to the agent). Idempotent; callable from any thread.
    virtual void Close(const absl::Status& reason) = 0;
    // Queues a message to the agent; dropped once the session is closed.
    virtual void Send(v1::HostMessage message) = 0;
  };

  struct Options {
    // Heartbeats missed in a row before a node is offline.
    int missed_heartbeats = 3;
    // Floor of that timeout, so that very short intervals do not flap on a busy host.
    absl::Duration min_timeout = absl::Milliseconds(500);
    // The clock; tests pass a fake one.
    std::function<absl::Time()> now = [] { return absl::Now(); };
    // Where "node" events go (online, offline); may be null. Must outlive the registry.
    EventBus* events = nullptr;
  };

  explicit NodeRegistry(Options options);

  // Registers a session for `hello.node_id()` and returns its id. A session already open for that
  // node is closed with ABORTED. INVALID_ARGUMENT for a Hello without a valid node id.
  absl::StatusOr<std::string> Connect(const v1::Hello& hello, std::string peer,
                                      std::shared_ptr<Session> session);

  // Records a heartbeat. False when `session_id` is no longer the node's session (it was
  // replaced), in which case nothing changes.
  bool Heartbeat(const std::string& node_id, const std::string& session_id,
                 const v1::Heartbeat& heartbeat);

  // The session's stream ended. No-op when the node has a newer session.
  void Disconnect(const std::string& node_id, const std::string& session_id,
                  absl::string_view reason);

  // Queues `message` on the node's current session. False when the node has none (offline).
  bool Send(const std::string& node_id, v1::HostMessage message);

  // Marks online nodes whose heartbeats stopped as offline. Returns how many changed.
  int SweepStale();

  std::vector<v1::NodeInfo> List() const;
  std::optional<v1::NodeInfo> Get(const std::string& node_id) const;
  // The node if it is online now; nullopt when unknown or offline.
  std::optional<v1::NodeInfo> GetOnline(const std::string& node_id) const;

  // Closes every session (host shutdown).
  void CloseAll(const absl::Status& reason);

 private:
  struct Node {
    v1::NodeInfo info;
    std::string session_id;
    std::shared_ptr<Session> session;  // null while offline
    absl::Time last_heartbeat;
  };

  absl::Duration TimeoutFor(const Node& node) const;
  // Changes a node's state and logs the change. REQUIRES: mu_ held.
  void SetState(Node& node, absl::string_view state, absl::string_view reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable gswarm::Mutex mu_;
  absl::flat_hash_map<std::string, Node> nodes_ ABSL_GUARDED_BY(mu_);
};

// Node ids follow model names' rules: [A-Za-z0-9][A-Za-z0-9._-]{0,127}, no "..".
absl::Status ValidateNodeId(absl::string_view node_id);

}  // namespace gswarm::host
