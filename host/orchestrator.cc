#include "host/orchestrator.h"

#include <algorithm>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/model_source.h"
#include "common/mutex.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "common/units.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

google::protobuf::Timestamp Now() { return common::ToTimestamp(absl::Now()); }

std::string NewJobId() { return "job-" + common::GenerateToken().substr(0, 12); }

// The Hub repo of an hf:// source ("" for other sources).
std::string HubRepo(absl::string_view source_url) {
  absl::StatusOr<common::SourceSpec> spec = common::ParseSource(source_url);
  return spec.ok() && spec->kind == common::SourceSpec::kHub ? spec->repo : "";
}

}  // namespace

Orchestrator::Orchestrator(Options options, Registry* registry, NodeRegistry* nodes,
                           InstanceManager* instances, EventBus* events)
    : options_(options),
      registry_(registry),
      nodes_(nodes),
      instances_(instances),
      events_bus_(events) {}

void Orchestrator::PublishProgress(const v1::Job& job) const {
  if (events_bus_ == nullptr) return;
  std::string progress = absl::StrCat(common::FormatBytes(job.bytes_done()));
  if (job.bytes_total() > 0) {
    progress = absl::StrFormat(
        "%.0f%% (%s of %s)",
        100.0 * static_cast<double>(job.bytes_done()) / static_cast<double>(job.bytes_total()),
        common::FormatBytes(job.bytes_done()), common::FormatBytes(job.bytes_total()));
  }
  v1::Event event = MakeEvent("job", "progress",
                              absl::StrCat("job ", job.id(), " ", job.kind(), " ", job.model_name(),
                                           " on ", job.node_id(), ": ", progress));
  event.set_node_id(job.node_id());
  event.set_model_name(job.model_name());
  event.set_job_id(job.id());
  event.set_from_state(job.state());
  event.set_to_state(job.state());
  events_bus_->Publish(std::move(event));
}

void Orchestrator::PublishJob(const v1::Job& job, const std::string& from) const {
  if (events_bus_ == nullptr) return;
  v1::Event event = MakeEvent(
      "job", "state",
      absl::StrCat("job ", job.id(), " ", job.kind(), job.model_name().empty() ? "" : " ",
                   job.model_name(), " on ", job.node_id(), ": ", from.empty() ? "new" : from,
                   " -> ", job.state(), job.message().empty() ? "" : " (", job.message(),
                   job.message().empty() ? "" : ")"));
  event.set_node_id(job.node_id());
  event.set_model_name(job.model_name());
  event.set_job_id(job.id());
  event.set_from_state(from.empty() ? "new" : from);
  event.set_to_state(job.state());
  event.set_reason(job.message());
  events_bus_->Publish(std::move(event));
}

void Orchestrator::PublishReplica(const std::string& action, const std::string& node_id,
                                  const std::string& model, const std::string& tier,
                                  const std::string& why) const {
  if (events_bus_ == nullptr) return;
  v1::Event event = MakeEvent("replica", action,
                              absl::StrCat("model ", model, " ", action, " on ", node_id, " ", tier,
                                           why.empty() ? "" : " (", why, why.empty() ? "" : ")"));
  event.set_node_id(node_id);
  event.set_model_name(model);
  event.set_tier(tier);
  event.set_reason(why);
  events_bus_->Publish(std::move(event));
}

std::string NodeAddress(const v1::NodeInfo& node) {
  // gRPC names peers "ipv4:10.0.0.5:51234" or "ipv6:[fd00::5]:51234".
  absl::string_view address = node.peer_address();
  if (!absl::ConsumePrefix(&address, "ipv4:") && !absl::ConsumePrefix(&address, "ipv6:")) {
    return "";
  }
  const size_t port = address.rfind(':');
  if (port == absl::string_view::npos) return "";
  return std::string(address.substr(0, port));
}

std::string NodeDataUrl(const v1::NodeInfo& node) {
  const std::string address = NodeAddress(node);
  if (node.data_port() == 0 || address.empty()) return "";
  return absl::StrCat("http://", address, ":", node.data_port());
}

