// Sleep and wake against the fake engine speaking vLLM's sleep API (tests/support/fake_engine.py
// with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1), and the check that a sleep freed the GPU.

#include "absl/strings/str_cat.h"
#include "client/command_runner.h"
#include "client/http_client.h"
#include "client/instance_record.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/supervisor_fixture.h"

namespace gswarm::client {
namespace {

using ::testing::HasSubstr;

class InstanceSleepTest : public SupervisorTest {
 protected:
  // The fake engine as vLLM in sleep mode, with the preset's calls rendered for it.
  InstanceSpec Sleepy(const std::string& id, std::vector<std::string> flags = {}) {
    flags.insert(flags.begin(), {"--enable-sleep-mode", "--simulated-gpu-mib", "1000"});
    InstanceSpec spec = FakeEngine(id, flags);
    spec.env["VLLM_SERVER_DEV_MODE"] = "1";
    common::EngineSpec vllm = common::BuiltinEngines().at("vllm");
    common::EngineVars vars;
    for (int level = 1; level <= 2; ++level) {
      vars.sleep_level = level;
      spec.sleep.push_back(*common::RenderCalls(vllm, "sleep", vars));
    }
    spec.wake = *common::RenderCalls(vllm, "wake", vars);
    spec.reload = *common::RenderCalls(vllm, "reload", vars);
    return spec;
  }

  // GET /_fake/memory of the instance's engine.
  nlohmann::json Memory(const v1::Instance& instance) {
    HttpRequest request;
    request.url = instance.endpoint() + "/_fake/memory";
    absl::StatusOr<HttpResponse> response = SendHttpRequest(request);
    if (!response.ok() || response->status != 200) return nlohmann::json::object();
    return nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  }

  // The status of a completion request to the instance.
  long Complete(const v1::Instance& instance) {
    HttpRequest request;
    request.method = "POST";
    request.url = instance.endpoint() + "/v1/completions";
    request.headers = {"Content-Type: application/json"};
    request.body = R"({"model": "tiny", "prompt": "hi", "max_tokens": 2})";
    absl::StatusOr<HttpResponse> response = SendHttpRequest(request);
    return response.ok() ? response->status : -1;
  }

  v1::Instance StartReady(const InstanceSpec& spec) {
    absl::StatusOr<v1::Instance> started = supervisor_->Start(spec);
    EXPECT_TRUE(started.ok()) << started.status();
    EXPECT_TRUE(WaitState(spec.id, "ready"));
    return supervisor_->Get(spec.id).value_or(v1::Instance());
  }
};

TEST_F(InstanceSleepTest, SleepsAtLevelOneAndWakes) {
  v1::Instance ready = StartReady(Sleepy("inst-s1"));
  EXPECT_EQ(ready.max_sleep_level(), 2u);
  EXPECT_EQ(Memory(ready).value("gpu_bytes", 0), 1000 << 20);

  absl::StatusOr<v1::Instance> slept = supervisor_->Sleep("inst-s1", 1);
  ASSERT_TRUE(slept.ok()) << slept.status();
  EXPECT_EQ(slept->state(), "sleeping");
  EXPECT_EQ(slept->sleep_level(), 1u);
  EXPECT_THAT(slept->state_reason(), HasSubstr("level 1"));
  EXPECT_EQ(slept->pid(), ready.pid());  // the same engine, still running
  const nlohmann::json asleep = Memory(ready);
  EXPECT_TRUE(asleep.value("sleeping", false));
  EXPECT_LT(asleep.value("gpu_bytes", uint64_t{1} << 40), uint64_t{100} << 20);
  EXPECT_EQ(Complete(ready), 503);  // the engine refuses work while asleep

  absl::StatusOr<v1::Instance> woke = supervisor_->Wake("inst-s1");
  ASSERT_TRUE(woke.ok()) << woke.status();
  EXPECT_EQ(woke->state(), "ready");
  EXPECT_EQ(woke->sleep_level(), 0u);
  EXPECT_THAT(woke->state_reason(), HasSubstr("woke in"));
  EXPECT_EQ(Memory(ready).value("gpu_bytes", 0), 1000 << 20);
  EXPECT_EQ(Complete(ready), 200);
  EXPECT_EQ(States("inst-s1"),
            (std::vector<std::string>{"starting", "ready", "sleeping", "ready"}));
}

TEST_F(InstanceSleepTest, LevelTwoReloadsTheWeightsOnWake) {
  v1::Instance ready = StartReady(Sleepy("inst-s2"));
  ASSERT_TRUE(supervisor_->Sleep("inst-s2", 2).ok());
  EXPECT_FALSE(Memory(ready).value("weights_loaded", true));
  // Without the reload the engine would answer 500; the wake sends it.
  absl::StatusOr<v1::Instance> woke = supervisor_->Wake("inst-s2");
  ASSERT_TRUE(woke.ok()) << woke.status();
  EXPECT_TRUE(Memory(ready).value("weights_loaded", false));
  EXPECT_EQ(Complete(ready), 200);
}

TEST_F(InstanceSleepTest, RefusesWhatCannotSleepOrWake) {
  StartReady(FakeEngine("inst-s3"));
  absl::StatusOr<v1::Instance> no_calls = supervisor_->Sleep("inst-s3", 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(no_calls.status())) << no_calls.status();
  EXPECT_THAT(no_calls.status().message(), HasSubstr("cannot sleep"));

  StartReady(Sleepy("inst-s4"));
  EXPECT_THAT(supervisor_->Sleep("inst-s4", 3).status().message(), HasSubstr("level 3"));
  EXPECT_THAT(supervisor_->Wake("inst-s4").status().message(), HasSubstr("only a sleeping"));
  EXPECT_TRUE(absl::IsNotFound(supervisor_->Sleep("inst-nope", 1).status()));
  ASSERT_TRUE(supervisor_->Sleep("inst-s4", 1).ok());
  EXPECT_THAT(supervisor_->Sleep("inst-s4", 1).status().message(), HasSubstr("only a ready"));
  EXPECT_EQ(supervisor_->Get("inst-s4")->state(), "sleeping");
}

TEST_F(InstanceSleepTest, AFailedSleepCallLeavesItReady) {
  // Sleep calls the engine does not have (vLLM started without VLLM_SERVER_DEV_MODE answers 404).
  InstanceSpec spec = Sleepy("inst-s5");
  spec.env.erase("VLLM_SERVER_DEV_MODE");
  StartReady(spec);
  absl::StatusOr<v1::Instance> slept = supervisor_->Sleep("inst-s5", 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(slept.status())) << slept.status();
  EXPECT_THAT(slept.status().message(), HasSubstr("POST /sleep?level=1 answered HTTP 404"));
  EXPECT_EQ(supervisor_->Get("inst-s5")->state(), "ready");
}

TEST_F(InstanceSleepTest, ANewSupervisorAdoptsItAsleep) {
  v1::Instance ready = StartReady(Sleepy("inst-s6"));
  ASSERT_TRUE(supervisor_->Sleep("inst-s6", 1).ok());
  supervisor_.reset();  // the agent goes; the engine sleeps on
  supervisor_ = std::make_unique<InstanceSupervisor>(MakeOptions());
  std::vector<v1::Instance> adopted = supervisor_->Adopt();
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].state(), "sleeping");
  EXPECT_EQ(adopted[0].sleep_level(), 1u);
  EXPECT_EQ(adopted[0].pid(), ready.pid());
  ASSERT_TRUE(supervisor_->Wake("inst-s6").ok());
  EXPECT_EQ(Complete(ready), 200);
}

