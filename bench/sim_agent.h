#pragma once

// Simulated agents for bench/agents_scale: each SimAgent is one gswarm.v1.AgentLink/Connect
// stream on gRPC's callback client API (no thread per agent), every agent of a round reports into
// one AgentRound, and one HeartbeatScheduler thread drives all their heartbeats.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <queue>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "absl/time/time.h"
#include "gswarm/v1/agent.grpc.pb.h"

namespace gswarm::bench {

using Clock = std::chrono::steady_clock;

inline double MsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// What every agent of one round reports into: connection outcomes and the measurement window.
// Thread-safe.
class AgentRound {
 public:
  explicit AgentRound(int agents) : agents_(agents) {}

  void OnWelcome(double hello_ms);
  void OnDone(bool was_welcomed, const grpc::Status& status);

  // Waits until every agent is welcomed or has failed; false on timeout.
  bool AwaitConnected(absl::Duration timeout);
  // Waits until every agent's OnDone ran; false on timeout.
  bool AwaitFinished(absl::Duration timeout);

  int welcomed() const;
  int failed() const;                    // streams that ended before Welcome
  std::string first_error() const;       // first non-CANCELLED status, "" when none
  std::vector<double> hello_ms() const;  // Hello sent -> Welcome received, per agent

  // Heartbeats count toward the window when they are sent inside [start, end).
  void SetWindow(Clock::time_point start, Clock::time_point end);
  bool InWindow(Clock::time_point t) const;

 private:
  const int agents_;
  mutable gswarm::Mutex mu_;
  int welcomed_ ABSL_GUARDED_BY(mu_) = 0;
  int failed_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_error_ ABSL_GUARDED_BY(mu_);
  std::vector<double> hello_ms_ ABSL_GUARDED_BY(mu_);
  // Lock-free because every heartbeat send reads them.
  std::atomic<Clock::rep> window_start_{std::numeric_limits<Clock::rep>::max()};
  std::atomic<Clock::rep> window_end_{std::numeric_limits<Clock::rep>::max()};
};

class SimAgent;

// Fires every agent's heartbeats from one thread off a min-heap of due times, so N agents cost
// one thread, not N sleeping ones. Thread-safe.
class HeartbeatScheduler {
 public:
  explicit HeartbeatScheduler(std::chrono::milliseconds interval);
  ~HeartbeatScheduler();  // Stop()s

  // `agent` must stay alive until Stop() returns.
  void Add(SimAgent* agent, Clock::time_point first_due);
  // Once Stop returns no agent is called again; Add after Stop is harmless.
  void Stop();

 private:
  struct Entry {
    Clock::time_point due;
    SimAgent* agent;
    bool operator>(const Entry& other) const { return due > other.due; }
  };

  void Run();

  const std::chrono::milliseconds interval_;
  gswarm::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

struct SimAgentOptions {
  int interval_ms = 2000;  // heartbeat interval, also announced in Hello
  std::string token;       // sent as `authorization: Bearer <token>` when not empty
};

// One agent's heartbeats sent inside the round's window.
struct AgentSamples {
  std::vector<double> rtt_ms;  // send -> ack, per acked heartbeat
  int sent = 0;
  int unacked = 0;  // no ack by the time the samples were taken, or skipped by a later ack
};

// One simulated agent: Hello -> Welcome, then a Heartbeat each interval from the scheduler,
// timing each HeartbeatAck. One write in flight at a time; heartbeats due meanwhile queue, their
// clocks already running.
//
// Thread-safe: reactions (gRPC threads) and the scheduler thread meet under mu_. gRPC calls are
// never made with mu_ held, because a Start* may run a reaction inline on the calling thread. A
// hold keeps the call open until no write can start any more, since the scheduler starts writes
// from outside a reaction.
//
// Lifetime: the owner keeps the object, the round and the scheduler alive until OnDone has run
// (AgentRound::AwaitFinished), after Cancel() or the host closing the stream.
class SimAgent : public grpc::ClientBidiReactor<gswarm::v1::AgentMessage, gswarm::v1::HostMessage> {
 public:
  SimAgent(int index, const SimAgentOptions& options, AgentRound* round,
           HeartbeatScheduler* scheduler)
      : index_(index), options_(options), round_(round), scheduler_(scheduler) {}

  // Opens the stream and sends Hello with node id "sim-<index, 6 digits>".
  void Start(gswarm::v1::AgentLink::Stub* stub, std::mt19937* rng);
  // Called by the scheduler thread.
  void SendHeartbeat();
  // Heartbeats sent in the window so far; resets them.
  AgentSamples TakeSamples();
  void Cancel() { context_.TryCancel(); }

 private:
  struct Pending {
    uint64_t seq;
    Clock::time_point sent;
    bool counted;  // sent inside the window
  };

  void PrepareHeartbeatLocked(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ReleaseHoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  const int index_;
  const SimAgentOptions& options_;
  AgentRound* const round_;
  HeartbeatScheduler* const scheduler_;
  grpc::ClientContext context_;
  gswarm::v1::HostMessage read_msg_;  // owned by the read chain: one read in flight
  Clock::time_point started_;
  double phase_ = 0;  // first heartbeat at Welcome + phase_ x interval

  gswarm::Mutex mu_;
  gswarm::v1::AgentMessage write_msg_;  // owned by the write in flight; filled under mu_
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool welcomed_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_released_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<uint64_t> queued_ ABSL_GUARDED_BY(mu_);
  std::deque<Pending> outstanding_ ABSL_GUARDED_BY(mu_);
  AgentSamples samples_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gswarm::bench
