// The router's model pool against the real orchestrator, registry, node registry and instance
// manager, with a fake agent that runs serve, stop and copy commands at once and reports GPU memory
// the way NVML would: eviction when a GPU is short (least recently used first, only what is
// needed, only idle instances the router loaded), leases, preloaded models kept, demotion to
// DRAM, idle unload after keep_alive (default and per request), and max_loaded_models.

#include "tests/unit/placement_fixture.h"

namespace gswarm::host {
namespace {

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
  EXPECT_NE(huge.status().message().find("larger than the whole budget there"),
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