std::string NodeEndpoint(const v1::NodeInfo& node, const std::string& endpoint) {
  absl::string_view rest = endpoint;
  if (!absl::ConsumePrefix(&rest, "http://")) return endpoint;
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) return endpoint;
  std::string host(rest.substr(0, colon));
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const bool wildcard = host == "0.0.0.0" || host == "::";
  const std::string address = NodeAddress(node);
  std::string bare = address;
  if (bare.size() > 2 && bare.front() == '[') bare = bare.substr(1, bare.size() - 2);
  // An engine on the host's own machine keeps its address; a loopback one on another machine
  // is not this machine's (the agent warns that its engines are then unreachable).
  if (address.empty() || (!wildcard && !common::IsLoopbackAddress(host)) ||
      common::IsLoopbackAddress(bare)) {
    return endpoint;
  }
  return absl::StrCat("http://", address, ":", rest.substr(colon + 1));
}

// A download stripes a big file over at most this many peers at once.
constexpr size_t kMaxStripePeers = 4;

std::vector<std::string> Orchestrator::PeersHolding(const std::string& repo,
                                                    const std::string& commit,
                                                    const std::string& except_node,
                                                    size_t limit) const {
  std::vector<std::string> urls;
  for (const v1::Model& model : registry_->ListModels()) {
    if (HubRepo(model.source_url()) != repo) continue;
    for (const v1::Replica& replica : model.replicas()) {
      if (replica.commit() != commit || replica.state() != "ready" ||
          replica.node_id() == except_node) {
        continue;
      }
      std::optional<v1::NodeInfo> node = nodes_->GetOnline(replica.node_id());
      if (!node.has_value()) continue;
      std::string url = NodeDataUrl(*node);
      if (url.empty() || std::find(urls.begin(), urls.end(), url) != urls.end()) continue;
      urls.push_back(std::move(url));
      if (urls.size() == limit) return urls;
    }
  }
  return urls;
}

Orchestrator::~Orchestrator() = default;

absl::Status Orchestrator::Recover() {
  gswarm::MutexLock lock(&mu_);
  for (v1::Job& job : registry_->UnfinishedJobs()) {
    absl::StatusOr<std::string> request = registry_->GetJobRequest(job.id());
    v1::Command command;
    if (!request.ok() || !common::FromJson(*request, &command).ok() || command.id().empty()) {
      job.set_state(JobStateName(JobState::kFailed));
      job.set_message("the host restarted and lost this job's command; start it again");
      *job.mutable_finished_at() = Now();
      RETURN_IF_ERROR(registry_->PutJob(job));
      continue;
    }
    spdlog::info("job={} ({} {} on node={}) resumes when its node reconnects", job.id(), job.kind(),
                 job.model_name(), job.node_id());
    ActiveJob& active = active_[job.id()];
    active.job = std::move(job);
    active.command = std::move(command);
    active.last_persisted = absl::Now();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Orchestrator::PickNode(const std::string& requested) const {
  if (!requested.empty()) {
    std::optional<v1::NodeInfo> node = nodes_->Get(requested);
    if (!node.has_value()) {
      return absl::NotFoundError(
          absl::StrCat("node \"", requested, "\" is unknown (see `gswarm nodes`)"));
    }
    if (node->state() != "online") {
      return absl::FailedPreconditionError(
          absl::StrCat("node \"", requested, "\" is offline (", node->state_reason(), ")"));
    }
    return requested;
  }
  // The online node with the most free disk.
  std::string best;
  uint64_t best_free = 0;
  for (const v1::NodeInfo& node : nodes_->List()) {
    if (node.state() != "online") continue;
    if (best.empty() || node.memory().disk_free_bytes() > best_free) {
      best = node.node_id();
      best_free = node.memory().disk_free_bytes();
    }
  }
  if (best.empty()) {
    return absl::UnavailableError(
        "no node is online: start an agent with `gswarm client --host HOST:8101`, or run "
        "`gswarm start` on a single machine");
  }
  return best;
}

absl::StatusOr<v1::Job> Orchestrator::Download(const v1::DownloadRequest& request) {
  ASSIGN_OR_RETURN(auto prepared, PrepareDownload(request));
  return RunOnNode(prepared.first, request.model_name(), "download", std::move(prepared.second));
}

absl::StatusOr<std::pair<std::string, v1::Command>> Orchestrator::PrepareDownload(
    const v1::DownloadRequest& request) {
  RETURN_IF_ERROR(ValidateModelName(request.model_name()));
  ASSIGN_OR_RETURN(const common::SourceSpec source,
                   common::ParseSource(request.source_url(), request.revision()));
  const std::string tier = request.target_device().empty() ? "disk" : request.target_device();
  if (tier != "disk") {
    return absl::InvalidArgumentError(absl::StrCat(
        "target_device \"", tier, "\": downloads land on \"disk\"; copy to DRAM afterwards"));
  }
  ASSIGN_OR_RETURN(std::string node_id, PickNode(request.node()));

  absl::StatusOr<v1::Model> existing = registry_->GetModel(request.model_name());
  if (existing.ok() && !existing->source_url().empty() &&
      existing->source_url() != request.source_url()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model \"", request.model_name(), "\" is registered from ", existing->source_url(),
        ", not ", request.source_url(), ": remove it first (gswarm rm ", request.model_name(),
        ") or choose another name"));
  }
  if (!existing.ok()) {
    if (!absl::IsNotFound(existing.status())) return existing.status();
    v1::Model model;
    model.set_name(request.model_name());
    model.set_type(request.type().empty() ? "llm" : request.type());
    model.set_source_url(request.source_url());
    model.set_revision(request.revision());
    *model.mutable_created_at() = Now();
    RETURN_IF_ERROR(registry_->PutModel(model));
  }

  v1::Command command;
  v1::DownloadCommand& download = *command.mutable_download();
  download.set_model_name(request.model_name());
  download.set_source_url(request.source_url());
  download.set_revision(request.revision());
  download.set_target_tier(tier);
  // Where the registration asked for the disk copy (seed 004's cache_location).
  if (existing.ok()) {
    download.set_location(existing->cache_location());
    download.set_location_path(existing->cache_path());
  }
  if (options_.prefer_peers) {
    // Only a named commit can be served by a peer without asking the Hub what a branch means.
    if (source.kind == common::SourceSpec::kHub && common::IsCommitHash(source.revision)) {
      std::vector<std::string> peers =
          PeersHolding(source.repo, source.revision, node_id, kMaxStripePeers);
      if (!peers.empty()) {
        download.set_peer_url(peers.front());
        for (size_t i = 1; i < peers.size(); ++i) download.add_more_peer_urls(peers[i]);
        spdlog::info("download {}: commit {} comes from {} peer{} ({})", request.model_name(),
                     source.revision, peers.size(), peers.size() == 1 ? "" : "s",
                     absl::StrJoin(peers, ", "));
      }
    }
  }
  return std::make_pair(std::move(node_id), std::move(command));
}

