#include "client/agent.h"

#include <unistd.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "client/memory_probe.h"
#include "common/auth.h"
#include "common/grpc_util.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/units.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

using Stream = grpc::ClientReaderWriter<v1::AgentMessage, v1::HostMessage>;

}  // namespace

absl::StatusOr<AgentOptions> Agent::OptionsFromConfig(const common::Config& full) {
  const common::ClientConfig& config = full.client;
  AgentOptions options;
  ASSIGN_OR_RETURN(options.credentials, common::ClientCredentials(full));
  options.host_target = common::HostGrpcTarget(full);
  options.hostname = common::Hostname();
  options.node_id = config.node_id.empty() ? options.hostname : config.node_id;
  options.auth_token = config.auth_token.empty() ? common::LocalTokenFallback() : config.auth_token;
  options.data_port = static_cast<uint32_t>(config.data_port);
  options.heartbeat_interval = absl::Seconds(config.heartbeat_interval_s);
  options.host_silence_limit = std::max(absl::Seconds(10), options.heartbeat_interval * 5);
  // The node's own keys win; under `gswarm start` the one file's host.storage_devices (the
  // cluster default) comes next; then the built-in defaults, until the host says otherwise.
  auto given = [&](const char* key) { return full.explicit_keys.contains(key); };
  auto pick = [&](const char* own_key, const char* cluster_key, bool* own) {
    *own = given(own_key) || given(cluster_key);
    return given(own_key) || !given(cluster_key);  // true: the client key's value
  };
  v1::TierInfo disk, dram;
  disk.set_tier("disk");
  disk.set_path(common::ExpandUser(
      pick("client.model_cache_dir", "host.storage_devices.disk.path", &options.own_disk_path)
          ? config.model_cache_dir
          : full.host.disk.path));
  disk.set_enabled(true);
  dram.set_tier("dram");
  dram.set_path(common::ExpandUser(
      pick("client.dram_cache_dir", "host.storage_devices.dram.path", &options.own_dram_path)
          ? config.dram_cache_dir
          : full.host.dram.path));
  dram.set_enabled(true);
  const double dram_gib = pick("client.dram_cache_size", "host.storage_devices.dram.max_size_gb",
                               &options.own_dram_budget)
                              ? config.dram_cache_size
                              : full.host.dram.max_size_gb;
  dram.set_capacity_bytes(static_cast<uint64_t>(dram_gib * common::kGiB));
  options.tiers = {disk, dram};
  options.disk.model_cache_dir = disk.path();
  for (const auto& [name, spec] : config.disk_locations) {
    if (name == "primary") {
      options.disk.primary_high_watermark = spec.high_watermark;
    } else {
      options.disk.locations.push_back({name, spec.path, spec.high_watermark});
    }
  }
  options.dram.root = dram.path();
  options.dram.budget_bytes = dram.capacity_bytes();
  options.cleanup_on_shutdown =
      pick("client.cleanup_on_shutdown", "host.cleanup_on_shutdown", &options.own_cleanup)
          ? config.cleanup_on_shutdown
          : full.host.cleanup_on_shutdown;
  bool own_hf_cache = true;
  options.disk.hf_hub_dir =
      HfHubDir(pick("client.huggingface_cache_dir", "host.huggingface_cache_dir", &own_hf_cache)
                   ? config.huggingface_cache_dir
                   : full.host.huggingface_cache_dir);
  options.hub = HubOptions::FromEnvironment();
  options.engines = common::EffectiveEngines(config);
  options.default_engine = config.default_engine;
  options.download_connections = config.download_connections;
  options.cpu_memory_budget_bytes =
      static_cast<uint64_t>(config.cpu_memory_budget * static_cast<double>(common::kGiB));
  options.unified_memory = config.unified_memory;
  options.gpu_memory_utilization = config.default_gpu_memory_utilization;
  options.max_concurrent_requests = config.max_concurrent_requests;
  options.engine_host = config.engine_host;
  options.instance_state_dir = common::StateDir() + "/instances";
  options.instance_log_dir = common::StateDir() + "/logs";
  return options;
}

