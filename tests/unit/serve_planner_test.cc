// Serve planning as a pure function of a snapshot (host/serve_planner.h): which node, tier and
// GPU, and what counts against a GPU's room.

#include "host/serve_planner.h"

#include <gtest/gtest.h>

namespace gswarm::host {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

v1::NodeInfo Node(const std::string& id, std::vector<std::pair<uint64_t, uint64_t>> gpus) {
  v1::NodeInfo node;
  node.set_node_id(id);
  node.set_state("online");
  uint32_t index = 0;
  for (const auto& [budget, used] : gpus) {
    v1::GpuInfo* gpu = node.mutable_memory()->add_gpus();
    gpu->set_index(index++);
    gpu->set_memory_budget_bytes(budget);
    gpu->set_memory_used_bytes(used);
  }
  return node;
}

void AddReplica(v1::Model* model, const std::string& node, const std::string& tier) {
  v1::Replica* replica = model->add_replicas();
  replica->set_node_id(node);
  replica->set_tier(tier);
  replica->set_state("ready");
}

ServeSnapshot::Holding Holding(const std::string& id, const std::string& node,
                               const std::string& gpu, const std::string& state, uint64_t footprint,
                               uint64_t reported = 0) {
  ServeSnapshot::Holding holding;
  holding.instance.set_id(id);
  holding.instance.set_node_id(node);
  holding.instance.set_gpu_device(gpu);
  holding.instance.set_state(state);
  holding.instance.set_gpu_memory_bytes(reported);
  holding.footprint_bytes = footprint;
  return holding;
}

class ServePlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    snapshot_.model.set_name("m");
    snapshot_.model.set_size_bytes(10 * kGiB);
  }

  absl::StatusOr<std::vector<ServePlan>> Plan(const std::string& gpu = "",
                                              const std::string& tier = "") {
    v1::ServeRequest request;
    request.set_model_name("m");
    request.set_gpu_device(gpu);
    request.set_source_device(tier);
    return PlanServeEverywhere(snapshot_, request);
  }

  ServeSnapshot snapshot_;
};

TEST_F(ServePlannerTest, DramBeforeDiskOnePlanPerNode) {
  snapshot_.nodes = {Node("a", {{40 * kGiB, 0}}), Node("b", {{40 * kGiB, 0}})};
  AddReplica(&snapshot_.model, "a", "disk");
  AddReplica(&snapshot_.model, "b", "disk");
  AddReplica(&snapshot_.model, "b", "dram");
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(plans.ok()) << plans.status();
  ASSERT_EQ(plans->size(), 2u);
  EXPECT_EQ((*plans)[0].node_id, "b");
  EXPECT_EQ((*plans)[0].tier, "dram");
  EXPECT_EQ((*plans)[1].node_id, "a");
  EXPECT_EQ((*plans)[1].tier, "disk");
  // Asked for disk: b is planned from its disk copy.
  plans = Plan("", "disk");
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ((*plans)[0].node_id, "a");
  EXPECT_EQ((*plans)[1].tier, "disk");
}

TEST_F(ServePlannerTest, RoomCountsOthersOursAndPlannedInstances) {
  // 40 GiB budget; the heartbeat says 14 GiB used, 4 of them by our ready instance (which was
  // planned with 6: it counts 6 until NVML reports more); a planned instance holds 8 more.
  snapshot_.nodes = {Node("a", {{40 * kGiB, 14 * kGiB}})};
  AddReplica(&snapshot_.model, "a", "disk");
  snapshot_.instances = {Holding("ready", "a", "gpu0", "ready", 6 * kGiB, 4 * kGiB),
                         Holding("planned", "a", "gpu0", "planned", 8 * kGiB),
                         Holding("elsewhere", "b", "gpu0", "ready", 30 * kGiB)};
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(plans.ok()) << plans.status();
  const DeviceRoom& room = (*plans)[0].rooms[0];
  // others = 14 - 4 = 10; ours = max(4, 6) + 8 = 14; used = 24.
  EXPECT_EQ(room.used_bytes, 24 * kGiB);
  EXPECT_EQ(room.free_bytes, 16 * kGiB);
  ASSERT_EQ(room.instances.size(), 2u);
  EXPECT_TRUE((*plans)[0].fits);
  // NVML reporting more than the footprint: the report counts.
  snapshot_.instances[0].instance.set_gpu_memory_bytes(9 * kGiB);
  snapshot_.nodes[0].mutable_memory()->mutable_gpus(0)->set_memory_used_bytes(19 * kGiB);
  plans = Plan();
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ((*plans)[0].rooms[0].used_bytes, (10 + 9 + 8) * kGiB);
}

