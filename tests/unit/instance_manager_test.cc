#include "host/instance_manager.h"

#include <gtest/gtest.h>

#include <vector>

#include "host/event_bus.h"
#include "host/instance_state.h"
#include "host/job_state.h"

namespace gswarm::host {
namespace {

using S = InstanceState;

constexpr S kAll[] = {S::kPlanned,  S::kStarting, S::kReady,   S::kSleeping,
                      S::kDraining, S::kStopping, S::kStopped, S::kFailed};

v1::Instance Report(const std::string& id, const std::string& state, uint64_t generation) {
  v1::Instance instance;
  instance.set_id(id);
  instance.set_model_name("tiny");
  instance.set_gpu_device("gpu0");
  instance.set_state(state);
  instance.set_generation(generation);
  return instance;
}

TEST(InstanceStateTest, NamesRoundTripAndUnknownIsRefused) {
  for (S state : kAll) {
    EXPECT_EQ(ParseInstanceState(InstanceStateName(state)), state) << InstanceStateName(state);
  }
  EXPECT_FALSE(ParseInstanceState("Ready").has_value());
  EXPECT_FALSE(ParseInstanceState("").has_value());
  EXPECT_EQ(StateOf(Report("a", "bogus", 1)), S::kFailed);
}

TEST(InstanceStateTest, EveryEdgeOfTheMachine) {
  // The edges the lifecycle has, and no others.
  const std::vector<std::pair<S, S>> allowed = {
      {S::kPlanned, S::kStarting},  {S::kPlanned, S::kReady},     {S::kPlanned, S::kStopping},
      {S::kPlanned, S::kStopped},   {S::kPlanned, S::kFailed},    {S::kStarting, S::kReady},
      {S::kStarting, S::kStopping}, {S::kStarting, S::kStopped},  {S::kStarting, S::kFailed},
      {S::kReady, S::kStarting},    {S::kReady, S::kSleeping},    {S::kReady, S::kDraining},
      {S::kReady, S::kStopping},    {S::kReady, S::kStopped},     {S::kReady, S::kFailed},
      {S::kSleeping, S::kStarting}, {S::kSleeping, S::kReady},    {S::kSleeping, S::kDraining},
      {S::kSleeping, S::kStopping}, {S::kSleeping, S::kStopped},  {S::kSleeping, S::kFailed},
      {S::kDraining, S::kReady},    {S::kDraining, S::kSleeping}, {S::kDraining, S::kStopping},
      {S::kDraining, S::kStopped},  {S::kDraining, S::kFailed},   {S::kStopping, S::kStopped},
      {S::kStopping, S::kFailed},   {S::kStopped, S::kPlanned},   {S::kStopped, S::kStarting},
      {S::kStopped, S::kReady},     {S::kFailed, S::kPlanned},    {S::kFailed, S::kStarting},
      {S::kFailed, S::kReady},
  };
  for (S from : kAll) {
    for (S to : kAll) {
      const bool expected =
          std::find(allowed.begin(), allowed.end(), std::make_pair(from, to)) != allowed.end();
      EXPECT_EQ(IsAllowedTransition(from, to), expected)
          << InstanceStateName(from) << " -> " << InstanceStateName(to);
    }
  }
}

TEST(JobStateTest, NamesAndEdges) {
  using J = JobState;
  for (J state : {J::kPending, J::kRunning, J::kSucceeded, J::kFailed, J::kCancelled}) {
    EXPECT_EQ(ParseJobState(JobStateName(state)), state);
    // Nothing leaves a finished job; everything else may follow an unfinished one but a step back.
    for (J to : {J::kPending, J::kRunning, J::kSucceeded, J::kFailed, J::kCancelled}) {
      const bool expected = !IsTerminal(state) && !(state == J::kRunning && to == J::kPending);
      EXPECT_EQ(IsAllowedJobTransition(state, to), expected)
          << JobStateName(state) << " -> " << JobStateName(to);
    }
  }
  EXPECT_FALSE(ParseJobState("done").has_value());
  v1::Job job;
  job.set_state("exploded");
  EXPECT_EQ(JobStateOf(job), J::kFailed);
}

class InstanceManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manager_.AddListener([this](const v1::Instance& instance, S from, S to) {
      heard_.push_back(instance.id() + ":" + InstanceStateName(from) + "->" +
                       InstanceStateName(to));
    });
  }

  std::string State(const std::string& id) {
    std::optional<v1::Instance> instance = manager_.Get(id);
    return instance.has_value() ? instance->state() : "(none)";
  }

  // The events published so far, as "instance:from->to".
  std::vector<std::string> Events() {
    bus_.Flush();
    std::vector<std::string> out;
    for (const v1::Event& event : watch_->TakeAll()) {
      out.push_back(event.instance_id() + ":" + event.from_state() + "->" + event.to_state());
    }
    return out;
  }