Agent::Agent(AgentOptions options, std::unique_ptr<MemoryProbe> probe)
    : options_(std::move(options)),
      probe_(std::move(probe)),
      disk_(options_.disk),
      dram_(options_.dram) {
  InstanceSupervisor::Options supervision;
  supervision.state_dir = options_.instance_state_dir;
  supervision.log_dir = options_.instance_log_dir;
  // Every state change goes to the host at once, not at the next heartbeat. An instance that
  // ended has given its GPU memory back: fresh figures ride along, so the host can place the
  // next instance in that room without waiting for a heartbeat.
  supervision.on_change = [this](const v1::Instance& instance) {
    v1::AgentMessage message;
    *message.mutable_heartbeat()->add_instances() = instance;
    if (instance.state() == "stopped" || instance.state() == "failed") {
      *message.mutable_heartbeat()->mutable_memory() = SampleMemory();
    }
    SendToHost(message);
  };
  supervisor_ = std::make_unique<InstanceSupervisor>(std::move(supervision));
  CommandRunner::Options runner;
  runner.hub = options_.hub;
  runner.cluster_token = options_.auth_token;
  runner.engines = options_.engines;
  runner.default_engine = options_.default_engine;
  runner.gpu_memory_utilization = options_.gpu_memory_utilization;
  runner.max_concurrent_requests = options_.max_concurrent_requests;
  runner.engine_host = options_.engine_host;
  runner.disk_space = &disk_space_;
  runner.download_connections = options_.download_connections;
  runner.gpu_bytes = [this](const v1::Instance& instance) -> std::optional<uint64_t> {
    if (!probe_->HasGpus()) return std::nullopt;
    const std::map<uint32_t, uint64_t> by_group =
        GpuMemoryByGroup(probe_->GpuProcesses(), ProcessGroupOf);
    auto found = by_group.find(static_cast<uint32_t>(instance.pid()));
    return found == by_group.end() ? 0 : found->second;
  };
  runner_ =
      std::make_unique<CommandRunner>(runner, &disk_, &dram_, supervisor_.get(),
                                      [this](v1::AgentMessage message) { SendToHost(message); });
  // gRPC's own reconnect backoff (up to 120 s by default) would hold back our redials; keep it
  // within the agent's backoff so a restarted host is found as soon as the agent retries.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.backoff.initial)));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.backoff.initial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(
                  std::min(options_.backoff.max, options_.unavailable_max_delay))));
  channel_ = grpc::CreateCustomChannel(
      options_.host_target,
      options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials(), args);
  stub_ = v1::AgentLink::NewStub(channel_);
}

Agent::~Agent() { Stop(); }

void Agent::Start() {
  disk_.RemoveLeftovers();
  if (absl::Status stale = dram_.RemoveStaleStaging(); !stale.ok()) {
    spdlog::warn("DRAM tier: {}", stale.message());
  }
  if (options_.data_port > 0) {
    DataServer::Options data;
    data.bind = options_.auth_token.empty() ? "127.0.0.1" : "0.0.0.0";
    data.port = static_cast<int>(options_.data_port);
    data.auth_token = options_.auth_token;
    data.roots = {options_.dram.root};
    for (const DiskPlace& place : disk_.Places()) data.roots.push_back(place.root);
    data.log_dir = options_.instance_log_dir;
    absl::StatusOr<std::unique_ptr<DataServer>> server = DataServer::Start(std::move(data));
    if (server.ok()) {
      data_server_ = *std::move(server);
      spdlog::info("serving this node's models to peers on port {}{}", data_server_->port(),
                   options_.auth_token.empty() ? " (loopback only: no cluster token)" : "");
    } else {
      spdlog::warn("not serving models to peers: {} (set client.data_port)",
                   server.status().message());
    }
  }
  // Engines a previous agent left running (it did not clean up) are taken over, not duplicated.
  for (const v1::Instance& adopted : supervisor_->Adopt()) {
    spdlog::info("instance={} model={}: adopted ({}, pid {}, {})", adopted.id(),
                 adopted.model_name(), adopted.state(), adopted.pid(), adopted.endpoint());
  }
  spdlog::info("agent node={} connecting to host {}", options_.node_id, options_.host_target);
  thread_ = std::thread([this] { Run(); });
}