TEST_F(ServePlannerTest, MostRoomWinsAndShortageSaysNeededVsFree) {
  snapshot_.nodes = {Node("a", {{40 * kGiB, 35 * kGiB}, {40 * kGiB, 32 * kGiB}}),
                     Node("b", {{40 * kGiB, 0}})};
  AddReplica(&snapshot_.model, "a", "dram");
  AddReplica(&snapshot_.model, "b", "disk");
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(plans.ok()) << plans.status();
  const ServePlan& first = (*plans)[0];
  EXPECT_EQ(first.node_id, "a");
  EXPECT_EQ(first.gpu, "gpu1");  // 8 GiB free beats 5
  EXPECT_FALSE(first.fits);
  EXPECT_NE(first.shortage.find("needs 10.0 GiB"), std::string::npos) << first.shortage;
  EXPECT_NE(first.shortage.find("8.0 GiB free"), std::string::npos) << first.shortage;
  // The preferred plan is the first that fits: node b, from disk.
  EXPECT_EQ(PreferredPlan(*plans).node_id, "b");
  // None fits: the first.
  snapshot_.nodes[1].mutable_memory()->mutable_gpus(0)->set_memory_used_bytes(39 * kGiB);
  plans = Plan();
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ(PreferredPlan(*plans).node_id, "a");
}

TEST_F(ServePlannerTest, CpuNamedGpusAndBadInput) {
  snapshot_.nodes = {Node("a", {})};
  AddReplica(&snapshot_.model, "a", "disk");
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(plans.ok()) << plans.status();
  EXPECT_EQ((*plans)[0].gpu, "cpu");
  EXPECT_TRUE((*plans)[0].fits);
  EXPECT_TRUE(absl::IsFailedPrecondition(Plan("gpu1").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Plan("graphics").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Plan("", "tape").status()));
  EXPECT_TRUE(Plan("cpu").ok());
}

TEST_F(ServePlannerTest, CpuInstancesReserveTheirFootprintTimesTheEngineFactorInRam) {
  // A CPU-only node with 30 GiB for engines; the model is 10 GiB, the default engine's factor
  // 1.2 (12 GiB an instance), the "lean" engine's 1.0.
  snapshot_.nodes = {Node("a", {})};
  v1::NodeInfo& node = snapshot_.nodes[0];
  node.mutable_memory()->set_cpu_memory_budget_bytes(30 * kGiB);
  (*node.mutable_engine_memory_factors())[""] = 1.2;
  (*node.mutable_engine_memory_factors())["lean"] = 1.0;
  AddReplica(&snapshot_.model, "a", "disk");
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(plans.ok()) << plans.status();
  const ServePlan& plan = (*plans)[0];
  EXPECT_EQ(plan.gpu, "cpu");
  EXPECT_EQ(plan.needed_bytes, static_cast<uint64_t>(12.0 * kGiB));
  ASSERT_EQ(plan.rooms.size(), 1u);
  EXPECT_EQ(plan.rooms[0].device, "cpu");
  EXPECT_TRUE(plan.fits);
  EXPECT_EQ(FootprintBytes(snapshot_.model, node, "cpu", "lean"), 10 * kGiB);
  EXPECT_EQ(FootprintBytes(snapshot_.model, node, "cpu", "unknown"), plan.needed_bytes);

  // Two held: one starting at its footprint, one ready whose RSS (14 GiB) says more than its
  // footprint; a GPU instance elsewhere and the RSS of a smaller one do not lower anything.
  snapshot_.instances = {Holding("starting", "a", "cpu", "starting", 12 * kGiB),
                         Holding("ready", "a", "cpu", "ready", 12 * kGiB)};
  snapshot_.instances[1].instance.set_ram_bytes(14 * kGiB);
  plans = Plan();
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ((*plans)[0].rooms[0].used_bytes, 26 * kGiB);
  EXPECT_EQ((*plans)[0].rooms[0].free_bytes, 4 * kGiB);
  EXPECT_FALSE((*plans)[0].fits);
  EXPECT_NE((*plans)[0].shortage.find("of RAM on node a"), std::string::npos)
      << (*plans)[0].shortage;
  EXPECT_NE((*plans)[0].shortage.find("client.cpu_memory_budget"), std::string::npos);
  snapshot_.instances[1].instance.set_ram_bytes(2 * kGiB);  // RSS below the footprint
  plans = Plan();
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ((*plans)[0].rooms[0].used_bytes, 24 * kGiB);

  // A node that reports no budget (an older agent) leaves CPU instances unbounded.
  node.mutable_memory()->set_cpu_memory_budget_bytes(0);
  plans = Plan();
  ASSERT_TRUE(plans.ok());
  EXPECT_TRUE((*plans)[0].rooms.empty());
  EXPECT_TRUE((*plans)[0].fits);
}