absl::StatusOr<v1::Job> Orchestrator::Copy(const v1::CopyRequest& request) {
  auto valid_tier = [](const std::string& tier) { return tier == "disk" || tier == "dram"; };
  const std::string from = request.source_device().empty() ? "disk" : request.source_device();
  const std::string to = request.target_device().empty() ? "dram" : request.target_device();
  if (!valid_tier(from) || !valid_tier(to)) {
    return absl::InvalidArgumentError(
        absl::StrCat("copy from \"", from, "\" to \"", to, "\": tiers are \"disk\" and \"dram\""));
  }
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  const bool cross_node = !request.target_node().empty() &&
                          request.target_node() != request.source_node() &&
                          !request.source_node().empty();
  std::string source_node = cross_node ? request.source_node() : request.node();
  if (source_node.empty()) source_node = request.source_node();
  if (source_node.empty()) source_node = request.target_node();
  // The copy on the source tier: on the named node, else on any online node that has one.
  const v1::Replica* source = nullptr;
  for (const v1::Replica& replica : model.replicas()) {
    if (replica.tier() != from || replica.state() != "ready") continue;
    if (!source_node.empty() && replica.node_id() != source_node) continue;
    std::optional<v1::NodeInfo> node = nodes_->GetOnline(replica.node_id());
    if (!node.has_value()) continue;
    source = &replica;
    break;
  }
  if (source == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "model \"", model.name(), "\" has no ready copy on ", from,
        source_node.empty() ? " of any online node" : absl::StrCat(" of node ", source_node),
        " (see `gswarm show ", model.name(), "`)"));
  }
  if (!cross_node && from == to) {
    return absl::InvalidArgumentError(absl::StrCat("source and target are both ", from, " on node ",
                                                   source->node_id(),
                                                   ": name another tier, or a target_node"));
  }

  v1::Job job;
  job.set_kind(request.keep_source() || !request.has_keep_source() ? "copy" : "move");
  job.set_model_name(model.name());
  v1::Command command;
  v1::CopyCommand& copy = *command.mutable_copy();
  copy.set_model_name(model.name());
  copy.set_source_tier(from);
  copy.set_target_tier(to);
  copy.set_keep_source(!request.has_keep_source() || request.keep_source());
  copy.set_evict(request.evict());
  copy.set_pin(request.pin());
  *copy.mutable_files() = model.files();
  if (cross_node) {
    ASSIGN_OR_RETURN(std::string target, PickNode(request.target_node()));
    std::optional<v1::NodeInfo> peer = nodes_->Get(source->node_id());
    const std::string url = peer.has_value() ? NodeDataUrl(*peer) : "";
    if (url.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "node ", source->node_id(), " serves no data port for peers (client.data_port)"));
    }
    copy.set_peer_url(url);
    copy.set_source_node(source->node_id());
    if (const std::string repo = HubRepo(model.source_url());
        !repo.empty() && !source->commit().empty()) {
      copy.set_source_url(absl::StrCat("hf://", repo, "@", source->commit()));
    }
    job.set_node_id(target);
  } else {
    job.set_node_id(source->node_id());
  }
  return Launch(std::move(job), std::move(command));
}