void Agent::Stop() {
  {
    gswarm::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // Commands in flight are cancelled; downloads keep their partial files for next time.
  runner_.reset();
  if (data_server_) data_server_->Stop();
  if (cleanup_on_shutdown_.load()) {
    supervisor_->StopAll();
    if (absl::Status cleared = dram_.Clear(); cleared.ok()) {
      spdlog::info("DRAM tier emptied (cleanup_on_shutdown)");
    } else {
      spdlog::warn("emptying the DRAM tier: {}", cleared.message());
    }
  }
}

bool Agent::SendToHost(const v1::AgentMessage& message) {
  gswarm::MutexLock lock(&write_mu_);
  return stream_ != nullptr && stream_->Write(message);
}

v1::Hello Agent::MakeHello() {
  v1::Hello hello;
  hello.set_node_id(options_.node_id);
  hello.set_hostname(options_.hostname);
  hello.set_version(GSWARM_VERSION);
  hello.set_cpu_cores(static_cast<uint32_t>(sysconf(_SC_NPROCESSORS_ONLN)));
  hello.set_heartbeat_interval_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.heartbeat_interval)));
  for (const v1::TierInfo& tier : options_.tiers) *hello.add_tiers() = tier;
  for (v1::Replica& replica : disk_.Scan(/*include_hf_cache=*/true)) {
    replica.set_node_id(options_.node_id);
    *hello.add_replicas() = std::move(replica);
  }
  for (v1::Replica& replica : dram_.Scan()) {
    replica.set_node_id(options_.node_id);
    *hello.add_replicas() = std::move(replica);
  }
  hello.set_data_port(data_server_ ? static_cast<uint32_t>(data_server_->port()) : 0);
  for (const v1::Instance& instance : supervisor_->List()) *hello.add_instances() = instance;
  *hello.mutable_memory() = SampleMemory();
  hello.set_dram_total_bytes(hello.memory().dram_total_bytes());
  *hello.mutable_gpus() = hello.memory().gpus();
  for (const auto& [name, spec] : options_.engines) {
    (*hello.mutable_engine_memory_factors())[name] = spec.memory_factor;
  }
  if (auto it = options_.engines.find(options_.default_engine); it != options_.engines.end()) {
    (*hello.mutable_engine_memory_factors())[""] = it->second.memory_factor;
  }
  return hello;
}

v1::MemoryUsage Agent::SampleMemory() {
  v1::MemoryUsage usage = probe_->Sample();
  usage.set_dram_tier_budget_bytes(dram_.budget_bytes());  // it may follow the cluster default
  usage.set_cpu_memory_budget_bytes(CpuMemoryBudget(
      options_.cpu_memory_budget_bytes, usage.dram_total_bytes(), usage.dram_tier_budget_bytes()));
  usage.set_unified_memory(options_.unified_memory);
  for (const DiskPlace& place : disk_.Places()) {
    *usage.add_disk_locations() = disk_space_.Measure(place);
  }
  return usage;
}