TEST_F(ServePlannerTest, GpusPreferredOverTheCpuRoomWhichServesOnlyWhenAsked) {
  snapshot_.nodes = {Node("a", {{40 * kGiB, 0}})};
  snapshot_.nodes[0].mutable_memory()->set_cpu_memory_budget_bytes(8 * kGiB);
  AddReplica(&snapshot_.model, "a", "disk");
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(plans.ok()) << plans.status();
  EXPECT_EQ((*plans)[0].gpu, "gpu0");
  EXPECT_EQ((*plans)[0].needed_bytes, 10 * kGiB);  // on a GPU: the model's size
  ASSERT_EQ((*plans)[0].rooms.size(), 2u);
  EXPECT_EQ((*plans)[0].rooms[1].device, "cpu");
  plans = Plan("cpu");
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ((*plans)[0].gpu, "cpu");
  EXPECT_FALSE((*plans)[0].fits);  // 12 GiB do not go into 8
}

TEST_F(ServePlannerTest, UnifiedMemoryNodesCountEveryInstanceInEveryRoom) {
  // A Jetson-class board: one GPU that shares 16 GiB of RAM budget with the CPU.
  snapshot_.nodes = {Node("j", {{60 * kGiB, 0}})};
  v1::MemoryUsage& memory = *snapshot_.nodes[0].mutable_memory();
  memory.set_cpu_memory_budget_bytes(16 * kGiB);
  memory.set_unified_memory(true);
  snapshot_.model.set_size_bytes(4 * kGiB);
  AddReplica(&snapshot_.model, "j", "disk");
  snapshot_.instances = {Holding("on-gpu", "j", "gpu0", "ready", 5 * kGiB),
                         Holding("on-cpu", "j", "cpu", "ready", 5 * kGiB)};
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(plans.ok()) << plans.status();
  const ServePlan& plan = (*plans)[0];
  EXPECT_EQ(plan.gpu, "gpu0");
  EXPECT_EQ(plan.needed_bytes, static_cast<uint64_t>(4.8 * kGiB));  // x1.2 on unified memory
  ASSERT_EQ(plan.rooms.size(), 2u);
  for (const DeviceRoom& room : plan.rooms) {
    EXPECT_EQ(room.budget_bytes, 16 * kGiB) << room.device;  // the GPU's budget capped by RAM
    EXPECT_EQ(room.used_bytes, 10 * kGiB) << room.device;
    EXPECT_EQ(room.instances.size(), 2u) << room.device;
  }
  EXPECT_TRUE(plan.fits);
}

TEST_F(ServePlannerTest, CopiesOnOfflineNodesAreUnavailableMissingOnesNotFound) {
  snapshot_.nodes = {Node("a", {{40 * kGiB, 0}})};
  AddReplica(&snapshot_.model, "gone", "dram");  // its node is not online: worth a retry
  absl::StatusOr<std::vector<ServePlan>> plans = Plan();
  ASSERT_TRUE(absl::IsUnavailable(plans.status())) << plans.status();
  EXPECT_NE(plans.status().message().find("node gone, which is not online"), std::string::npos)
      << plans.status();
  snapshot_.model.mutable_replicas(0)->set_state("copying");
  plans = Plan();
  ASSERT_TRUE(absl::IsNotFound(plans.status())) << plans.status();
  EXPECT_NE(plans.status().message().find("download or copy it"), std::string::npos);
  snapshot_.model.mutable_replicas(0)->set_node_id("a");
  EXPECT_TRUE(absl::IsNotFound(Plan().status()));
}

}  // namespace
}  // namespace gswarm::host