absl::StatusOr<v1::Job> Orchestrator::StopInstance(const v1::Instance& instance, bool force) {
  // Out of rotation first, so that no new request is sent to an instance being stopped (the
  // router's pool has drained its own already; a planned or starting one has nothing to drain).
  const bool drained = instances_->State(instance.id()) == InstanceState::kReady &&
                       instances_->Drain(instance.id(), "stopping").ok();
  v1::Command command;
  command.mutable_stop()->set_instance_id(instance.id());
  command.mutable_stop()->set_force(force);
  absl::StatusOr<v1::Job> job =
      RunOnNode(instance.node_id(), instance.model_name(), "stop", std::move(command));
  if (!job.ok() && drained) {
    instances_
        ->Undrain(instance.id(),
                  absl::StrCat("the stop could not be sent: ", job.status().message()))
        .IgnoreError();
  }
  return job;
}

absl::StatusOr<std::vector<v1::Job>> Orchestrator::Discover(const std::string& node) {
  std::vector<std::string> targets;
  if (!node.empty()) {
    ASSIGN_OR_RETURN(std::string picked, PickNode(node));
    targets.push_back(picked);
  } else {
    for (const v1::NodeInfo& info : nodes_->List()) {
      if (info.state() == "online") targets.push_back(info.node_id());
    }
  }
  std::vector<v1::Job> jobs;
  for (const std::string& target : targets) {
    v1::Command command;
    command.mutable_discover();
    ASSIGN_OR_RETURN(v1::Job job, RunOnNode(target, "", "discover", std::move(command)));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

absl::StatusOr<v1::Job> Orchestrator::RunOnNode(const std::string& node, const std::string& model,
                                                const std::string& kind, v1::Command command) {
  ASSIGN_OR_RETURN(std::string node_id, PickNode(node));
  v1::Job job;
  job.set_kind(kind);
  job.set_model_name(model);
  job.set_node_id(node_id);
  return Launch(std::move(job), std::move(command));
}

absl::StatusOr<v1::Job> Orchestrator::Launch(v1::Job job, v1::Command command,
                                             std::optional<v1::ServeRequest> then_serve) {
  job.set_id(NewJobId());
  job.set_state(JobStateName(JobState::kRunning));
  *job.mutable_created_at() = Now();
  *job.mutable_updated_at() = job.created_at();
  command.set_id(job.id());
  absl::StatusOr<std::string> request_json = common::ToJson(command);
  if (!request_json.ok()) return request_json.status();
  RETURN_IF_ERROR(registry_->PutJob(job, *request_json));
  {
    gswarm::MutexLock lock(&mu_);
    ActiveJob& active = active_[job.id()];
    active.job = job;
    active.command = command;
    active.last_persisted = absl::Now();
    active.then_serve = std::move(then_serve);
  }
  PublishJob(job, "");
  spdlog::info("job={} {} {} on node={}", job.id(), job.kind(),
               job.model_name().empty() ? "(all models)" : job.model_name(), job.node_id());
  Dispatch(job.node_id(), command);
  return job;
}

void Orchestrator::Dispatch(const std::string& node_id, const v1::Command& command) {
  v1::HostMessage message;
  *message.mutable_command() = command;
  if (!nodes_->Send(node_id, std::move(message))) {
    spdlog::info("job={}: node={} is offline; the command is sent when it reconnects", command.id(),
                 node_id);
  }
}

// Until a connecting node's inventory is applied its engines are unknown here: planning leaves it
// out (Snapshot), so that a request arriving meanwhile does not start a second engine beside one
// it runs. Counted, because a node may reconnect while its previous inventory is still queued.
void Orchestrator::OnAgentConnecting(const std::string& node_id) {
  gswarm::MutexLock lock(&mu_);
  ++inventory_pending_[node_id];
}

void Orchestrator::OnAgentRefused(const std::string& node_id) { InventoryApplied(node_id); }

void Orchestrator::InventoryApplied(const std::string& node_id) {
  gswarm::MutexLock lock(&mu_);
  auto it = inventory_pending_.find(node_id);
  if (it != inventory_pending_.end() && --it->second <= 0) inventory_pending_.erase(it);
}

void Orchestrator::OnAgentConnected(const v1::Hello& hello) {
  absl::Status queued = events_.Submit([this, hello] {
    instances_->ApplyInventory(hello.node_id(),
                               {hello.instances().begin(), hello.instances().end()});
    InventoryApplied(hello.node_id());
    Reconcile(hello, /*asked=*/false);
    std::vector<v1::Command> resend;
    {
      gswarm::MutexLock lock(&mu_);
      for (const auto& [id, active] : active_) {
        if (active.job.node_id() == hello.node_id()) resend.push_back(active.command);
      }
    }
    for (const v1::Command& command : resend) {
      spdlog::info("job={}: sending again to node={} after it reconnected", command.id(),
                   hello.node_id());
      Dispatch(hello.node_id(), command);
    }
  });
  if (!queued.ok()) {
    spdlog::error("node={}: inventory dropped: {}", hello.node_id(), queued.message());
    InventoryApplied(hello.node_id());
  }
}

void Orchestrator::OnCommandUpdate(const std::string& node_id, const v1::CommandUpdate& update) {
  absl::Status queued = events_.Submit([this, node_id, update] { ApplyUpdate(node_id, update); });
  if (!queued.ok()) spdlog::error("node={}: update dropped: {}", node_id, queued.message());
}

void Orchestrator::OnInstancesChanged(const std::string& node_id,
                                      const std::vector<v1::Instance>& instances) {
  // On the same queue as command updates, so the agent's order holds.
  absl::Status queued = events_.Submit([this, node_id, instances] {
    for (const v1::Instance& instance : instances) instances_->ApplyReport(node_id, instance);
  });
  if (!queued.ok())
    spdlog::error("node={}: instance reports dropped: {}", node_id, queued.message());
}

void Orchestrator::Reconcile(const v1::Hello& hello, bool asked) {
  std::vector<std::pair<std::string, v1::Replica>> replicas;
  std::vector<v1::Model> found;
  for (const v1::Replica& replica : hello.replicas()) {
    if (replica.in_place() && !asked && !options_.auto_discover_models &&
        !registry_->HasModel(replica.model_name())) {
      continue;  // found in the node's Hugging Face cache, and not to be registered by itself
    }
    replicas.emplace_back(replica.model_name(), replica);
    v1::Model model;
    model.set_name(replica.model_name());
    model.set_type("llm");
    model.set_source_url(replica.source_url());
    model.set_commit(replica.commit());
    model.set_size_bytes(replica.size_bytes());
    *model.mutable_metadata() = replica.metadata();
    *model.mutable_created_at() = Now();
    found.push_back(std::move(model));
  }
  absl::StatusOr<Registry::NodeDiff> diff =
      registry_->ReplaceNodeReplicas(hello.node_id(), replicas, found);
  if (!diff.ok()) {
    spdlog::error("node={}: reconciling its inventory failed: {}", hello.node_id(),
                  diff.status().message());
    return;
  }
  auto split = [](const std::string& key) {
    const size_t slash = key.find('/');
    return std::make_pair(key.substr(0, slash),
                          slash == std::string::npos ? "" : key.substr(slash + 1));
  };
  for (const std::string& added : diff->added) {
    spdlog::info("node={}: replica {} appeared", hello.node_id(), added);
    const auto [model, tier] = split(added);
    PublishReplica("appeared", hello.node_id(), model, tier, "in the node's inventory");
  }
  for (const std::string& removed : diff->removed) {
    spdlog::info("node={}: replica {} is gone", hello.node_id(), removed);
    const auto [model_name, tier] = split(removed);
    PublishReplica("removed", hello.node_id(), model_name, tier, "gone from the node's inventory");
    // A model whose last copy went away (its files were removed by hand) leaves the catalog;
    // one registered but never downloaded had no copy to lose and stays.
    absl::StatusOr<v1::Model> model = registry_->GetModel(model_name);
    if (model.ok() && model->replicas().empty() && registry_->DeleteModel(model_name).ok()) {
      spdlog::info("model={}: no copy left on any node, removed from the catalog", model_name);
    }
  }
}

}  // namespace gswarm::host
