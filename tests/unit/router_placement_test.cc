// The router's model pool against the real orchestrator, registry, node registry and instance
// table, with a fake agent that runs serve, stop and copy commands at once and reports GPU memory
// the way NVML would: eviction when a GPU is short (least recently used first, only what is
// needed, only idle instances the router loaded), leases, preloaded models kept, demotion to
// DRAM, idle unload after keep_alive (default and per request), and max_loaded_models.

#include "host/router_placement.h"

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
    if (placement_ != nullptr) placement_->Stop();
    router_.reset();
    placement_.reset();
    if (agent_ != nullptr) agent_->Halt();
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

TEST_F(PlacementTest, ShortGpuEvictsLeastRecentlyUsedIdleFirstAndOnlyWhatIsNeeded) {
  for (const char* name : {"a", "b", "c"}) AddModel(name, 12);
  AddModel("d", 20);
  Start({.keep_alive_s = -1});  // one GPU with a 40 GiB budget
  for (const char* name : {"a", "b", "c"}) ASSERT_TRUE(Load(name).ok()) << name;
  EXPECT_EQ(agent_->used(0), 36 * kGiB);
  USE("b");
  USE("a");
  USE("c");
  // "d" needs 20 GiB, 4 are free: "b" (least recently used) frees 12, not enough; "a" the rest.
  absl::StatusOr<Router::Backend> d = Load("d");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"b", "a"}));
  EXPECT_TRUE(Ready("c"));
  EXPECT_TRUE(Ready("d"));
  EXPECT_FALSE(Ready("a"));
  EXPECT_EQ(agent_->used(0), 32 * kGiB);
}

TEST_F(PlacementTest, AnInstanceWithARequestInFlightIsNeverEvicted) {
  AddModel("a", 12);
  AddModel("b", 12);
  AddModel("big", 30);
  Start({.keep_alive_s = -1, .grace = absl::ZeroDuration()});
  ASSERT_TRUE(Load("a").ok());
  ASSERT_TRUE(Load("b").ok());
  {
    absl::StatusOr<std::shared_ptr<const Router::Backend>> lease =
        router_->Reserve("a", absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(lease.ok());
    // 16 GiB free and only "b" (12) idle: not enough, so nothing is stopped at all.
    absl::StatusOr<Router::Backend> big = Load("big");
    ASSERT_TRUE(absl::IsResourceExhausted(big.status())) << big.status();
    EXPECT_NE(big.status().message().find("needs 30.0 GiB"), absl::string_view::npos);
    EXPECT_NE(big.status().message().find("16.0 GiB free"), absl::string_view::npos);
    EXPECT_NE(big.status().message().find("requests in flight"), absl::string_view::npos);
    EXPECT_TRUE(agent_->stopped().empty());
    EXPECT_TRUE(Ready("a"));
    EXPECT_TRUE(Ready("b"));
  }
  // The lease is gone: both leave, "a" (used just now) last.
  ASSERT_TRUE(Load("big").ok());
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"b", "a"}));
}

TEST_F(PlacementTest, OperatorInstancesAndPreloadedModelsStay) {
  AddModel("mine", 12);
  AddModel("kept", 12);
  AddModel("a", 12);
  AddModel("big", 20);
  Start({.keep_alive_s = -1, .preload = {"kept"}, .grace = absl::ZeroDuration()});
  // The preload comes up by itself.
  ASSERT_TRUE(testing::WaitFor([&] { return Ready("kept"); }, absl::Seconds(10)));
  agent_->AddForeignInstance("op-1", "mine", 0);
  ASSERT_TRUE(Load("a").ok());
  // 4 GiB free, and only "a" (12) may leave: not enough for 20.
  absl::StatusOr<Router::Backend> big = Load("big");
  EXPECT_TRUE(absl::IsResourceExhausted(big.status())) << big.status();
  EXPECT_TRUE(agent_->stopped().empty());
  // Neither idleness nor max_loaded_models touches a preloaded model, and one that goes away is
  // loaded again.
  const std::string first = placement_->ReadyBackends("kept").front().instance_id;
  ASSERT_TRUE(orchestrator_->StopInstance(*instances_.Get(first), false).ok());
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        std::vector<Router::Backend> ready = placement_->ReadyBackends("kept");
        return !ready.empty() && ready.front().instance_id != first;
      },
      absl::Seconds(10)));
}

