#include "host/agent_link_service.h"

#include <deque>
#include <memory>
#include <optional>

#include "common/grpc_util.h"
#include "common/mutex.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

// One agent's stream. Lifetime: it keeps itself alive (self_) until gRPC calls OnDone; the
// registry may hold another reference to Close or Send from other threads meanwhile.
//
// Writes: one in flight at a time; later messages wait in outbox_. gRPC may run reactions on
// the thread that starts an operation, so no Start*/Finish call is made while mu_ is held.
class AgentStream final : public grpc::ServerBidiReactor<v1::AgentMessage, v1::HostMessage>,
                          public NodeRegistry::Session,
                          public std::enable_shared_from_this<AgentStream> {
 public:
  static AgentStream* Start(grpc::CallbackServerContext* context,
                            const AgentLinkService::Options& options, NodeRegistry* registry) {
    auto stream = std::make_shared<AgentStream>(context, options, registry);
    stream->self_ = stream;
    stream->Begin();
    return stream.get();
  }

  AgentStream(grpc::CallbackServerContext* context, const AgentLinkService::Options& options,
              NodeRegistry* registry)
      : context_(context), options_(options), registry_(registry), peer_(context->peer()) {}

  void Close(const absl::Status& reason) override { FinishOnce(common::ToGrpcStatus(reason)); }

  void Send(v1::HostMessage message) override {
    const v1::HostMessage* to_write = nullptr;
    {
      gswarm::MutexLock lock(&mu_);
      if (finish_requested_) return;
      outbox_.push_back(std::move(message));
      if (writing_) return;
      writing_ = true;
      to_write = &outbox_.front();
    }
    StartWrite(to_write);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The agent half-closed (clean stop) or the stream broke.
      EndSession(context_->IsCancelled() ? "stream broken (agent gone or network lost)"
                                         : "agent disconnected");
      FinishOnce(grpc::Status::OK);
      return;
    }
    if (!Handle(in_)) return;
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    const v1::HostMessage* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      gswarm::MutexLock lock(&mu_);
      outbox_.pop_front();
      if (!ok) outbox_.clear();  // the stream is gone; OnReadDone(false) follows
      if (pending_finish_.has_value()) {
        finish = std::move(pending_finish_);
        pending_finish_.reset();
        writing_ = false;
      } else if (!outbox_.empty()) {
        next = &outbox_.front();
      } else {
        writing_ = false;
      }
    }
    if (finish.has_value()) {
      Finish(*finish);
    } else if (next != nullptr) {
      StartWrite(next);
    }
  }

  void OnDone() override {
    EndSession("stream closed");
    // Drop the self-reference last: this may delete the object.
    std::shared_ptr<AgentStream> keep = std::move(self_);
  }

 private:
  void Begin() {
    if (absl::Status auth = common::CheckGrpcAuthorization(options_.auth_token, *context_);
        !auth.ok()) {
      spdlog::warn("refused an agent from {}: {}", peer_, auth.message());
      FinishOnce(common::ToGrpcStatus(auth));
      return;
    }
    StartRead(&in_);
  }

  // Returns false when the stream was finished and no further read should start.
  bool Handle(const v1::AgentMessage& message) {
    if (session_id_.empty()) {
      if (!message.has_hello()) {
        FinishOnce(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "the first message on an agent stream must be Hello"));
        return false;
      }
      const std::string& node_id = message.hello().node_id();
      if (options_.listener != nullptr) options_.listener->OnAgentConnecting(node_id);
      absl::StatusOr<std::string> session =
          registry_->Connect(message.hello(), peer_, shared_from_this());
      if (!session.ok()) {
        if (options_.listener != nullptr) options_.listener->OnAgentRefused(node_id);
        spdlog::warn("refused an agent from {}: {}", peer_, session.status().message());
        FinishOnce(common::ToGrpcStatus(session.status()));
        return false;
      }
      node_id_ = node_id;
      session_id_ = *session;
      v1::HostMessage welcome;
      welcome.mutable_welcome()->set_session_id(session_id_);
      welcome.mutable_welcome()->set_host_version(options_.host_version);
      if (options_.cleanup_on_shutdown.has_value()) {
        welcome.mutable_welcome()->set_cleanup_on_shutdown(*options_.cleanup_on_shutdown);
      }
      for (const v1::TierInfo& tier : options_.default_tiers) {
        *welcome.mutable_welcome()->add_default_tiers() = tier;
      }
      Send(std::move(welcome));
      if (options_.listener != nullptr) options_.listener->OnAgentConnected(message.hello());
      return true;
    }
    switch (message.msg_case()) {
      case v1::AgentMessage::kHeartbeat: {
        if (!registry_->Heartbeat(node_id_, session_id_, message.heartbeat())) return true;
        if (message.heartbeat().instances_size() > 0 && options_.listener != nullptr) {
          options_.listener->OnInstancesChanged(node_id_, {message.heartbeat().instances().begin(),
                                                           message.heartbeat().instances().end()});
        }
        v1::HostMessage ack;
        ack.mutable_heartbeat_ack()->set_seq(message.heartbeat().seq());
        Send(std::move(ack));
        return true;
      }
      case v1::AgentMessage::kCommandUpdate:
        if (options_.listener != nullptr) {
          options_.listener->OnCommandUpdate(node_id_, message.command_update());
        }
        return true;
      default:
        spdlog::warn("node={}: unexpected message {} ignored", node_id_,
                     static_cast<int>(message.msg_case()));
        return true;
    }
  }

  void EndSession(absl::string_view reason) {
    if (!session_id_.empty()) registry_->Disconnect(node_id_, session_id_, reason);
  }

  void FinishOnce(const grpc::Status& status) {
    {
      gswarm::MutexLock lock(&mu_);
      if (finish_requested_) return;
      finish_requested_ = true;
      if (writing_) {
        // Finish after the write in flight; messages still queued are dropped.
        pending_finish_ = status;
        while (outbox_.size() > 1) outbox_.pop_back();
        return;
      }
    }
    Finish(status);
  }

  grpc::CallbackServerContext* const context_;
  const AgentLinkService::Options& options_;
  NodeRegistry* const registry_;
  const std::string peer_;

  // Touched only by the read path (one read in flight at a time).
  v1::AgentMessage in_;
  std::string node_id_;
  std::string session_id_;

  gswarm::Mutex mu_;
  std::deque<v1::HostMessage> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);

  std::shared_ptr<AgentStream> self_;
};

}  // namespace

AgentLinkService::AgentLinkService(Options options, NodeRegistry* registry)
    : options_(std::move(options)), registry_(registry) {}

grpc::ServerBidiReactor<v1::AgentMessage, v1::HostMessage>* AgentLinkService::Connect(
    grpc::CallbackServerContext* context) {
  return AgentStream::Start(context, options_, registry_);
}

}  // namespace gswarm::host
