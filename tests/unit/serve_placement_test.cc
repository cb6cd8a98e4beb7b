// Placement of inference instances on GPUs: the host refuses an instance that does not fit a
// GPU's budget (total x gpu_memory_fraction, less what is used), saying needed vs free, and
// picks the GPU with the most room when none is named. GPU figures come from the agents'
// heartbeats, so a fake Hello stands in for NVML.

#include "gtest/gtest.h"
#include "host/orchestrator.h"

namespace gswarm::host {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

class RecordingSession final : public NodeRegistry::Session {
 public:
  void Close(const absl::Status&) override {}
  void Send(v1::HostMessage message) override { sent.push_back(std::move(message)); }
  std::vector<v1::HostMessage> sent;
};

v1::GpuInfo Gpu(uint32_t index, uint64_t budget, uint64_t used) {
  v1::GpuInfo gpu;
  gpu.set_index(index);
  gpu.set_memory_total_bytes(budget + budget / 9);
  gpu.set_memory_budget_bytes(budget);
  gpu.set_memory_used_bytes(used);
  return gpu;
}

class ServePlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = *Registry::Open(":memory:");
    orchestrator_ = std::make_unique<Orchestrator>(Orchestrator::Options{}, registry_.get(),
                                                   &nodes_, &instances_, nullptr);
    v1::Model model;
    model.set_name("big");
    model.set_size_bytes(20 * kGiB);
    ASSERT_TRUE(registry_->PutModel(model).ok());
  }

  // A node holding "big" on disk, with these GPUs.
  void AddNode(const std::string& id, std::vector<v1::GpuInfo> gpus) {
    v1::Hello hello;
    hello.set_node_id(id);
    hello.set_heartbeat_interval_ms(1000);
    for (v1::GpuInfo& gpu : gpus) *hello.mutable_memory()->add_gpus() = gpu;
    ASSERT_TRUE(nodes_.Connect(hello, "ipv4:127.0.0.1:1", session_).ok());
    v1::Replica replica;
    replica.set_node_id(id);
    replica.set_tier("disk");
    replica.set_state("ready");
    replica.set_size_bytes(20 * kGiB);
    ASSERT_TRUE(registry_->PutReplica("big", replica).ok());
  }

  v1::ServeRequest Request(const std::string& gpu) {
    v1::ServeRequest request;
    request.set_model_name("big");
    request.set_gpu_device(gpu);
    return request;
  }

  std::shared_ptr<RecordingSession> session_ = std::make_shared<RecordingSession>();
  NodeRegistry nodes_{NodeRegistry::Options{}};
  InstanceManager instances_{nullptr};
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<Orchestrator> orchestrator_;
};

TEST_F(ServePlacementTest, RefusesAGpuWithoutRoomSayingNeededVsFree) {
  AddNode("gpu-node", {Gpu(0, 72 * kGiB, 60 * kGiB)});
  absl::StatusOr<v1::Job> job = orchestrator_->Serve(Request("gpu0"));
  ASSERT_TRUE(absl::IsFailedPrecondition(job.status())) << job.status();
  EXPECT_NE(job.status().message().find("needs 20.0 GiB"), absl::string_view::npos) << job.status();
  EXPECT_NE(job.status().message().find("12.0 GiB free"), absl::string_view::npos) << job.status();
  EXPECT_TRUE(session_->sent.empty()) << "nothing may reach the agent";
}

TEST_F(ServePlacementTest, StartsWhereItFits) {
  AddNode("gpu-node", {Gpu(0, 72 * kGiB, 10 * kGiB)});
  absl::StatusOr<v1::Job> job = orchestrator_->Serve(Request("gpu0"));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(session_->sent.size(), 1u);
  const v1::ServeCommand& serve = session_->sent[0].command().serve();
  EXPECT_EQ(serve.gpu_device(), "gpu0");
  EXPECT_EQ(serve.source_tier(), "disk");
  EXPECT_FALSE(serve.instance_id().empty());
}