  EventBus bus_{EventBus::Options{}};
  std::shared_ptr<EventSubscription> watch_ = *bus_.Subscribe({}, EventBus::Start{});
  InstanceManager manager_{&bus_};
  std::vector<std::string> heard_;
};

TEST_F(InstanceManagerTest, ReportsWalkTheLifecycleAndPublishEachChange) {
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "starting", 10)));
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "ready", 11)));
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "stopping", 12)));
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "stopped", 13)));
  EXPECT_EQ(State("i1"), "stopped");
  EXPECT_EQ(manager_.Get("i1")->node_id(), "node-1");
  EXPECT_EQ(Events(), (std::vector<std::string>{"i1:new->starting", "i1:starting->ready",
                                                "i1:ready->stopping", "i1:stopping->stopped"}));
  EXPECT_EQ(heard_.size(), 4u);
  EXPECT_TRUE(manager_.Active().empty());
}

TEST_F(InstanceManagerTest, AStaleReportIsDroppedAndTheNewerStateWins) {
  // The agent sent "ready" (generation 11) then "stopped" (12); the host got them reordered.
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "starting", 10)));
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "stopped", 12)));
  EXPECT_FALSE(manager_.ApplyReport("node-1", Report("i1", "ready", 11)));
  EXPECT_EQ(State("i1"), "stopped");
  EXPECT_EQ(manager_.stale_reports(), 1u);
  EXPECT_EQ(Events(), (std::vector<std::string>{"i1:new->starting", "i1:starting->stopped"}));
}

TEST_F(InstanceManagerTest, ADuplicateReportChangesNothingButItsFigures) {
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "ready", 10)));
  v1::Instance again = Report("i1", "ready", 10);
  again.set_gpu_memory_bytes(12345);  // NVML's figure arrives with the same generation
  ASSERT_TRUE(manager_.ApplyReport("node-1", again));
  EXPECT_EQ(manager_.Get("i1")->gpu_memory_bytes(), 12345u);
  EXPECT_EQ(Events(), (std::vector<std::string>{"i1:new->ready"}));
}

TEST_F(InstanceManagerTest, PlannedHoldsItsRoomUntilReportedOrFailed) {
  v1::Instance planned = Report("i1", "", 0);
  planned.set_node_id("node-1");
  manager_.Plan(planned, 7000);
  EXPECT_EQ(State("i1"), "planned");
  EXPECT_EQ(manager_.ReservedBytes("i1"), 7000u);
  EXPECT_EQ(manager_.Active("tiny", "node-1").size(), 1u);
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "starting", 5)));
  EXPECT_EQ(State("i1"), "starting");
  EXPECT_EQ(manager_.ReservedBytes("i1"), 7000u);  // until NVML says more

  v1::Instance lost = Report("i2", "", 0);
  lost.set_node_id("node-1");
  manager_.Plan(lost, 1);
  manager_.PlanEnded("i2", "serve failed: engine not found");
  EXPECT_EQ(State("i2"), "failed");
  EXPECT_EQ(manager_.Get("i2")->state_reason(), "serve failed: engine not found");
  // PlanEnded touches only planned instances.
  manager_.PlanEnded("i1", "late");
  EXPECT_EQ(State("i1"), "starting");
}

TEST_F(InstanceManagerTest, DrainHoldsAgainstTheAgentsReadyAndUndrainPutsBack) {
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "ready", 10)));
  ASSERT_TRUE(manager_.Drain("i1", "idle for 5m").ok());
  EXPECT_EQ(State("i1"), "draining");
  // A heartbeat still says ready (the stop has not reached the engine): it stays out.
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "ready", 11)));
  EXPECT_EQ(State("i1"), "draining");
  ASSERT_TRUE(manager_.Undrain("i1", "stop not sent").ok());
  EXPECT_EQ(State("i1"), "ready");
  // Draining an instance that is not ready is refused.
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i2", "starting", 3)));
  EXPECT_TRUE(absl::IsFailedPrecondition(manager_.Drain("i2", "x")));
  EXPECT_TRUE(absl::IsNotFound(manager_.Drain("nope", "x")));
  EXPECT_TRUE(absl::IsFailedPrecondition(manager_.Undrain("i2", "x")));
  // Draining then stopping ends it.
  ASSERT_TRUE(manager_.Drain("i1", "evicted").ok());
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "stopping", 12)));
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("i1", "stopped", 13)));
  EXPECT_EQ(State("i1"), "stopped");
}

TEST_F(InstanceManagerTest, InventoryReplacesTheNodeButKeepsPlannedAndOtherNodes) {
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("gone", "ready", 10)));
  ASSERT_TRUE(manager_.ApplyReport("node-2", Report("other", "ready", 10)));
  v1::Instance planned = Report("planned", "", 0);
  planned.set_node_id("node-1");
  manager_.Plan(planned, 1);
  manager_.ApplyInventory("node-1", {Report("kept", "ready", 20)});
  EXPECT_EQ(State("gone"), "(none)");
  EXPECT_EQ(State("other"), "ready");
  EXPECT_EQ(State("planned"), "planned");
  EXPECT_EQ(State("kept"), "ready");
  // The vanished one was heard ending, so the router could forget it.
  EXPECT_NE(std::find(heard_.begin(), heard_.end(), "gone:ready->stopped"), heard_.end());
}

