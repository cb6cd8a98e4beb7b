// Engines that sleep: the sleep, wake and reload calls of an engine spec, the presets' calls, and
// how client.engines takes them.

#include <gtest/gtest.h>

#include "common/config.h"
#include "common/engine_spec.h"

namespace gswarm::common {
namespace {

using Calls = std::vector<EngineCall>;

TEST(EngineSleepTest, VllmSleepsAtBothLevelsAndReloadsAfterTheSecond) {
  const EngineSpec vllm = BuiltinEngines().at("vllm");
  EXPECT_EQ(MaxSleepLevel(vllm), 2);
  EXPECT_EQ(vllm.env.at("VLLM_SERVER_DEV_MODE"), "1");
  EngineVars vars;
  vars.sleep_level = 2;
  EXPECT_EQ(*RenderCalls(vllm, "sleep", vars), (Calls{{"POST", "/sleep?level=2", ""}}));
  EXPECT_EQ(*RenderCalls(vllm, "wake", vars), (Calls{{"POST", "/wake_up", ""}}));
  EXPECT_EQ(*RenderCalls(vllm, "reload", vars),
            (Calls{{"POST", "/collective_rpc", R"({"method": "reload_weights"})"}}));
}

TEST(EngineSleepTest, SglangSleepsAtLevelOneAroundAPause) {
  const EngineSpec sglang = BuiltinEngines().at("sglang");
  EXPECT_EQ(MaxSleepLevel(sglang), 1);
  EXPECT_EQ(
      *RenderCalls(sglang, "sleep", EngineVars()),
      (Calls{{"POST", "/pause_generation", "{}"}, {"POST", "/release_memory_occupation", "{}"}}));
  EXPECT_EQ(
      *RenderCalls(sglang, "wake", EngineVars()),
      (Calls{{"POST", "/resume_memory_occupation", "{}"}, {"POST", "/continue_generation", "{}"}}));
  EXPECT_EQ(MaxSleepLevel(BuiltinEngines().at("llama-server")), 0);
}

TEST(EngineSleepTest, CallsArePlaceholdersAndTextLikeTheCommand) {
  EngineSpec spec{"custom", {"server"}};
  spec.sleep = {"PUT /admin/{model_name}/sleep?depth={sleep_level}  {{\"port\": {port}}}"};
  spec.wake = {"DELETE /admin/{model_name}/sleep"};
  ASSERT_TRUE(ValidateEngineSpec(spec).ok()) << ValidateEngineSpec(spec);
  EngineVars vars;
  vars.model_name = "m";
  vars.port = 9;
  vars.sleep_level = 1;
  EXPECT_EQ(*RenderCalls(spec, "sleep", vars),
            (Calls{{"PUT", "/admin/m/sleep?depth=1", R"({"port": 9})"}}));
  EXPECT_EQ(MaxSleepLevel(spec), 1);
}

TEST(EngineSleepTest, MalformedCallsNameTheEngineAndField) {
  auto error = [](std::vector<std::string> sleep, std::vector<std::string> wake,
                  std::vector<std::string> reload = {}) {
    EngineSpec spec{"e", {"server"}};
    spec.sleep = std::move(sleep);
    spec.wake = std::move(wake);
    spec.reload = std::move(reload);
    absl::Status status = ValidateEngineSpec(spec);
    return std::make_pair(EngineSpecErrorField(status), std::string(status.message()));
  };
  auto [field, message] = error({"SLEEP /now"}, {"POST /wake"});
  EXPECT_EQ(field, "sleep");
  EXPECT_NE(message.find("must start with GET, POST, PUT or DELETE"), std::string::npos) << message;
  std::tie(field, message) = error({"POST sleep"}, {"POST /wake"});
  EXPECT_NE(message.find("must start with '/'"), std::string::npos) << message;
  std::tie(field, message) = error({"POST /sleep"}, {});
  EXPECT_EQ(field, "sleep");
  EXPECT_NE(message.find("needs both sleep and wake"), std::string::npos) << message;
  std::tie(field, message) = error({}, {}, {"POST /reload"});
  EXPECT_EQ(field, "reload");
  std::tie(field, message) = error({"POST /sleep?l={level}"}, {"POST /wake"});
  EXPECT_NE(message.find("unknown placeholder {level}"), std::string::npos) << message;
}

TEST(EngineSleepTest, ConfigTakesAListOrOneCallAndRendersThemBack) {
  absl::StatusOr<Config> config = ParseConfig(R"(client:
  engines:
    napper:
      command: napper --port {port}
      sleep: ["POST /pause", "POST /sleep?level={sleep_level}"]
      wake: POST /wake
    vllm:
      reload: []
)",
                                              "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  const EngineSpec& napper = config->client.engines.at("napper");
  EXPECT_EQ(napper.sleep,
            (std::vector<std::string>{"POST /pause", "POST /sleep?level={sleep_level}"}));
  EXPECT_EQ(napper.wake, (std::vector<std::string>{"POST /wake"}));
  // The preset keeps its sleep and wake and loses level 2 with its reload.
  EXPECT_EQ(MaxSleepLevel(config->client.engines.at("vllm")), 1);
  const std::string yaml = ConfigToYaml(*config);
  EXPECT_NE(yaml.find(R"(sleep: ["POST /pause", "POST /sleep?level={sleep_level}"])"),
            std::string::npos)
      << yaml;
  absl::StatusOr<Config> back = ParseConfig(yaml, "rendered");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->client.engines.at("napper"), napper);
}

TEST(EngineSleepTest, ConfigErrorsNameLineAndKey) {
  absl::StatusOr<Config> config = ParseConfig(R"(client:
  engines:
    napper:
      command: napper
      sleep: {post: /sleep}
      wake: POST /wake
)",
                                              "cfg");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("cfg:5: client.engines.napper.sleep"), std::string::npos)
      << config.status();
  config = ParseConfig(R"(client:
  engines:
    napper:
      command: napper
      sleep: POST /sleep
)",
                       "cfg");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("needs both sleep and wake"), std::string::npos)
      << config.status();
}

}  // namespace
}  // namespace gswarm::common