TEST_F(ServePlacementTest, PicksTheGpuWithMostRoom) {
  AddNode("gpu-node", {Gpu(0, 72 * kGiB, 50 * kGiB), Gpu(1, 72 * kGiB, 5 * kGiB)});
  ASSERT_TRUE(orchestrator_->Serve(Request("")).ok());
  EXPECT_EQ(session_->sent.back().command().serve().gpu_device(), "gpu1");
}

TEST_F(ServePlacementTest, NoGpusMeansCpuAndANamedGpuIsRefused) {
  AddNode("cpu-node", {});
  ASSERT_TRUE(orchestrator_->Serve(Request("")).ok());
  EXPECT_EQ(session_->sent.back().command().serve().gpu_device(), "cpu");
  absl::StatusOr<v1::Job> job = orchestrator_->Serve(Request("gpu0"));
  ASSERT_TRUE(absl::IsFailedPrecondition(job.status())) << job.status();
  EXPECT_NE(job.status().message().find("has no gpu0"), absl::string_view::npos);
  EXPECT_TRUE(absl::IsInvalidArgument(orchestrator_->Serve(Request("tpu3")).status()));
}

TEST_F(ServePlacementTest, InstancesStartingCountWithWhatOthersHold) {
  // 10 GiB held by a process GSwarm did not start; a 12 GiB instance launched but not yet
  // reported (nor in any heartbeat): 18 GiB are left, not 28, so "big" (20) must wait.
  AddNode("gpu-node", {Gpu(0, 40 * kGiB, 10 * kGiB)});
  v1::Model small;
  small.set_name("small");
  small.set_size_bytes(12 * kGiB);
  ASSERT_TRUE(registry_->PutModel(small).ok());
  v1::Replica replica;
  replica.set_node_id("gpu-node");
  replica.set_tier("disk");
  replica.set_state("ready");
  replica.set_size_bytes(12 * kGiB);
  ASSERT_TRUE(registry_->PutReplica("small", replica).ok());
  v1::ServeRequest first;
  first.set_model_name("small");
  ASSERT_TRUE(orchestrator_->Serve(first).ok());
  absl::StatusOr<v1::Job> job = orchestrator_->Serve(Request("gpu0"));
  ASSERT_TRUE(absl::IsFailedPrecondition(job.status())) << job.status();
  EXPECT_NE(job.status().message().find("18.0 GiB free"), absl::string_view::npos) << job.status();
}

TEST_F(ServePlacementTest, NoCopyOnlineIsNotFound) {
  absl::StatusOr<v1::Job> job = orchestrator_->Serve(Request("cpu"));
  EXPECT_TRUE(absl::IsNotFound(job.status())) << job.status();
}

}  // namespace
}  // namespace gswarm::host

