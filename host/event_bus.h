#pragma once

// Cluster events (nodes, jobs, replicas, instances, router actions) in one ordered stream.
//
// Publishers stamp nothing: Publish() gives every event the next sequence number and the time,
// and returns at once — it only appends to a queue, so it may be called under any lock. One
// dispatcher thread moves events into the history (the last `history` events, for watchers that
// resume from a sequence number) and into each subscription's own bounded backlog.
//
// A subscriber that falls `max_backlog` events behind is dropped: its subscription ends with
// RESOURCE_EXHAUSTED saying how far behind it was and the last sequence number it received, so
// it can resume from there. A slow watcher never slows a publisher.
//
// Thread safety: thread-safe. `wake` callbacks run on the dispatcher thread with no lock held.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "absl/time/time.h"
#include "gswarm/v1/api.pb.h"

namespace gswarm::host {

// Which events a watcher wants; empty fields match everything.
struct EventFilter {
  std::vector<std::string> kinds;
  std::string model_name;
  std::string node_id;

  bool Matches(const v1::Event& event) const;
  // INVALID_ARGUMENT for a kind that no event has.
  absl::Status Validate() const;
};

class EventSubscription {
 public:
  // The next event, waiting up to `timeout`; nullopt on timeout or once ended (see end()).
  std::optional<v1::Event> Next(absl::Duration timeout);
  // Every event waiting now, without blocking.
  std::vector<v1::Event> TakeAll();
  // Whether it has ended, and why: OK when it ended as asked (Start::follow false).
  bool ended() const;
  absl::Status end() const;
  // Ends the subscription (the watcher went away); the bus forgets it.
  void Cancel();

 private:
  friend class EventBus;
  EventSubscription(EventFilter filter, size_t max_backlog, std::function<void()> wake)
      : filter_(std::move(filter)), max_backlog_(max_backlog), wake_(std::move(wake)) {}
  // Adds `event` if it matches; false when the backlog overflowed (the subscription has ended).
  bool Offer(const v1::Event& event);
  void End(absl::Status why);

  const EventFilter filter_;
  const size_t max_backlog_;
  const std::function<void()> wake_;
  mutable gswarm::Mutex mu_;
  std::deque<v1::Event> backlog_ ABSL_GUARDED_BY(mu_);
  uint64_t last_taken_ ABSL_GUARDED_BY(mu_) = 0;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_ ABSL_GUARDED_BY(mu_);
};

class EventBus {
 public:
  struct Options {
    // Events kept for watchers that resume from a sequence number.
    size_t history = 4096;
    // Events a subscriber may have waiting before it is dropped (at least `history`, so that a
    // watcher resuming from the oldest held event is not dropped at once).
    size_t max_backlog = 8192;
  };

  explicit EventBus(Options options);
  ~EventBus();  // ends every subscription with UNAVAILABLE
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Stamps `event` with the next sequence number and the time, and queues it for delivery.
  void Publish(v1::Event event);

  // Where a subscription starts.
  struct Start {
    // First the held events after this sequence number (nullopt: none, start from now).
    std::optional<uint64_t> after;
    // Or first the newest `last` held events that match (when `after` is unset).
    size_t last = 0;
    // False: end (OK) once the held events are delivered.
    bool follow = true;
  };

  // Events matching `filter`, from `start` on. `wake`, if given, is called (on the dispatcher
  // thread) whenever events arrive or the subscription ends. OUT_OF_RANGE when events after
  // `start.after` are no longer held; INVALID_ARGUMENT for a bad filter.
  absl::StatusOr<std::shared_ptr<EventSubscription>> Subscribe(
      EventFilter filter, const Start& start, std::function<void()> wake = nullptr);

  // The sequence number of the last event published (0 before the first).
  uint64_t last_seq() const;

  // Ends every subscription with UNAVAILABLE (the host is shutting down) and delivers nothing
  // more; watchers waiting in Next() return at once.
  void Close();

  // Blocks until every event published so far has been delivered (tests).
  void Flush();

 private:
  void Dispatch();

  const Options options_;
  mutable gswarm::Mutex mu_;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t delivered_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<v1::Event> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::Event> history_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<EventSubscription>> subscriptions_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread dispatcher_;
};

// Event builders for the publishers: kind, action and the ids; callers add the rest.
v1::Event MakeEvent(std::string kind, std::string action, std::string message);

}  // namespace gswarm::host
