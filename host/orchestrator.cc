#include "host/orchestrator.h"

#include <algorithm>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "common/units.h"
#include "spdlog/spdlog.h"

namespace gswarm::host {
namespace {

google::protobuf::Timestamp Now() { return common::ToTimestamp(absl::Now()); }

std::string NewJobId() { return "job-" + common::GenerateToken().substr(0, 12); }

absl::Status ValidateSource(absl::string_view source) {
  for (absl::string_view scheme : {"hf://", "https://", "http://", "file:///"}) {
    if (absl::StartsWith(source, scheme) && source.size() > scheme.size()) {
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown source \"", source,
                   "\": use hf://org/repo[@revision], https://host/path/file or file:///abs/dir"));
}

}  // namespace

bool IsTerminalJobState(absl::string_view state) {
  return state == "succeeded" || state == "failed" || state == "cancelled";
}

Orchestrator::Orchestrator(Options options, Registry* registry, NodeRegistry* nodes,
                           InstanceTable* instances)
    : options_(options), registry_(registry), nodes_(nodes), instances_(instances) {}

std::string NodeDataUrl(const v1::NodeInfo& node) {
  if (node.data_port() == 0) return "";
  // gRPC names peers "ipv4:10.0.0.5:51234" or "ipv6:[fd00::5]:51234".
  absl::string_view address = node.peer_address();
  if (!absl::ConsumePrefix(&address, "ipv4:") && !absl::ConsumePrefix(&address, "ipv6:")) {
    return "";
  }
  const size_t port = address.rfind(':');
  if (port == absl::string_view::npos) return "";
  return absl::StrCat("http://", address.substr(0, port), ":", node.data_port());
}

std::string Orchestrator::PeerHolding(const std::string& repo, const std::string& commit,
                                      const std::string& except_node) const {
  for (const v1::Model& model : registry_->ListModels()) {
    absl::string_view source = model.source_url();
    if (!absl::ConsumePrefix(&source, "hf://")) continue;
    if (source.substr(0, source.find('@')) != repo) continue;
    for (const v1::Replica& replica : model.replicas()) {
      if (replica.commit() != commit || replica.state() != "ready" ||
          replica.node_id() == except_node) {
        continue;
      }
      std::optional<v1::NodeInfo> node = nodes_->Get(replica.node_id());
      if (!node.has_value() || node->state() != "online") continue;
      if (std::string url = NodeDataUrl(*node); !url.empty()) return url;
    }
  }
  return "";
}

Orchestrator::~Orchestrator() = default;

absl::Status Orchestrator::Recover() {
  absl::MutexLock lock(&mu_);
  for (v1::Job& job : registry_->UnfinishedJobs()) {
    absl::StatusOr<std::string> request = registry_->GetJobRequest(job.id());
    v1::Command command;
    if (!request.ok() || !common::FromJson(*request, &command).ok() || command.id().empty()) {
      job.set_state("failed");
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
  RETURN_IF_ERROR(ValidateModelName(request.model_name()));
  RETURN_IF_ERROR(ValidateSource(request.source_url()));
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
  if (options_.prefer_peers) {
    // Only a named commit can be served by a peer without asking the Hub what a branch means.
    absl::string_view source = request.source_url();
    if (absl::ConsumePrefix(&source, "hf://")) {
      const size_t at = source.find('@');
      const std::string repo(source.substr(0, at));
      const std::string revision = !request.revision().empty() ? request.revision()
                                   : at == absl::string_view::npos
                                       ? ""
                                       : std::string(source.substr(at + 1));
      if (revision.size() == 40) {
        download.set_peer_url(PeerHolding(repo, revision, node_id));
        if (!download.peer_url().empty()) {
          spdlog::info("download {}: commit {} comes from peer {}", request.model_name(), revision,
                       download.peer_url());
        }
      }
    }
  }
  return RunOnNode(node_id, request.model_name(), "download", std::move(command));
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
    std::optional<v1::NodeInfo> node = nodes_->Get(replica.node_id());
    if (!node.has_value() || node->state() != "online") continue;
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
    if (absl::StartsWith(model.source_url(), "hf://") && !source->commit().empty()) {
      absl::string_view repo = model.source_url();
      absl::ConsumePrefix(&repo, "hf://");
      copy.set_source_url(
          absl::StrCat("hf://", repo.substr(0, repo.find('@')), "@", source->commit()));
    }
    job.set_node_id(target);
  } else {
    job.set_node_id(source->node_id());
  }
  return Launch(std::move(job), std::move(command));
}

std::vector<Orchestrator::GpuRoom> Orchestrator::GpuRooms(const v1::NodeInfo& node) const {
  // What GSwarm's own instances on each GPU hold, or will once loaded: a heartbeat may predate
  // an instance that is starting, and two serves must not both count the same room.
  absl::flat_hash_map<std::string, uint64_t> reserved;
  absl::flat_hash_map<std::string, uint64_t> attributed;  // our instances' share of "used"
  absl::flat_hash_map<std::string, std::vector<GpuRoom::Holder>> holders;
  absl::flat_hash_set<std::string> reported;
  absl::flat_hash_map<std::string, uint64_t> model_bytes;
  auto model_size = [&](const std::string& name) {
    auto [it, inserted] = model_bytes.try_emplace(name, 0);
    if (inserted) {
      absl::StatusOr<v1::Model> model = registry_->GetModel(name);
      if (model.ok()) it->second = model->size_bytes();
    }
    return it->second;
  };
  for (const v1::Instance& instance : instances_->List("", node.node_id())) {
    reported.insert(instance.id());
    if (!IsActiveInstanceState(instance.state())) continue;
    const uint64_t bytes =
        std::max<uint64_t>(instance.gpu_memory_bytes(), model_size(instance.model_name()));
    reserved[instance.gpu_device()] += bytes;
    attributed[instance.gpu_device()] += instance.gpu_memory_bytes();
    holders[instance.gpu_device()].push_back({instance.id(), instance.state() == "ready", bytes});
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, active] : active_) {
      if (!active.command.has_serve() || active.job.node_id() != node.node_id() ||
          reported.contains(active.command.serve().instance_id())) {
        continue;
      }
      reserved[active.command.serve().gpu_device()] += active.reserved_bytes;
    }
  }
  std::vector<GpuRoom> rooms;
  for (const v1::GpuInfo& info : node.memory().gpus()) {
    GpuRoom room;
    room.device = absl::StrCat("gpu", info.index());
    room.budget_bytes = info.memory_budget_bytes();
    // What others hold (the heartbeat's figure less our instances' share of it), plus ours.
    const uint64_t others =
        info.memory_used_bytes() - std::min(info.memory_used_bytes(), attributed[room.device]);
    room.used_bytes = std::min(room.budget_bytes, others + reserved[room.device]);
    room.free_bytes = room.budget_bytes - room.used_bytes;
    room.instances = std::move(holders[room.device]);
    rooms.push_back(std::move(room));
  }
  return rooms;
}