namespace gswarm::host {
namespace {

// Instance `id` of "big" on gpu0 as the agent reports it at `generation`.
v1::Instance Reported(const std::string& id, const std::string& state, uint64_t generation) {
  v1::Instance instance;
  instance.set_id(id);
  instance.set_model_name("big");
  instance.set_gpu_device("gpu0");
  instance.set_state(state);
  instance.set_generation(generation);
  return instance;
}

// The agent sends an instance's states in order on one stream, but they reach the host by two
// paths (heartbeats and command updates). Here the command update carrying an older "ready"
// arrives after a heartbeat carrying a newer "stopped": the newer state wins.
TEST_F(ServePlacementTest, AReorderedCommandUpdateCannotOverwriteANewerState) {
  AddNode("gpu-node", {Gpu(0, 72 * kGiB, 0)});
  absl::StatusOr<v1::Job> job = orchestrator_->Serve(Request("gpu0"));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_FALSE(session_->sent.empty());
  const std::string id = session_->sent.back().command().serve().instance_id();
  EXPECT_EQ(instances_.Get(id)->state(), "planned");

  const v1::Instance ready = Reported(id, "ready", 10);
  const v1::Instance stopped = Reported(id, "stopped", 11);

  orchestrator_->OnInstancesChanged("gpu-node", {stopped});  // newer, first
  v1::CommandUpdate update;
  update.set_command_id(job->id());
  update.set_state("succeeded");
  *update.mutable_instance() = ready;  // older, later
  orchestrator_->OnCommandUpdate("gpu-node", update);

  absl::StatusOr<v1::Job> done = orchestrator_->WaitJob(job->id(), absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), "succeeded");
  EXPECT_EQ(instances_.Get(id)->state(), "stopped");
  EXPECT_EQ(instances_.stale_reports(), 1u);
  // Nothing of it is counted on the GPU any more.
  absl::StatusOr<ServePlan> plan = orchestrator_->PlanServe(Request("gpu0"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->rooms[0].free_bytes, 72 * kGiB);
}

// In order, the same two reports end the same way, and nothing is dropped.
TEST_F(ServePlacementTest, InOrderReportsEndTheSameWay) {
  AddNode("gpu-node", {Gpu(0, 72 * kGiB, 0)});
  absl::StatusOr<v1::Job> job = orchestrator_->Serve(Request("gpu0"));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string id = session_->sent.back().command().serve().instance_id();
  const v1::Instance ready = Reported(id, "ready", 10);
  v1::CommandUpdate update;
  update.set_command_id(job->id());
  update.set_state("succeeded");
  *update.mutable_instance() = ready;
  orchestrator_->OnCommandUpdate("gpu-node", update);
  const v1::Instance stopped = Reported(id, "stopped", 11);
  orchestrator_->OnInstancesChanged("gpu-node", {stopped});
  ASSERT_TRUE(orchestrator_->WaitJob(job->id(), absl::Now() + absl::Seconds(10)).ok());
  // The heartbeat is applied after the update on the same queue: wait for it by a second job.
  absl::StatusOr<v1::Job> probe = orchestrator_->Serve(Request("gpu0"));
  ASSERT_TRUE(probe.ok());
  v1::CommandUpdate failed;
  failed.set_command_id(probe->id());
  failed.set_state("failed");
  orchestrator_->OnCommandUpdate("gpu-node", failed);
  ASSERT_TRUE(orchestrator_->WaitJob(probe->id(), absl::Now() + absl::Seconds(10)).ok());
  EXPECT_EQ(instances_.Get(id)->state(), "stopped");
  EXPECT_EQ(instances_.stale_reports(), 0u);
}

}  // namespace
}  // namespace gswarm::host

namespace gswarm::host {
namespace {

TEST(NodeEndpointTest, AnEngineOnAnotherNodeIsReachedAtItsAgentsAddress) {
  v1::NodeInfo remote;
  remote.set_peer_address("ipv4:10.0.0.5:51234");
  EXPECT_EQ(NodeEndpoint(remote, "http://0.0.0.0:8000"), "http://10.0.0.5:8000");
  EXPECT_EQ(NodeEndpoint(remote, "http://[::]:8000"), "http://10.0.0.5:8000");
  // Loopback on another machine is not ours: the router must not hit a local port.
  EXPECT_EQ(NodeEndpoint(remote, "http://127.0.0.1:8000"), "http://10.0.0.5:8000");
  // A routable address is used as given.
  EXPECT_EQ(NodeEndpoint(remote, "http://10.0.0.9:8000"), "http://10.0.0.9:8000");

  v1::NodeInfo local;
  local.set_peer_address("ipv4:127.0.0.1:40000");
  EXPECT_EQ(NodeEndpoint(local, "http://127.0.0.1:8000"), "http://127.0.0.1:8000");
  EXPECT_EQ(NodeEndpoint(local, "http://0.0.0.0:8000"), "http://0.0.0.0:8000");

  v1::NodeInfo six;
  six.set_peer_address("ipv6:[fd00::5]:51234");
  EXPECT_EQ(NodeEndpoint(six, "http://0.0.0.0:8000"), "http://[fd00::5]:8000");
  // Unknown peer address: unchanged.
  EXPECT_EQ(NodeEndpoint(v1::NodeInfo(), "http://0.0.0.0:8000"), "http://0.0.0.0:8000");
}

}  // namespace
}  // namespace gswarm::host
