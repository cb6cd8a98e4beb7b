#include "host/event_bus.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/units.h"

namespace gswarm::host {
namespace {

constexpr const char* kKinds[] = {"node", "job", "replica", "instance", "router"};

}  // namespace

bool EventFilter::Matches(const v1::Event& event) const {
  if (!kinds.empty() && std::find(kinds.begin(), kinds.end(), event.kind()) == kinds.end()) {
    return false;
  }
  if (!model_name.empty() && event.model_name() != model_name) return false;
  if (!node_id.empty() && event.node_id() != node_id) return false;
  return true;
}

absl::Status EventFilter::Validate() const {
  for (const std::string& kind : kinds) {
    if (std::find(std::begin(kKinds), std::end(kKinds), kind) == std::end(kKinds)) {
      return absl::InvalidArgumentError(
          absl::StrCat("event kind \"", kind, "\" is unknown: use ", absl::StrJoin(kKinds, ", ")));
    }
  }
  return absl::OkStatus();
}

v1::Event MakeEvent(std::string kind, std::string action, std::string message) {
  v1::Event event;
  event.set_kind(std::move(kind));
  event.set_action(std::move(action));
  event.set_message(std::move(message));
  return event;
}

std::optional<v1::Event> EventSubscription::Next(absl::Duration timeout) {
  gswarm::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !backlog_.empty() || ended_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  // Events delivered before the end are still handed out.
  if (backlog_.empty()) return std::nullopt;
  v1::Event event = std::move(backlog_.front());
  backlog_.pop_front();
  last_taken_ = event.seq();
  return event;
}

std::vector<v1::Event> EventSubscription::TakeAll() {
  gswarm::MutexLock lock(&mu_);
  std::vector<v1::Event> events(std::make_move_iterator(backlog_.begin()),
                                std::make_move_iterator(backlog_.end()));
  backlog_.clear();
  if (!events.empty()) last_taken_ = events.back().seq();
  return events;
}

bool EventSubscription::ended() const {
  gswarm::MutexLock lock(&mu_);
  return ended_;
}

absl::Status EventSubscription::end() const {
  gswarm::MutexLock lock(&mu_);
  return end_;
}

void EventSubscription::Cancel() { End(absl::CancelledError("the watcher went away")); }

void EventSubscription::End(absl::Status why) {
  gswarm::MutexLock lock(&mu_);
  if (ended_) return;
  ended_ = true;
  end_ = std::move(why);
}

bool EventSubscription::Offer(const v1::Event& event) {
  gswarm::MutexLock lock(&mu_);
  if (ended_) return false;
  if (!filter_.Matches(event)) return true;
  if (backlog_.size() >= max_backlog_) {
    // The events it has not taken are dropped with it: what it read is all it gets.
    const uint64_t last = last_taken_;
    backlog_.clear();
    ended_ = true;
    end_ = absl::ResourceExhaustedError(absl::StrCat(
        "event watcher dropped: it fell ", max_backlog_,
        " events behind (read faster, or narrow the watch by kind, model or node); the last event "
        "it received was seq ",
        last, ", resume with since_seq=", last));
    return false;
  }
  backlog_.push_back(event);
  return true;
}

EventBus::EventBus(Options options) : options_(options) {
  dispatcher_ = std::thread([this] { Dispatch(); });
}

EventBus::~EventBus() {
  Close();
  dispatcher_.join();
}

void EventBus::Close() {
  gswarm::MutexLock lock(&mu_);
  stopping_ = true;
}

void EventBus::Publish(v1::Event event) {
  *event.mutable_time() = common::ToTimestamp(absl::Now());
  gswarm::MutexLock lock(&mu_);
  if (stopping_) return;
  event.set_seq(next_seq_++);
  pending_.push_back(std::move(event));
}

uint64_t EventBus::last_seq() const {
  gswarm::MutexLock lock(&mu_);
  return next_seq_ - 1;
}

void EventBus::Flush() {
  gswarm::MutexLock lock(&mu_);
  const uint64_t target = next_seq_ - 1;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return delivered_seq_ >= target || stopping_;
  };
  mu_.Await(absl::Condition(&done));
}

absl::StatusOr<std::shared_ptr<EventSubscription>> EventBus::Subscribe(EventFilter filter,
                                                                       const Start& start,
                                                                       std::function<void()> wake) {
  RETURN_IF_ERROR(filter.Validate());
  std::shared_ptr<EventSubscription> subscription(
      new EventSubscription(std::move(filter), options_.max_backlog, std::move(wake)));
  gswarm::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the host is shutting down");
  // Events up to delivered_seq_ are in the history (if still held); later ones are pending and
  // reach the new subscription through Dispatch.
  if (start.after.has_value()) {
    const uint64_t after = *start.after;
    const uint64_t oldest = history_.empty() ? delivered_seq_ + 1 : history_.front().seq();
    if (after + 1 < oldest) {
      return absl::OutOfRangeError(absl::StrCat("events after seq ", after,
                                                " are no longer held (the oldest held is ", oldest,
                                                "); watch from now, or from seq ", oldest - 1));
    }
    for (const v1::Event& event : history_) {
      if (event.seq() > after) subscription->Offer(event);
    }
  } else if (start.last > 0) {
    std::vector<const v1::Event*> newest;
    for (auto it = history_.rbegin(); it != history_.rend() && newest.size() < start.last; ++it) {
      if (subscription->filter_.Matches(*it)) newest.push_back(&*it);
    }
    for (auto it = newest.rbegin(); it != newest.rend(); ++it) subscription->Offer(**it);
  }
  if (!start.follow) {
    subscription->End(absl::OkStatus());
    return subscription;
  }
  subscriptions_.push_back(subscription);
  return subscription;
}

void EventBus::Dispatch() {
  for (;;) {
    std::vector<std::shared_ptr<EventSubscription>> woken;
    absl::flat_hash_set<const EventSubscription*> seen;
    {
      gswarm::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !pending_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (stopping_) {
        for (auto& subscription : subscriptions_) {
          subscription->End(absl::UnavailableError("the host is shutting down"));
          if (subscription->wake_) woken.push_back(subscription);
        }
        subscriptions_.clear();
        pending_.clear();  // nobody is left to deliver them to
      } else {
        while (!pending_.empty()) {
          v1::Event event = std::move(pending_.front());
          pending_.pop_front();
          delivered_seq_ = event.seq();
          std::erase_if(subscriptions_, [&](const std::shared_ptr<EventSubscription>& s) {
            const bool open = s->Offer(event);
            if (s->wake_ && seen.insert(s.get()).second) woken.push_back(s);
            return !open;
          });
          history_.push_back(std::move(event));
          if (history_.size() > options_.history) history_.pop_front();
        }
      }
    }
    for (const auto& subscription : woken) subscription->wake_();
    gswarm::MutexLock lock(&mu_);
    if (stopping_) return;
  }
}

}  // namespace gswarm::host