absl::StatusOr<Orchestrator::ServePlan> Orchestrator::PlanOnNode(const v1::Model& model,
                                                                 const v1::Replica& replica,
                                                                 const v1::NodeInfo& node,
                                                                 const std::string& gpu) const {
  ServePlan plan;
  plan.node_id = node.node_id();
  plan.tier = replica.tier();
  plan.needed_bytes = model.size_bytes() != 0 ? model.size_bytes() : replica.size_bytes();
  plan.gpus = GpuRooms(node);
  plan.gpu = gpu;
  const GpuRoom* room = nullptr;
  if (gpu.empty()) {
    plan.gpu = "cpu";
    for (const GpuRoom& candidate : plan.gpus) {
      if (room == nullptr || candidate.free_bytes > room->free_bytes) room = &candidate;
    }
    if (room != nullptr) plan.gpu = room->device;
  } else if (gpu != "cpu") {
    absl::string_view index_text = gpu;
    uint32_t index = 0;
    if (!absl::ConsumePrefix(&index_text, "gpu") || !absl::SimpleAtoi(index_text, &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpu_device \"", gpu, "\" is not of the form gpu0, gpu1, ... or cpu"));
    }
    for (const GpuRoom& candidate : plan.gpus) {
      if (candidate.device == absl::StrCat("gpu", index)) room = &candidate;
    }
    if (room == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", node.node_id(), " has no ", gpu, " (it reports ", plan.gpus.size(),
                       " GPUs; use gpu_device \"cpu\" for a CPU engine)"));
    }
    plan.gpu = room->device;
  }
  if (room != nullptr && plan.needed_bytes > room->free_bytes) {
    plan.fits = false;
    plan.shortage = absl::StrFormat(
        "model \"%s\" needs %.1f GiB on node %s %s, which has %.1f GiB free of its %.1f GiB "
        "budget (stop an instance, pick another GPU, or raise client.gpu_memory_fraction)",
        model.name(), common::GiB(plan.needed_bytes), node.node_id(), plan.gpu,
        common::GiB(room->free_bytes), common::GiB(room->budget_bytes));
  }
  return plan;
}

