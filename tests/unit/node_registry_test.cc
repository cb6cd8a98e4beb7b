#include "host/node_registry.h"

#include "gtest/gtest.h"

namespace gswarm::host {
namespace {

class FakeSession final : public NodeRegistry::Session {
 public:
  void Close(const absl::Status& reason) override {
    ++closes;
    last_reason = reason;
  }
  void Send(v1::HostMessage message) override { sent.push_back(std::move(message)); }
  int closes = 0;
  absl::Status last_reason;
  std::vector<v1::HostMessage> sent;
};

class NodeRegistryTest : public ::testing::Test {
 protected:
  NodeRegistryTest() : registry_(Options()) {}

  NodeRegistry::Options Options() {
    NodeRegistry::Options options;
    options.now = [this] { return now_; };
    return options;
  }

  static v1::Hello Hello(const std::string& node_id, uint32_t interval_ms = 1000) {
    v1::Hello hello;
    hello.set_node_id(node_id);
    hello.set_hostname("machine-" + node_id);
    hello.set_heartbeat_interval_ms(interval_ms);
    hello.mutable_memory()->set_dram_total_bytes(64ull << 30);
    return hello;
  }

  std::string StateOf(const std::string& node_id) { return registry_.Get(node_id)->state(); }

  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
  NodeRegistry registry_;
};

TEST_F(NodeRegistryTest, ConnectMakesANodeOnlineWithItsHello) {
  auto session = std::make_shared<FakeSession>();
  absl::StatusOr<std::string> id = registry_.Connect(Hello("gpu-1"), "ipv4:10.0.0.1:5000", session);
  ASSERT_TRUE(id.ok()) << id.status();
  std::optional<v1::NodeInfo> node = registry_.Get("gpu-1");
  ASSERT_TRUE(node.has_value());
  EXPECT_EQ(node->state(), "online");
  EXPECT_EQ(node->session_id(), *id);
  EXPECT_EQ(node->hostname(), "machine-gpu-1");
  EXPECT_EQ(node->peer_address(), "ipv4:10.0.0.1:5000");
  EXPECT_EQ(node->memory().dram_total_bytes(), 64ull << 30);
}

TEST_F(NodeRegistryTest, InvalidNodeIdsAreRefused) {
  for (const char* bad : {"", "../etc", "-leading-dash", "a..b", "has space", "slash/y"}) {
    absl::StatusOr<std::string> id =
        registry_.Connect(Hello(bad), "peer", std::make_shared<FakeSession>());
    EXPECT_TRUE(absl::IsInvalidArgument(id.status())) << bad;
  }
  EXPECT_TRUE(registry_.List().empty());
  EXPECT_TRUE(ValidateNodeId("gpu-3.rack_2").ok());
  EXPECT_FALSE(ValidateNodeId(std::string(129, 'a')).ok());
}

TEST_F(NodeRegistryTest, HeartbeatsUpdateMemory) {
  std::string id = *registry_.Connect(Hello("n"), "p", std::make_shared<FakeSession>());
  v1::Heartbeat heartbeat;
  heartbeat.mutable_memory()->set_dram_available_bytes(12345);
  now_ += absl::Seconds(1);
  EXPECT_TRUE(registry_.Heartbeat("n", id, heartbeat));
  EXPECT_EQ(registry_.Get("n")->memory().dram_available_bytes(), 12345u);
  EXPECT_EQ(registry_.Get("n")->last_heartbeat_at().seconds(), absl::ToUnixSeconds(now_));
}

TEST_F(NodeRegistryTest, ThreeMissedHeartbeatsMakeANodeOffline) {
  std::string id = *registry_.Connect(Hello("n", 1000), "p", std::make_shared<FakeSession>());
  now_ += absl::Milliseconds(2900);
  EXPECT_EQ(registry_.SweepStale(), 0);
  EXPECT_EQ(StateOf("n"), "online");
  now_ += absl::Milliseconds(200);
  EXPECT_EQ(registry_.SweepStale(), 1);
  EXPECT_EQ(StateOf("n"), "offline");
  EXPECT_NE(registry_.Get("n")->state_reason().find("missed 3 heartbeats"), std::string::npos);
  EXPECT_EQ(registry_.SweepStale(), 0);  // counted once

  // A frozen agent that wakes up resumes on the same session.
  EXPECT_TRUE(registry_.Heartbeat("n", id, v1::Heartbeat()));
  EXPECT_EQ(StateOf("n"), "online");
}

TEST_F(NodeRegistryTest, DisconnectMakesANodeOfflineAtOnce) {
  std::string id = *registry_.Connect(Hello("n"), "p", std::make_shared<FakeSession>());
  registry_.Disconnect("n", id, "agent disconnected");
  EXPECT_EQ(StateOf("n"), "offline");
  EXPECT_EQ(registry_.Get("n")->state_reason(), "agent disconnected");
  EXPECT_FALSE(registry_.Heartbeat("n", "stale", v1::Heartbeat()));
}

TEST_F(NodeRegistryTest, ASecondSessionReplacesTheFirst) {
  auto first = std::make_shared<FakeSession>();
  auto second = std::make_shared<FakeSession>();
  std::string old_id = *registry_.Connect(Hello("n"), "peer-1", first);
  std::string new_id = *registry_.Connect(Hello("n"), "peer-2", second);
  EXPECT_NE(old_id, new_id);
  EXPECT_EQ(first->closes, 1);
  EXPECT_TRUE(absl::IsAborted(first->last_reason));
  EXPECT_NE(first->last_reason.message().find("replaced"), absl::string_view::npos);
  EXPECT_EQ(second->closes, 0);
  ASSERT_EQ(registry_.List().size(), 1u);

  // The old stream's late messages and its end do not disturb the new session.
  EXPECT_FALSE(registry_.Heartbeat("n", old_id, v1::Heartbeat()));
  registry_.Disconnect("n", old_id, "old stream closed");
  EXPECT_EQ(StateOf("n"), "online");
  EXPECT_EQ(registry_.Get("n")->peer_address(), "peer-2");
}

TEST_F(NodeRegistryTest, ReconnectAfterOfflineComesBackOnline) {
  std::string id = *registry_.Connect(Hello("n"), "p", std::make_shared<FakeSession>());
  registry_.Disconnect("n", id, "gone");
  ASSERT_TRUE(registry_.Connect(Hello("n"), "p", std::make_shared<FakeSession>()).ok());
  EXPECT_EQ(StateOf("n"), "online");
  EXPECT_EQ(registry_.List().size(), 1u);
}

TEST_F(NodeRegistryTest, ListIsSortedAndCloseAllClosesEverySession) {
  auto a = std::make_shared<FakeSession>(), b = std::make_shared<FakeSession>();
  registry_.Connect(Hello("zeta"), "p", a).IgnoreError();
  registry_.Connect(Hello("alpha"), "p", b).IgnoreError();
  std::vector<v1::NodeInfo> nodes = registry_.List();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].node_id(), "alpha");
  EXPECT_EQ(nodes[1].node_id(), "zeta");
  registry_.CloseAll(absl::UnavailableError("shutting down"));
  EXPECT_EQ(a->closes, 1);
  EXPECT_EQ(b->closes, 1);
}

TEST_F(NodeRegistryTest, ShortIntervalsHaveATimeoutFloor) {
  registry_.Connect(Hello("n", 10), "p", std::make_shared<FakeSession>()).IgnoreError();
  now_ += absl::Milliseconds(400);  // 40 intervals, but under the 500 ms floor
  EXPECT_EQ(registry_.SweepStale(), 0);
  now_ += absl::Milliseconds(200);
  EXPECT_EQ(registry_.SweepStale(), 1);
}

}  // namespace
}  // namespace gswarm::host