TEST_F(PlacementTest, EvictionDemotesADiskModelToDramWhenTheBudgetAllows) {
  AddModel("a", 12);
  AddModel("b", 12);
  AddModel("c", 12, "dram");
  Start({.keep_alive_s = -1, .grace = absl::ZeroDuration()}, 1, 20 * kGiB,
        30 * kGiB);  // room for one instance
  ASSERT_TRUE(Load("a").ok());
  ASSERT_TRUE(Load("b").ok());  // "a" leaves the GPU and goes to DRAM
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"a"}));
  ASSERT_TRUE(
      testing::WaitFor([&] { return agent_->dram_copies().size() == 1; }, absl::Seconds(5)));
  EXPECT_EQ(agent_->dram_copies(), (std::vector<std::string>{"a"}));
  // "c" is served from DRAM; "b" leaves too and is copied; then "c" leaves and is already there.
  ASSERT_TRUE(Load("c").ok());
  ASSERT_TRUE(Load("a").ok());
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_TRUE(
      testing::WaitFor([&] { return agent_->dram_copies().size() == 2; }, absl::Seconds(5)));
  EXPECT_EQ(agent_->dram_copies(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(PlacementTest, NoDemotionWhenTheDramTierIsShort) {
  AddModel("a", 12);
  AddModel("b", 12);
  Start({.keep_alive_s = -1, .grace = absl::ZeroDuration()}, 1, 20 * kGiB, 8 * kGiB);
  ASSERT_TRUE(Load("a").ok());
  ASSERT_TRUE(Load("b").ok());
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(agent_->dram_copies().empty());
}

TEST_F(PlacementTest, IdleInstancesUnloadAfterTheirKeepAlive) {
  AddModel("a", 1);
  AddModel("b", 1);
  AddModel("c", 1);
  Start({.keep_alive_s = 1});
  absl::StatusOr<Router::Backend> b = Load("b");
  ASSERT_TRUE(b.ok());
  placement_->KeepAlive(b->instance_id, absl::InfiniteDuration());  // "keep_alive": -1
  absl::StatusOr<Router::Backend> c = Load("c");
  ASSERT_TRUE(c.ok());
  placement_->KeepAlive(c->instance_id, absl::ZeroDuration());  // "keep_alive": 0
  ASSERT_TRUE(testing::WaitFor([&] { return agent_->stopped().size() == 1; }, absl::Seconds(10)));
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"c"}));  // at once, not after 1 s
  ASSERT_TRUE(Load("a").ok());
  ASSERT_TRUE(testing::WaitFor([&] { return agent_->stopped().size() == 2; }, absl::Seconds(10)));
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"c", "a"}));
  EXPECT_FALSE(Ready("a"));
  EXPECT_FALSE(Ready("c"));
  // "b" stays, however long it idles.
  EXPECT_FALSE(testing::WaitFor([&] { return !Ready("b"); }, absl::Seconds(1)));
}

TEST_F(PlacementTest, MaxLoadedModelsMakesRoomFromTheLeastRecentlyUsed) {
  for (const char* name : {"a", "b", "c"}) AddModel(name, 1);
  Start({.keep_alive_s = -1, .max_loaded_models = 2, .grace = absl::ZeroDuration()});
  ASSERT_TRUE(Load("a").ok());
  ASSERT_TRUE(Load("b").ok());
  USE("a");
  ASSERT_TRUE(Load("c").ok());
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(Ready("a"));
}