absl::StatusOr<std::vector<Orchestrator::ServePlan>> Orchestrator::PlanServeEverywhere(
    const v1::ServeRequest& request) const {
  ASSIGN_OR_RETURN(v1::Model model, registry_->GetModel(request.model_name()));
  if (!request.source_device().empty() && request.source_device() != "disk" &&
      request.source_device() != "dram") {
    return absl::InvalidArgumentError(
        absl::StrCat("source_device \"", request.source_device(), "\" is not disk or dram"));
  }
  // Ready copies on online nodes, DRAM first (it starts fastest); one plan per node.
  std::vector<ServePlan> plans;
  absl::flat_hash_set<std::string> planned;
  absl::Status refused = absl::OkStatus();
  for (const char* tier : {"dram", "disk"}) {
    if (!request.source_device().empty() && request.source_device() != tier) continue;
    for (const v1::Replica& replica : model.replicas()) {
      if (replica.tier() != tier || replica.state() != "ready") continue;
      if (!request.node().empty() && replica.node_id() != request.node()) continue;
      if (planned.contains(replica.node_id())) continue;
      std::optional<v1::NodeInfo> node = nodes_->Get(replica.node_id());
      if (!node.has_value() || node->state() != "online") continue;
      absl::StatusOr<ServePlan> plan = PlanOnNode(model, replica, *node, request.gpu_device());
      if (!plan.ok()) {
        if (refused.ok()) refused = plan.status();
        continue;
      }
      planned.insert(replica.node_id());
      plans.push_back(*std::move(plan));
    }
  }
  if (!plans.empty()) return plans;
  if (!refused.ok()) return refused;
  return absl::NotFoundError(absl::StrCat(
      "no online node", request.node().empty() ? "" : absl::StrCat(" \"", request.node(), "\""),
      " holds \"", model.name(), "\"",
      request.source_device().empty() ? "" : absl::StrCat(" in ", request.source_device()),
      ": download or copy it there first"));
}

const Orchestrator::ServePlan& Orchestrator::Preferred(const std::vector<ServePlan>& plans) {
  for (const ServePlan& plan : plans) {
    if (plan.fits) return plan;
  }
  return plans.front();
}

absl::StatusOr<Orchestrator::ServePlan> Orchestrator::PlanServe(
    const v1::ServeRequest& request) const {
  ASSIGN_OR_RETURN(std::vector<ServePlan> plans, PlanServeEverywhere(request));
  return Preferred(plans);
}

absl::StatusOr<v1::Job> Orchestrator::Serve(const v1::ServeRequest& request,
                                            const std::string& managed_by) {
  absl::MutexLock serve_lock(&serve_mu_);
  ASSIGN_OR_RETURN(ServePlan plan, PlanServe(request));
  if (!plan.fits) return absl::FailedPreconditionError(plan.shortage);

  v1::Command command;
  v1::ServeCommand& serve = *command.mutable_serve();
  serve.set_model_name(request.model_name());
  serve.set_source_tier(plan.tier);
  serve.set_gpu_device(plan.gpu);
  serve.set_port(request.port());
  serve.set_engine(request.engine());
  serve.set_instance_id(request.instance_id().empty()
                            ? "inst-" + common::GenerateToken().substr(0, 10)
                            : request.instance_id());
  *serve.mutable_extra_args() = request.extra_args();
  serve.set_managed_by(managed_by);
  v1::Job job;
  job.set_kind("serve");
  job.set_model_name(request.model_name());
  job.set_node_id(plan.node_id);
  return Launch(std::move(job), std::move(command), plan.gpu == "cpu" ? 0 : plan.needed_bytes);
}

