// RestGateway::InstallEvents: GET /events, the cluster's events as Server-Sent Events (id = the
// event's sequence number, event = its kind), written as fast as the client takes them.

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "boost/asio/post.hpp"
#include "boost/asio/steady_timer.hpp"
#include "common/grpc_util.h"
#include "common/mutex.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "host/event_bus.h"
#include "host/rest_gateway.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

constexpr absl::Duration kSseKeepAlive = absl::Seconds(15);

absl::StatusOr<std::pair<EventFilter, EventBus::Start>> ParseEventQuery(const http::Request& req) {
  EventFilter filter;
  EventBus::Start start;
  for (const char* key : {"kind", "kinds"}) {
    for (const std::string& value : req.params_named(key)) {
      for (absl::string_view kind : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        filter.kinds.emplace_back(kind);
      }
    }
  }
  filter.model_name = req.param("model");
  filter.node_id = req.param("node");
  RETURN_IF_ERROR(filter.Validate());
  auto number = [&](const std::string& text, const char* what) -> absl::StatusOr<uint64_t> {
    uint64_t value = 0;
    if (!absl::SimpleAtoi(text, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be a non-negative integer, not \"", text, "\""));
    }
    return value;
  };
  std::string since = req.param("since");
  if (since.empty()) since = req.header("Last-Event-ID");
  if (!since.empty()) {
    ASSIGN_OR_RETURN(uint64_t after, number(since, "since"));
    if (after > 0) start.after = after;
  }
  if (req.has_param("last")) {
    ASSIGN_OR_RETURN(start.last, number(req.param("last"), "last"));
  }
  const std::string follow = req.param("follow");
  if (!follow.empty() && follow != "true" && follow != "false") {
    return absl::InvalidArgumentError(
        absl::StrCat("follow must be true or false, not \"", follow, "\""));
  }
  start.follow = follow != "false";
  return std::make_pair(std::move(filter), start);
}

// One Server-Sent Event: the sequence number as its id (a reconnecting EventSource resumes
// from it), the kind as its type, the event in protobuf's JSON mapping as its data.
std::string SseFrame(const v1::Event& event) {
  absl::StatusOr<std::string> json = common::ToJson(event);
  return absl::StrCat("id: ", event.seq(), "\nevent: ", event.kind(),
                      "\ndata: ", json.ok() ? *json : "{}", "\n\n");
}

// One open GET /events: events are written as they arrive, one write in flight at a time (what
// arrives meanwhile waits in the subscription's bounded backlog); a comment line goes out when
// nothing has for kSseKeepAlive, so a client that left is noticed.
class EventStream : public std::enable_shared_from_this<EventStream> {
 public:
  explicit EventStream(std::shared_ptr<http::Exchange> exchange)
      : exchange_(std::move(exchange)), timer_(exchange_->executor()) {}

  void Run(std::shared_ptr<EventSubscription> subscription) {
    {
      gswarm::MutexLock lock(&mu_);
      subscription_ = std::move(subscription);
    }
    // The exchange holds the stream until the client goes or the stream ends.
    exchange_->OnCancel([self = shared_from_this()] { self->Stop(); });
    http::Response head;
    head.content_type = "text/event-stream";
    head.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};
    exchange_->Start(std::move(head));
    Pump();
    ArmKeepAlive();
  }

  // More events, or the end (the subscription's wake).
  void Pump() {
    std::shared_ptr<EventSubscription> subscription;
    {
      gswarm::MutexLock lock(&mu_);
      if (stopped_ || subscription_ == nullptr) return;
      if (writing_) {
        again_ = true;
        return;
      }
      writing_ = true;
      subscription = subscription_;
    }
    std::string frames;
    for (const v1::Event& event : subscription->TakeAll()) frames += SseFrame(event);
    const bool ended = frames.empty() && subscription->ended();
    if (ended) {
      const absl::Status end = subscription->end();
      frames = end.ok() ? "event: end\ndata: {}\n\n"
                        : absl::StrCat("event: end\ndata: ", common::ErrorJson(end), "\n\n");
    }
    if (frames.empty()) return Written(true);
    {
      gswarm::MutexLock lock(&mu_);
      sent_ = true;
    }
    exchange_->Write(std::move(frames), [self = shared_from_this(), ended](bool ok) {
      if (ended) return self->Finish();
      self->WrittenEvents(ok);
    });
  }

 private:
  // A write finished: whatever arrived meanwhile (or the end) goes next.
  void Written(bool ok) {
    if (!ok) return Stop();
    bool again;
    {
      gswarm::MutexLock lock(&mu_);
      writing_ = false;
      again = std::exchange(again_, false);
    }
    if (again) Pump();
  }

  // After a write of events: more may be waiting, or the end.
  void WrittenEvents(bool ok) {
    {
      gswarm::MutexLock lock(&mu_);
      again_ = true;
    }
    Written(ok);
  }

  void ArmKeepAlive() {
    timer_.expires_after(absl::ToChronoNanoseconds(kSseKeepAlive));
    timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      std::shared_ptr<EventStream> self = weak.lock();
      if (ec || self == nullptr) return;
      bool write = false;
      {
        gswarm::MutexLock lock(&self->mu_);
        if (self->stopped_) return;
        write = !self->writing_ && !std::exchange(self->sent_, false);
        if (write) self->writing_ = true;
      }
      if (write) {
        self->exchange_->Write(": keep-alive\n\n", [self](bool ok) { self->Written(ok); });
      }
      self->ArmKeepAlive();
    });
  }

  void Finish() {
    Stop();
    exchange_->End();
  }

  void Stop() {
    std::shared_ptr<EventSubscription> subscription;
    {
      gswarm::MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
      subscription = std::move(subscription_);
    }
    if (subscription != nullptr) subscription->Cancel();
    boost::asio::post(timer_.get_executor(),
                      [self = shared_from_this()] { self->timer_.cancel(); });
  }

  const std::shared_ptr<http::Exchange> exchange_;
  boost::asio::steady_timer timer_;
  gswarm::Mutex mu_;
  std::shared_ptr<EventSubscription> subscription_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool again_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Something was written since the last keep-alive check.
  bool sent_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

void RestGateway::InstallEvents(http::HttpServer& server, EventBus* events) {
  server.Route("GET", "/events", [events](std::shared_ptr<http::Exchange> exchange) {
    absl::StatusOr<std::pair<EventFilter, EventBus::Start>> query =
        ParseEventQuery(exchange->request());
    if (!query.ok()) return exchange->Reply(RestStatusReply(query.status()));
    auto stream = std::make_shared<EventStream>(exchange);
    std::weak_ptr<EventStream> weak = stream;
    absl::StatusOr<std::shared_ptr<EventSubscription>> subscription =
        events->Subscribe(std::move(query->first), query->second, [weak] {
          if (std::shared_ptr<EventStream> stream = weak.lock()) stream->Pump();
        });
    if (!subscription.ok()) return exchange->Reply(RestStatusReply(subscription.status()));
    stream->Run(*std::move(subscription));
  });
}

}  // namespace gswarm::host