TEST_F(PlacementTest, ANewInstanceIsNotEvictedBeforeItsFirstRequest) {
  AddModel("a", 12);
  AddModel("big", 30);
  Start({.keep_alive_s = -1, .grace = absl::Seconds(60)});
  ASSERT_TRUE(Load("a").ok());
  // The requests that asked for "a" have not reached it yet: it stays.
  absl::StatusOr<Router::Backend> big = Load("big");
  ASSERT_TRUE(absl::IsResourceExhausted(big.status())) << big.status();
  EXPECT_NE(big.status().message().find("just loaded"), absl::string_view::npos) << big.status();
  EXPECT_TRUE(agent_->stopped().empty());
  USE("a");  // served: now it may go when idle
  ASSERT_TRUE(Load("big").ok());
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"a"}));
}

TEST_F(PlacementTest, AModelLargerThanAnyGpuIsRefusedWithoutEvicting) {
  AddModel("a", 12);
  AddModel("huge", 50);
  Start({.keep_alive_s = -1, .grace = absl::ZeroDuration()});
  ASSERT_TRUE(Load("a").ok());
  absl::StatusOr<Router::Backend> huge = Load("huge");
  ASSERT_TRUE(absl::IsFailedPrecondition(huge.status())) << huge.status();
  EXPECT_NE(huge.status().message().find("larger than any GPU's whole budget"),
            absl::string_view::npos)
      << huge.status();
  EXPECT_TRUE(agent_->stopped().empty());
}

TEST_F(PlacementTest, InstancesLoadedBeforeAHostRestartRejoinThePool) {
  AddModel("a", 1);
  Start({.keep_alive_s = 0.5});
  // An instance the router of an earlier host process loaded, as the agent reports it.
  agent_->AddForeignInstance("inst-old", "a", 0, "router");
  ASSERT_TRUE(testing::WaitFor([&] { return agent_->stopped().size() == 1; }, absl::Seconds(10)));
  EXPECT_EQ(agent_->stopped(), (std::vector<std::string>{"a"}));
}

TEST_F(PlacementTest, ConcurrentLoadsNeverOverbookAGpu) {
  AddModel("x", 25);
  AddModel("y", 25);
  Start({.keep_alive_s = -1});
  std::atomic<int> loaded = 0;
  std::thread other([&] { loaded += Load("x").ok(); });
  loaded += Load("y").ok();
  other.join();
  EXPECT_GE(loaded.load(), 1);
  EXPECT_LE(agent_->max_used(0), 40 * kGiB);
}

#undef USE

TEST_F(PlacementTest, AnInstanceThatIsNotReadyIsNeverEvictedAndTheLoadIsRefused) {
  AddModel("a", 1);
  AddModel("b", 1);
  Start({.keep_alive_s = -1, .max_loaded_models = 1, .grace = absl::ZeroDuration()});
  absl::StatusOr<Router::Backend> a = Load("a");
  ASSERT_TRUE(a.ok()) << a.status();
  // Its engine crashed and is restarting: it cannot be drained, and must not be picked forever.
  agent_->SetState(a->instance_id, "starting");
  ASSERT_TRUE(
      testing::WaitFor([&] { return instances_.State(a->instance_id) == InstanceState::kStarting; },
                       absl::Seconds(5)));
  absl::StatusOr<Router::Backend> b = Load("b");
  EXPECT_TRUE(absl::IsResourceExhausted(b.status())) << b.status();
  EXPECT_TRUE(agent_->stopped().empty());
}

TEST_F(PlacementTest, AFailedStopPutsTheInstanceBackIntoRotation) {
  AddModel("a", 1);
  Start({.keep_alive_s = 0.2});
  absl::StatusOr<Router::Backend> a = Load("a");
  ASSERT_TRUE(a.ok()) << a.status();
  agent_->FailStops();
  // The keep-alive retires it (it drains, the stop goes out), the stop fails, and it is ready
  // and routable again instead of staying out of rotation for ever.
  ASSERT_TRUE(testing::WaitFor([&] { return agent_->failed_stops() >= 1; }, absl::Seconds(10)));
  ASSERT_TRUE(
      testing::WaitFor([&] { return instances_.State(a->instance_id) == InstanceState::kReady; },
                       absl::Seconds(10)));
  EXPECT_TRUE(Ready("a"));
  EXPECT_TRUE(placement_->Routable(a->instance_id));
}

}  // namespace
}  // namespace gswarm::host