absl::StatusOr<v1::Job> Orchestrator::StopInstance(const v1::Instance& instance, bool force) {
  v1::Command command;
  command.mutable_stop()->set_instance_id(instance.id());
  command.mutable_stop()->set_force(force);
  return RunOnNode(instance.node_id(), instance.model_name(), "stop", std::move(command));
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
                                             uint64_t reserved_bytes) {
  job.set_id(NewJobId());
  job.set_state("running");
  *job.mutable_created_at() = Now();
  *job.mutable_updated_at() = job.created_at();
  command.set_id(job.id());
  absl::StatusOr<std::string> request_json = common::ToJson(command);
  if (!request_json.ok()) return request_json.status();
  RETURN_IF_ERROR(registry_->PutJob(job, *request_json));
  {
    absl::MutexLock lock(&mu_);
    ActiveJob& active = active_[job.id()];
    active.job = job;
    active.command = command;
    active.last_persisted = absl::Now();
    active.reserved_bytes = reserved_bytes;
  }
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

void Orchestrator::OnAgentConnected(const v1::Hello& hello) {
  instances_->ReplaceNode(hello.node_id(), {hello.instances().begin(), hello.instances().end()});
  absl::Status queued = events_.Submit([this, hello] {
    Reconcile(hello);
    std::vector<v1::Command> resend;
    {
      absl::MutexLock lock(&mu_);
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
  if (!queued.ok())
    spdlog::error("node={}: inventory dropped: {}", hello.node_id(), queued.message());
}

void Orchestrator::OnCommandUpdate(const std::string& node_id, const v1::CommandUpdate& update) {
  absl::Status queued = events_.Submit([this, node_id, update] { ApplyUpdate(node_id, update); });
  if (!queued.ok()) spdlog::error("node={}: update dropped: {}", node_id, queued.message());
}

void Orchestrator::OnInstancesChanged(const std::string& node_id,
                                      const std::vector<v1::Instance>& instances) {
  for (v1::Instance instance : instances) {
    instance.set_node_id(node_id);
    instances_->Update(instance);
  }
}

void Orchestrator::Reconcile(const v1::Hello& hello) {
  std::vector<std::pair<std::string, v1::Replica>> replicas;
  std::vector<v1::Model> found;
  for (const v1::Replica& replica : hello.replicas()) {
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
  for (const std::string& added : diff->added) {
    spdlog::info("node={}: replica {} appeared", hello.node_id(), added);
  }
  for (const std::string& removed : diff->removed) {
    spdlog::info("node={}: replica {} is gone", hello.node_id(), removed);
    // A model whose last copy went away (its files were removed by hand) leaves the catalog;
    // one registered but never downloaded had no copy to lose and stays.
    const std::string model_name = removed.substr(0, removed.find('/'));
    absl::StatusOr<v1::Model> model = registry_->GetModel(model_name);
    if (model.ok() && model->replicas().empty() && registry_->DeleteModel(model_name).ok()) {
      spdlog::info("model={}: no copy left on any node, removed from the catalog", model_name);
    }
  }
}

void Orchestrator::ApplyUpdate(const std::string& node_id, const v1::CommandUpdate& update) {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(update.command_id());
  if (it == active_.end()) {
    spdlog::debug("node={}: update for unknown or finished job {} ignored", node_id,
                  update.command_id());
    return;
  }
  ActiveJob& active = it->second;
  v1::Job& job = active.job;
  if (job.node_id() != node_id) {
    spdlog::warn("job={}: update from node={} ignored (the job runs on node={})", job.id(), node_id,
                 job.node_id());
    return;
  }
  const bool state_changed = job.state() != update.state();
  job.set_state(update.state());
  job.set_message(update.message());
  job.set_bytes_done(update.bytes_done());
  job.set_bytes_total(update.bytes_total());
  job.set_files_done(update.files_done());
  job.set_files_total(update.files_total());
  const absl::Time now = absl::Now();
  *job.mutable_updated_at() = Now();
  if (active.last_rate_at == absl::Time()) {
    active.last_rate_at = now;
    active.last_rate_bytes = update.bytes_done();
  } else if (now - active.last_rate_at >= absl::Milliseconds(500)) {
    const double seconds = absl::ToDoubleSeconds(now - active.last_rate_at);
    const double bytes =
        static_cast<double>(update.bytes_done()) - static_cast<double>(active.last_rate_bytes);
    // Smooth over a few updates so the ETA a person sees does not jump around.
    const double instant = std::max(0.0, bytes / seconds);
    job.set_rate_bytes_per_s(
        job.rate_bytes_per_s() == 0 ? instant : 0.7 * job.rate_bytes_per_s() + 0.3 * instant);
    active.last_rate_at = now;
    active.last_rate_bytes = update.bytes_done();
  }
  const bool terminal = IsTerminalJobState(update.state());
  if (terminal) {
    *job.mutable_finished_at() = job.updated_at();
    if (update.has_replica()) {
      *job.mutable_replica() = update.replica();
      job.mutable_replica()->set_node_id(node_id);
    }
    if (update.has_instance()) {
      *job.mutable_instance() = update.instance();
      job.mutable_instance()->set_node_id(node_id);
      instances_->Update(job.instance());
    }
    if (update.state() == "succeeded") RecordResult(job, active.command, update);
    spdlog::info("job={} {} {} on node={}: {}{}{}", job.id(), job.kind(), job.model_name(), node_id,
                 update.state(), update.message().empty() ? "" : ": ", update.message());
  }
  Changed(active, state_changed || terminal);
  if (terminal) active_.erase(it);
}

void Orchestrator::RecordResult(const v1::Job& job, const v1::Command& command,
                                const v1::CommandUpdate& update) {
  auto check = [&job](const absl::Status& status) {
    if (!status.ok()) spdlog::error("job={}: recording the result: {}", job.id(), status.message());
  };
  if (job.kind() == "discover") {
    v1::Hello inventory;
    inventory.set_node_id(job.node_id());
    *inventory.mutable_replicas() = update.replicas();
    Reconcile(inventory);
    return;
  }
  if (job.kind() == "delete") {
    check(registry_->DeleteReplica(job.model_name(), job.node_id(),
                                   update.has_replica() ? update.replica().tier() : "disk"));
    return;
  }
  // Copies the agent removed on the way: models evicted to make room, the source of a move.
  for (const v1::Replica& removed : update.replicas()) {
    check(registry_->DeleteReplica(removed.model_name(), job.node_id(), removed.tier()));
  }
  if (command.has_copy() && !command.copy().keep_source() && !command.copy().peer_url().empty()) {
    // A move across nodes: the target has its copy, so the source's goes now. Queued, because
    // launching a job needs mu_, which the caller holds.
    for (const v1::NodeInfo& node : nodes_->List()) {
      if (NodeDataUrl(node) != command.copy().peer_url()) continue;
      v1::Command remove;
      remove.mutable_delete_()->set_model_name(job.model_name());
      remove.mutable_delete_()->set_tier(command.copy().source_tier());
      const std::string source_node = node.node_id();
      absl::Status queued = events_.Submit([this, source_node, job, remove] {
        absl::StatusOr<v1::Job> started =
            RunOnNode(source_node, job.model_name(), "delete", remove);
        if (!started.ok()) {
          spdlog::error("job={}: removing the moved model's source on node={}: {}", job.id(),
                        source_node, started.status().message());
        }
      });
      if (!queued.ok()) spdlog::error("job={}: {}", job.id(), queued.message());
      break;
    }
  }
  if (update.has_model()) {
    absl::StatusOr<v1::Model> model = registry_->GetModel(job.model_name());
    if (model.ok()) {
      if (!update.model().commit().empty()) model->set_commit(update.model().commit());
      if (update.model().size_bytes() != 0) model->set_size_bytes(update.model().size_bytes());
      if (update.model().has_metadata()) *model->mutable_metadata() = update.model().metadata();
      if (update.model().files_size() > 0) *model->mutable_files() = update.model().files();
      check(registry_->PutModel(*model));
    } else {
      check(model.status());
    }
  }
  if (update.has_replica()) {
    v1::Replica replica = update.replica();
    replica.set_node_id(job.node_id());
    check(registry_->PutReplica(job.model_name(), replica));
  }
}

void Orchestrator::Changed(ActiveJob& active, bool force_persist) {
  const absl::Time now = absl::Now();
  // Progress reaches the database at most once a second; state changes at once.
  if (force_persist || now - active.last_persisted >= absl::Seconds(1)) {
    if (absl::Status s = registry_->PutJob(active.job); !s.ok()) {
      spdlog::error("job={}: persisting: {}", active.job.id(), s.message());
    }
    active.last_persisted = now;
  }
  auto& sinks = active.sinks;
  for (auto it = sinks.begin(); it != sinks.end();) {
    if (std::shared_ptr<JobSink> sink = it->lock()) {
      sink->OnJob(active.job);
      ++it;
    } else {
      it = sinks.erase(it);
    }
  }
}

absl::StatusOr<v1::Job> Orchestrator::CancelJob(const std::string& id) {
  std::string node_id;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it == active_.end()) {
      ASSIGN_OR_RETURN(v1::Job job, registry_->GetJob(id));
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " has already ended (", job.state(), ")"));
    }
    node_id = it->second.job.node_id();
    std::optional<v1::NodeInfo> node = nodes_->Get(node_id);
    if (!node.has_value() || node->state() != "online") {
      // Nobody to tell: the job ends here; the agent drops the command if it comes back.
      it->second.job.set_state("cancelled");
      it->second.job.set_message("cancelled while its node was offline");
      *it->second.job.mutable_finished_at() = Now();
      Changed(it->second, /*force_persist=*/true);
      v1::Job job = it->second.job;
      active_.erase(it);
      return job;
    }
  }
  v1::HostMessage message;
  message.mutable_cancel()->set_command_id(id);
  nodes_->Send(node_id, std::move(message));
  return GetJob(id);
}

absl::StatusOr<v1::Job> Orchestrator::GetJob(const std::string& id) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) return it->second.job;
  }
  return registry_->GetJob(id);
}

