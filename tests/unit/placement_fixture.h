#pragma once

// The fixture of the router pool's tests (router_placement_test.cc): a fake agent that answers
// the orchestrator's commands as a real one would, and a placement over the real orchestrator,
// registry, node registry and instance manager. Test-only: one test file includes it.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "host/router_placement.h"
#include "tests/support/process.h"

namespace gswarm::host {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

// An agent on one node: GPUs with a budget each, instances that take their model's size on the
// GPU they were placed on, and a DRAM tier. Commands run in order on a thread of its own, and
// every outcome reaches the host as an agent's would: a state change with fresh memory figures,
// then the command's update.
class FakeAgent final : public NodeRegistry::Session {
 public:
  FakeAgent(std::string node_id, Registry* registry, NodeRegistry* nodes,
            Orchestrator* orchestrator)
      : node_id_(std::move(node_id)),
        registry_(registry),
        nodes_(nodes),
        orchestrator_(orchestrator) {}

  ~FakeAgent() override { Halt(); }

  void Halt() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      halted_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Connects with `gpus` of `budget` bytes each and a DRAM tier of `dram_budget` bytes.
  void Connect(std::shared_ptr<FakeAgent> self, int gpus, uint64_t budget, uint64_t dram_budget) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_.assign(gpus, 0);
      max_used_.assign(gpus, 0);
      budget_ = budget;
      dram_budget_ = dram_budget;
    }
    v1::Hello hello;
    hello.set_node_id(node_id_);
    hello.set_heartbeat_interval_ms(60000);
    *hello.mutable_memory() = Memory();
    absl::StatusOr<std::string> session = nodes_->Connect(hello, "ipv4:127.0.0.1:1", self);
    ASSERT_TRUE(session.ok()) << session.status();
    session_ = *session;
    thread_ = std::thread([this] { Run(); });
  }

  void Send(v1::HostMessage message) override {
    if (!message.has_command()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(message.command());
    }
    cv_.notify_all();
  }
  void Close(const absl::Status&) override {}

  uint64_t used(int gpu) {
    std::lock_guard<std::mutex> lock(mu_);
    return used_[gpu];
  }
  uint64_t max_used(int gpu) {
    std::lock_guard<std::mutex> lock(mu_);
    return max_used_[gpu];
  }
  std::vector<std::string> stopped() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopped_;
  }
  std::vector<std::string> dram_copies() {
    std::lock_guard<std::mutex> lock(mu_);
    return dram_copies_;
  }
  // An instance started outside this placement: by the operator (gswarm serve), or with
  // `managed_by` by the router of an earlier host process.
  void AddForeignInstance(const std::string& id, const std::string& model, int gpu,
                          const std::string& managed_by = "") {
    v1::Instance instance = NewInstance(id, model, absl::StrCat("gpu", gpu), "disk");
    instance.set_managed_by(managed_by);
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_[gpu] += instance.gpu_memory_bytes();
      instances_[id] = instance;
    }
    Report(instance);
  }

  // The engine of `id` reports `state` (a crash restart reports "starting").
  void SetState(const std::string& id, const std::string& state) {
    v1::Instance instance;
    {
      std::lock_guard<std::mutex> lock(mu_);
      instance = instances_[id];
      instance.set_state(state);
      instances_[id] = instance;
    }
    Report(instance);
  }
  // Stops fail from now on (the engine's stop command errs): the instance keeps running.
  void FailStops() {
    std::lock_guard<std::mutex> lock(mu_);
    fail_stops_ = true;
  }
  int failed_stops() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_stops_;
  }

 private:
  v1::MemoryUsage Memory() {
    v1::MemoryUsage memory;
    memory.set_dram_tier_budget_bytes(dram_budget_);
    memory.set_dram_tier_used_bytes(dram_used_);
    for (size_t i = 0; i < used_.size(); ++i) {
      v1::GpuInfo* gpu = memory.add_gpus();
      gpu->set_index(static_cast<uint32_t>(i));
      gpu->set_memory_total_bytes(budget_ + budget_ / 9);
      gpu->set_memory_budget_bytes(budget_);
      gpu->set_memory_used_bytes(used_[i]);
    }
    return memory;
  }

  v1::Instance NewInstance(const std::string& id, const std::string& model, const std::string& gpu,
                           const std::string& tier) {
    v1::Instance instance;
    instance.set_id(id);
    instance.set_model_name(model);
    instance.set_node_id(node_id_);
    instance.set_engine("fake");
    instance.set_gpu_device(gpu);
    instance.set_endpoint(absl::StrCat("http://127.0.0.1:1/", id));
    instance.set_state("ready");
    instance.set_source_tier(tier);
    instance.set_gpu_memory_bytes(registry_->GetModel(model)->size_bytes());
    return instance;
  }

  void Report(const v1::Instance& instance) {
    v1::Heartbeat heartbeat;
    *heartbeat.add_instances() = instance;
    {
      std::lock_guard<std::mutex> lock(mu_);
      *heartbeat.mutable_memory() = Memory();
    }
    nodes_->Heartbeat(node_id_, session_, heartbeat);
    orchestrator_->OnInstancesChanged(node_id_, {instance});
  }

  void Finish(const std::string& command_id, const v1::Instance* instance) {
    v1::CommandUpdate update;
    update.set_command_id(command_id);
    update.set_state("succeeded");
    if (instance != nullptr) *update.mutable_instance() = *instance;
    orchestrator_->OnCommandUpdate(node_id_, update);
  }

  static int GpuIndex(absl::string_view device) {
    int index = 0;
    return absl::ConsumePrefix(&device, "gpu") && absl::SimpleAtoi(device, &index) ? index : -1;
  }

  void Run() {
    for (;;) {
      v1::Command command;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return halted_ || !queue_.empty(); });
        if (halted_) return;
        command = queue_.front();
        queue_.pop_front();
      }
      if (command.has_serve()) {
        const v1::ServeCommand& serve = command.serve();
        v1::Instance instance = NewInstance(serve.instance_id(), serve.model_name(),
                                            serve.gpu_device(), serve.source_tier());
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (const int gpu = GpuIndex(serve.gpu_device()); gpu >= 0) {
            used_[gpu] += instance.gpu_memory_bytes();
            max_used_[gpu] = std::max(max_used_[gpu], used_[gpu]);
          }
          instances_[instance.id()] = instance;
        }
        Report(instance);
        Finish(command.id(), &instance);
      } else if (command.has_stop() && FailingStops()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++failed_stops_;
        }
        v1::CommandUpdate update;
        update.set_command_id(command.id());
        update.set_state("failed");
        update.set_message("the engine's stop command failed");
        orchestrator_->OnCommandUpdate(node_id_, update);
      } else if (command.has_stop()) {
        v1::Instance instance;
        {
          std::lock_guard<std::mutex> lock(mu_);
          instance = instances_[command.stop().instance_id()];
          instance.set_state("stopped");
          if (const int gpu = GpuIndex(instance.gpu_device()); gpu >= 0) {
            used_[gpu] -= instance.gpu_memory_bytes();
          }
          instances_[instance.id()] = instance;
          stopped_.push_back(instance.model_name());
        }
        Report(instance);
        Finish(command.id(), &instance);
      } else if (command.has_copy()) {
        const v1::CopyCommand& copy = command.copy();
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (copy.target_tier() == "dram") dram_copies_.push_back(copy.model_name());
        }
        v1::CommandUpdate update;
        update.set_command_id(command.id());
        update.set_state("succeeded");
        v1::Replica* replica = update.mutable_replica();
        replica->set_model_name(copy.model_name());
        replica->set_tier(copy.target_tier());
        replica->set_state("ready");
        replica->set_size_bytes(registry_->GetModel(copy.model_name())->size_bytes());
        orchestrator_->OnCommandUpdate(node_id_, update);
      }
    }
  }

  const std::string node_id_;
  Registry* const registry_;
  NodeRegistry* const nodes_;
  Orchestrator* const orchestrator_;
  std::string session_;
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool halted_ = false;
  std::deque<v1::Command> queue_;
  std::vector<uint64_t> used_;
  std::vector<uint64_t> max_used_;
  uint64_t budget_ = 0;
  uint64_t dram_budget_ = 0;
  uint64_t dram_used_ = 0;
  std::map<std::string, v1::Instance> instances_;
  std::vector<std::string> stopped_;
  std::vector<std::string> dram_copies_;
  bool fail_stops_ = false;
  int failed_stops_ = 0;

  bool FailingStops() {
    std::lock_guard<std::mutex> lock(mu_);
    return fail_stops_;
  }
};