TEST(AwaitGpuFreedTest, PassesOnceNinetyPercentIsFreed) {
  int polls = 0;
  absl::StatusOr<uint64_t> freed = AwaitGpuFreed(
      1000, [&]() -> std::optional<uint64_t> { return ++polls < 3 ? 1000 : 100; },
      absl::Seconds(10), absl::Milliseconds(1));
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(*freed, 100u);
  EXPECT_EQ(polls, 3);
}

TEST(AwaitGpuFreedTest, SaysHowMuchIsStillHeld) {
  absl::StatusOr<uint64_t> freed = AwaitGpuFreed(
      uint64_t{8} << 30, []() -> std::optional<uint64_t> { return uint64_t{6} << 30; },
      absl::Milliseconds(30), absl::Milliseconds(5));
  EXPECT_TRUE(absl::IsFailedPrecondition(freed.status()));
  EXPECT_THAT(freed.status().message(), HasSubstr("6.0 GiB of 8.0 GiB still held"));
  // Not measurable at all is a failure too: nothing says the memory went.
  EXPECT_FALSE(AwaitGpuFreed(
                   100, [] { return std::optional<uint64_t>(); }, absl::Milliseconds(10),
                   absl::Milliseconds(5))
                   .ok());
}

TEST(InstanceRecordTest, KeepsTheSleepCallsAndLevel) {
  InstanceRecord record;
  record.spec.id = "inst-r";
  record.spec.argv = {"engine"};
  record.spec.port = 1;
  record.pid = 10;
  record.pgid = 10;
  record.sleep_level = 2;
  record.spec.sleep = {{{"POST", "/sleep?level=1", ""}}, {{"POST", "/sleep?level=2", ""}}};
  record.spec.wake = {{"POST", "/wake_up", ""}};
  record.spec.reload = {{"POST", "/collective_rpc", R"({"method": "reload_weights"})"}};
  absl::StatusOr<InstanceRecord> back = ParseInstanceRecord(InstanceRecordToJson(record));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->sleep_level, 2u);
  EXPECT_EQ(back->spec.sleep, record.spec.sleep);
  EXPECT_EQ(back->spec.wake, record.spec.wake);
  EXPECT_EQ(back->spec.reload, record.spec.reload);
}

}  // namespace
}  // namespace gswarm::client