std::vector<v1::Job> Orchestrator::ListJobs(const v1::ListJobsRequest& request) const {
  Registry::JobFilter filter;
  filter.state = request.state();
  filter.model_name = request.model_name();
  filter.limit = request.limit() == 0 ? 100 : request.limit();
  std::vector<v1::Job> jobs = registry_->ListJobs(filter);
  // The database may lag a second behind on progress: show what the host knows now.
  absl::MutexLock lock(&mu_);
  for (v1::Job& job : jobs) {
    auto it = active_.find(job.id());
    if (it != active_.end()) job = it->second.job;
  }
  return jobs;
}

absl::StatusOr<v1::Job> Orchestrator::WaitJob(const std::string& id, absl::Time deadline) const {
  {
    absl::MutexLock lock(&mu_);
    auto ended = [this, &id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return shutting_down_ || !active_.contains(id);
    };
    mu_.AwaitWithDeadline(absl::Condition(&ended), deadline);
    if (shutting_down_ && active_.contains(id)) {
      return absl::UnavailableError(absl::StrCat("host is shutting down; job ", id,
                                                 " goes on when it is back (GET /jobs/", id, ")"));
    }
  }
  return GetJob(id);
}

void Orchestrator::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;  // waiters re-check their condition when mu_ is released
}

absl::Status Orchestrator::Watch(const std::string& id, std::weak_ptr<JobSink> sink) {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(id);
  if (it == active_.end()) {
    // Already over: one final state, then the sink is done.
    ASSIGN_OR_RETURN(v1::Job job, registry_->GetJob(id));
    if (std::shared_ptr<JobSink> alive = sink.lock()) alive->OnJob(job);
    return absl::OkStatus();
  }
  if (std::shared_ptr<JobSink> alive = sink.lock()) alive->OnJob(it->second.job);
  it->second.sinks.push_back(std::move(sink));
  return absl::OkStatus();
}

}  // namespace gswarm::host