// Upstream traffic is not this test's subject: the router has no server here, and leases are
// taken and released by hand through Hold().
class PlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = *Registry::Open(":memory:");
    orchestrator_ = std::make_unique<Orchestrator>(Orchestrator::Options{}, registry_.get(),
                                                   &nodes_, &instances_, nullptr);
  }

  void TearDown() override {
    // As the host does: no agent report reaches the pool (an instance listener) once it is gone.
    if (agent_ != nullptr) agent_->Halt();
    orchestrator_->StopEvents();
    if (placement_ != nullptr) placement_->Stop();
    router_.reset();
    placement_.reset();
  }

  // A model of `gib` GiB on the node's disk.
  void AddModel(const std::string& name, uint64_t gib, const std::string& tier = "disk") {
    v1::Model model;
    model.set_name(name);
    model.set_size_bytes(gib * kGiB);
    ASSERT_TRUE(registry_->PutModel(model).ok());
    v1::Replica replica;
    replica.set_node_id("node-1");
    replica.set_tier(tier);
    replica.set_state("ready");
    replica.set_size_bytes(gib * kGiB);
    ASSERT_TRUE(registry_->PutReplica(name, replica).ok());
  }

  void Start(RouterPlacement::Options options, int gpus = 1, uint64_t budget = 40 * kGiB,
             uint64_t dram_budget = 100 * kGiB) {
    agent_ = std::make_shared<FakeAgent>("node-1", registry_.get(), &nodes_, orchestrator_.get());
    agent_->Connect(agent_, gpus, budget, dram_budget);
    options.tick = absl::Milliseconds(20);
    options.release_wait = absl::Seconds(2);
    placement_ = std::make_unique<RouterPlacement>(std::move(options), registry_.get(), &nodes_,
                                                   &instances_, orchestrator_.get(), nullptr);
    router_ = std::make_unique<Router>(Router::Options{}, placement_.get());
    placement_->Start(router_.get());
  }

  absl::StatusOr<Router::Backend> Load(const std::string& model) {
    return placement_->Load(model, absl::Now() + absl::Seconds(20));
  }

  // Whether `model` has a ready instance now.
  bool Ready(const std::string& model) { return !placement_->ReadyBackends(model).empty(); }

  NodeRegistry nodes_{NodeRegistry::Options{}};
  InstanceManager instances_{nullptr};
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<Orchestrator> orchestrator_;
  std::shared_ptr<FakeAgent> agent_;
  std::unique_ptr<RouterPlacement> placement_;
  std::unique_ptr<Router> router_;
};

// Takes and drops a lease on `model`'s instance, as a request would: it is now the most
// recently used.
#define USE(model)                                                        \
  do {                                                                    \
    auto lease = router_->Reserve(model, absl::Now() + absl::Seconds(5)); \
    ASSERT_TRUE(lease.ok()) << lease.status();                            \
  } while (false)

}  // namespace
}  // namespace gswarm::host