void Agent::ApplyClusterDefaults(const v1::Welcome& welcome) {
  if (welcome.has_cleanup_on_shutdown() && !options_.own_cleanup &&
      welcome.cleanup_on_shutdown() != cleanup_on_shutdown_.load()) {
    cleanup_on_shutdown_.store(welcome.cleanup_on_shutdown());
    spdlog::info("cleanup_on_shutdown {}: the cluster default (host.cleanup_on_shutdown)",
                 welcome.cleanup_on_shutdown());
  }
  for (const v1::TierInfo& tier : welcome.default_tiers()) {
    if (tier.tier() == "dram") {
      const uint64_t budget = tier.capacity_bytes();
      if (budget != 0 && budget != dram_.budget_bytes()) {
        if (options_.own_dram_budget) {
          spdlog::info(
              "DRAM tier budget {} from this node's config (client.dram_cache_size); the "
              "cluster default is {} (host.storage_devices.dram.max_size_gb)",
              common::FormatBytes(dram_.budget_bytes()), common::FormatBytes(budget));
        } else {
          spdlog::info("DRAM tier budget {}: the cluster default (host.storage_devices.dram)",
                       common::FormatBytes(budget));
          dram_.set_budget_bytes(budget);
        }
      }
    }
    const bool disk = tier.tier() == "disk";
    if (!disk && tier.tier() != "dram") continue;
    const std::string& mine = disk ? options_.disk.model_cache_dir : dram_.root();
    const std::string theirs = common::ExpandUser(tier.path());
    if (tier.path().empty() || theirs == mine) continue;
    const bool own = disk ? options_.own_disk_path : options_.own_dram_path;
    const char* key = disk ? "client.model_cache_dir" : "client.dram_cache_dir";
    // A tier's place is fixed while the agent runs: its models, copies and data port are there.
    // The node's own key overriding the default is as designed; a built-in default that differs
    // from the cluster's is worth a warning.
    spdlog::log(
        own ? spdlog::level::info : spdlog::level::warn,
        "{} tier at {} ({}); the cluster default is {} (host.storage_devices.{}.path){}",
        tier.tier(), mine, own ? absl::StrCat("from ", key) : "the built-in default", theirs,
        tier.tier(),
        own ? "" : absl::StrCat(": set ", key, " to follow it (the tier moves on restart)"));
  }
}

void Agent::Run() {
  common::Backoff backoff(options_.backoff);
  while (true) {
    absl::Status ended = RunSession();
    {
      gswarm::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    if (connected_.exchange(false)) backoff.Reset();
    if (absl::IsUnauthenticated(ended)) {
      spdlog::error(
          "host {} rejected this agent's token: {} (set client.auth_token or "
          "GSWARM_TOKEN to the host's token)",
          options_.host_target, ended.message());
    } else if (absl::IsAborted(ended)) {
      spdlog::error("{}", ended.message());
    } else {
      spdlog::warn("link to host {} down: {}", options_.host_target, ended.message());
    }
    absl::Duration delay = backoff.Next();
    // A host that is down costs a refused connection per try: retry it often, so that a host
    // restart is noticed within about a second of it answering.
    if (absl::IsUnavailable(ended) || absl::IsDeadlineExceeded(ended)) {
      delay = std::min(delay, options_.unavailable_max_delay);
    }
    spdlog::info("reconnecting in {:.1f} s", absl::ToDoubleSeconds(delay));
    gswarm::MutexLock lock(&mu_);
    // Wakes early on Stop().
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), delay);
    if (stopping_) break;
  }
  connected_ = false;
}

absl::Status Agent::RunSession() {
  grpc::ClientContext context;
  if (!options_.auth_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options_.auth_token);
  }
  {
    gswarm::MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("stopping");
    context_ = &context;
    session_over_ = false;
    last_from_host_ = absl::Now();
  }
  std::unique_ptr<Stream> stream = stub_->Connect(&context);
  {
    gswarm::MutexLock lock(&write_mu_);
    stream_ = stream.get();
  }
  v1::AgentMessage hello;
  *hello.mutable_hello() = MakeHello();
  // A failed write means the stream is already broken; Finish() below says why.
  if (SendToHost(hello)) {
    std::thread heartbeats([&] { HeartbeatLoop(&context); });
    v1::HostMessage message;
    while (stream->Read(&message)) {
      {
        gswarm::MutexLock lock(&mu_);
        last_from_host_ = absl::Now();
      }
      switch (message.msg_case()) {
        case v1::HostMessage::kWelcome:
          connected_ = true;
          spdlog::info("connected to host {} as node={} (session {}, host version {})",
                       options_.host_target, options_.node_id, message.welcome().session_id(),
                       message.welcome().host_version());
          ApplyClusterDefaults(message.welcome());
          break;
        case v1::HostMessage::kCommand:
          runner_->Handle(message.command());
          break;
        case v1::HostMessage::kCancel:
          runner_->Cancel(message.cancel().command_id());
          break;
        default:
          break;
      }
    }
    {
      gswarm::MutexLock lock(&mu_);
      session_over_ = true;
    }
    heartbeats.join();
  }
  {
    gswarm::MutexLock lock(&write_mu_);
    stream_ = nullptr;
  }
  {
    gswarm::MutexLock lock(&mu_);
    context_ = nullptr;
  }
  grpc::Status status = stream->Finish();
  if (status.ok()) return absl::UnavailableError("host closed the stream");
  return common::FromGrpcStatus(status);
}