TEST_F(InstanceManagerTest, EndedInstancesAreKeptAWhileThenForgotten) {
  ASSERT_TRUE(manager_.ApplyReport("node-1", Report("live", "ready", 1)));
  const size_t total = InstanceManager::kKeepEnded + 5;
  for (size_t i = 0; i < total; ++i) {
    ASSERT_TRUE(manager_.ApplyReport("node-1", Report("e" + std::to_string(i), "stopped", 1)));
  }
  EXPECT_EQ(State("e0"), "(none)");  // the oldest ended ones went
  EXPECT_EQ(State("e4"), "(none)");
  EXPECT_EQ(State("e5"), "stopped");
  EXPECT_EQ(State("live"), "ready");  // an active one is never forgotten
  EXPECT_EQ(manager_.List().size(), InstanceManager::kKeepEnded + 1);
}

TEST_F(InstanceManagerTest, UnknownStatesAreIgnored) {
  EXPECT_FALSE(manager_.ApplyReport("node-1", Report("i1", "exploded", 1)));
  EXPECT_EQ(State("i1"), "(none)");
}

TEST(EventBusTest, SequenceFiltersHistoryAndEnd) {
  EventBus bus(EventBus::Options{.history = 8, .max_backlog = 16});
  auto instance_only = *bus.Subscribe({.kinds = {"instance"}}, EventBus::Start{});
  for (int i = 0; i < 5; ++i) {
    v1::Event event = MakeEvent(i % 2 == 0 ? "instance" : "job", "state", "e");
    event.set_model_name(i < 3 ? "a" : "b");
    bus.Publish(event);
  }
  bus.Flush();
  EXPECT_EQ(bus.last_seq(), 5u);
  std::vector<uint64_t> seqs;
  for (const v1::Event& event : instance_only->TakeAll()) seqs.push_back(event.seq());
  EXPECT_EQ(seqs, (std::vector<uint64_t>{1, 3, 5}));

  // Resume after seq 3, not following: 4 and 5, then an OK end.
  auto resumed = *bus.Subscribe({}, EventBus::Start{.after = 3, .follow = false});
  EXPECT_EQ(resumed->Next(absl::Seconds(1))->seq(), 4u);
  EXPECT_EQ(resumed->Next(absl::Seconds(1))->seq(), 5u);
  EXPECT_FALSE(resumed->Next(absl::Milliseconds(10)).has_value());
  EXPECT_TRUE(resumed->ended());
  EXPECT_TRUE(resumed->end().ok());

  // The newest two about model "b".
  auto newest = *bus.Subscribe({.model_name = "b"}, EventBus::Start{.last = 1, .follow = false});
  std::vector<v1::Event> got = newest->TakeAll();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].seq(), 5u);

  // Bad kinds are refused; a resume point that fell out of the history is refused.
  EXPECT_TRUE(absl::IsInvalidArgument(bus.Subscribe({.kinds = {"nodes"}}, {}).status()));
  for (int i = 0; i < 20; ++i) bus.Publish(MakeEvent("job", "state", "e"));
  bus.Flush();
  EXPECT_TRUE(absl::IsOutOfRange(bus.Subscribe({}, EventBus::Start{.after = 2}).status()));
}

TEST(EventBusTest, ASlowWatcherIsDroppedWithAReasonAndNeverSlowsPublishers) {
  EventBus bus(EventBus::Options{.history = 8, .max_backlog = 4});
  auto slow = *bus.Subscribe({}, EventBus::Start{});
  auto fast = *bus.Subscribe({}, EventBus::Start{});
  size_t fast_got = 0;
  for (int i = 0; i < 100; ++i) {
    bus.Publish(MakeEvent("job", "state", "e"));
    bus.Flush();
    fast_got += fast->TakeAll().size();
  }
  EXPECT_EQ(fast_got, 100u);
  EXPECT_TRUE(slow->ended());
  EXPECT_TRUE(absl::IsResourceExhausted(slow->end()));
  EXPECT_NE(slow->end().message().find("fell 4 events behind"), std::string::npos) << slow->end();
  EXPECT_FALSE(fast->ended());
}

TEST(EventBusTest, CloseEndsWatchersAtOnce) {
  EventBus bus(EventBus::Options{});
  auto watch = *bus.Subscribe({}, EventBus::Start{});
  bus.Close();
  EXPECT_FALSE(watch->Next(absl::Seconds(5)).has_value());
  EXPECT_TRUE(absl::IsUnavailable(watch->end()));
  EXPECT_TRUE(absl::IsUnavailable(bus.Subscribe({}, {}).status()));
}

}  // namespace
}  // namespace gswarm::host