void Agent::HeartbeatLoop(grpc::ClientContext* context) {
  uint64_t seq = 0;
  absl::Time next = absl::Now() + options_.heartbeat_interval;
  while (true) {
    bool stopping = false;
    {
      gswarm::MutexLock lock(&mu_);
      auto wake = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || session_over_; };
      mu_.AwaitWithDeadline(absl::Condition(&wake), next);
      if (session_over_) return;
      stopping = stopping_;
      if (!stopping && absl::Now() - last_from_host_ > options_.host_silence_limit) {
        spdlog::warn("no word from host {} for {:.0f} s: redialling", options_.host_target,
                     absl::ToDoubleSeconds(absl::Now() - last_from_host_));
        context->TryCancel();
        return;
      }
    }
    if (stopping) {
      // Clean goodbye: the host sees the half-close and ends the session at once. If it does not
      // answer promptly, cancel.
      {
        gswarm::MutexLock write_lock(&write_mu_);
        if (stream_ != nullptr) stream_->WritesDone();
      }
      gswarm::MutexLock lock(&mu_);
      if (!mu_.AwaitWithTimeout(absl::Condition(&session_over_), absl::Seconds(2))) {
        context->TryCancel();
      }
      return;
    }
    v1::AgentMessage message;
    message.mutable_heartbeat()->set_seq(++seq);
    *message.mutable_heartbeat()->mutable_memory() = SampleMemory();
    // Memory per instance: what its process group holds on the GPU (from NVML's process list)
    // and, on the CPU or a unified-memory node, in RAM (its RSS). Changed figures ride along
    // with the heartbeat; an instance whose both figures changed is sent once, with both.
    const bool gpus = message.heartbeat().memory().gpus_size() > 0;
    const std::map<uint32_t, uint64_t> by_group =
        gpus ? GpuMemoryByGroup(probe_->GpuProcesses(), ProcessGroupOf)
             : std::map<uint32_t, uint64_t>{};
    std::vector<v1::Instance> live = supervisor_->List();
    std::erase_if(live, [](const v1::Instance& instance) {
      return instance.state() != "ready" && instance.state() != "starting" &&
             instance.state() != "sleeping";
    });
    std::set<uint32_t> in_ram;  // the groups whose RSS counts: on the CPU, or unified memory
    for (const v1::Instance& instance : live) {
      if (instance.gpu_device() == "cpu" || options_.unified_memory) {
        in_ram.insert(static_cast<uint32_t>(instance.pid()));
      }
    }
    const std::map<uint32_t, uint64_t> rss = RssByProcessGroup(in_ram);
    for (const v1::Instance& instance : live) {
      const auto group = static_cast<uint32_t>(instance.pid());
      std::optional<v1::Instance> changed;
      if (gpus) {
        auto found = by_group.find(group);
        changed =
            supervisor_->SetGpuMemory(instance.id(), found == by_group.end() ? 0 : found->second);
      }
      if (in_ram.contains(group)) {
        auto found = rss.find(group);
        if (std::optional<v1::Instance> ram =
                supervisor_->SetRamMemory(instance.id(), found == rss.end() ? 0 : found->second)) {
          changed = std::move(ram);
        }
      }
      if (changed.has_value()) *message.mutable_heartbeat()->add_instances() = *changed;
    }
    if (!SendToHost(message)) return;  // the reader sees the end too
    next += options_.heartbeat_interval;
    if (next < absl::Now()) next = absl::Now() + options_.heartbeat_interval;
  }
}

}  // namespace gswarm::client
