// client.engines and client.default_engine in the configuration: how engines load, fail, render
// and take the default engine from the environment and flags.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/engine_spec.h"
#include "tests/unit/engine_test_util.h"

namespace gswarm::common {
namespace {

// Asserts that `yaml` fails to parse with "cfg:<line>: <key>: " and `fragment` in the message.
void ExpectConfigError(const std::string& yaml, int line, const std::string& key,
                       const std::string& fragment) {
  SCOPED_TRACE(yaml);
  absl::StatusOr<Config> config = ParseConfig(yaml, "cfg");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      Contains(Message(config.status()), "cfg:" + std::to_string(line) + ": " + key + ": "));
  EXPECT_TRUE(Contains(Message(config.status()), fragment));
}

TEST(EngineConfigTest, DefaultsHaveNoConfiguredEnginesAndVllmAsDefault) {
  Config config;
  EXPECT_TRUE(config.client.engines.empty());
  EXPECT_EQ(config.client.default_engine, "vllm");
  EXPECT_EQ(EffectiveEngines(config.client), BuiltinEngines());
}

TEST(EngineConfigTest, EnginesWithListAndStringCommandsLoad) {
  absl::StatusOr<Config> config = ParseConfig(R"(client:
  default_engine: fake
  engines:
    fake:
      command: ["python3", "/opt/fake_engine.py", "--model", "{model_path}", "--port", "{port}"]
      health_path: /v1/models
      ready_timeout_s: 30.5
      memory_factor: 1.05
      env:
        HF_HUB_OFFLINE: 1
        MODEL_DIR: "{model_path}"
        EMPTY:
    "my string":
      command: /opt/bin/server --name "{model_name} v2" --port={port}
    block-list:
      command:
        - server
        - --threads
        - 8
)",
                                              "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->warnings.empty()) << config->warnings[0];
  EXPECT_EQ(config->client.default_engine, "fake");
  ASSERT_EQ(config->client.engines.size(), 3u);

  const EngineSpec& fake = config->client.engines.at("fake");
  EXPECT_EQ(fake.name, "fake");
  EXPECT_EQ(fake.command, (std::vector<std::string>{"python3", "/opt/fake_engine.py", "--model",
                                                    "{model_path}", "--port", "{port}"}));
  EXPECT_EQ(fake.health_path, "/v1/models");
  EXPECT_EQ(fake.ready_timeout_s, 30.5);
  EXPECT_EQ(fake.memory_factor, 1.05);
  EXPECT_EQ(config->client.engines.at("block-list").memory_factor, 1.2);  // the default
  EXPECT_EQ(fake.env, (std::map<std::string, std::string>{
                          {"EMPTY", ""}, {"HF_HUB_OFFLINE", "1"}, {"MODEL_DIR", "{model_path}"}}));

  const EngineSpec& quoted = config->client.engines.at("my string");
  EXPECT_EQ(quoted.command, (std::vector<std::string>{"/opt/bin/server", "--name",
                                                      "{model_name} v2", "--port={port}"}));
  EXPECT_EQ(quoted.health_path, "/health");  // the defaults of a new engine
  EXPECT_EQ(quoted.ready_timeout_s, 600);
  EXPECT_EQ(*RenderCommand(quoted, Vars()),
            (std::vector<std::string>{"/opt/bin/server", "--name", "llama v2", "--port=8123"}));

  EXPECT_EQ(config->client.engines.at("block-list").command,
            (std::vector<std::string>{"server", "--threads", "8"}));

  std::map<std::string, EngineSpec> effective = EffectiveEngines(config->client);
  EXPECT_EQ(effective.size(), BuiltinEngines().size() + 3);
  EXPECT_EQ(effective.at("vllm"), BuiltinEngines().at("vllm"));
  EXPECT_EQ(effective.at("fake"), fake);
}

TEST(EngineConfigTest, AnEntryNamedLikeAPresetOverridesOnlyWhatItGives) {
  absl::StatusOr<Config> config = ParseConfig(R"(client:
  engines:
    vllm:
      ready_timeout_s: 1200
    llama-server:
      command: "/opt/llama/llama-server -m {model_file} --port {port}"
      env: {GGML_CUDA_NO_PINNED: "1"}
)",
                                              "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::map<std::string, EngineSpec> presets = BuiltinEngines();
  const EngineSpec& vllm = config->client.engines.at("vllm");
  EXPECT_EQ(vllm.command, presets.at("vllm").command);
  EXPECT_EQ(vllm.ready_timeout_s, 1200);
  const EngineSpec& llama = config->client.engines.at("llama-server");
  EXPECT_EQ(llama.command, (std::vector<std::string>{"/opt/llama/llama-server", "-m",
                                                     "{model_file}", "--port", "{port}"}));
  EXPECT_EQ(llama.health_path, "/health");
  EXPECT_EQ(llama.env.at("GGML_CUDA_NO_PINNED"), "1");
  std::map<std::string, EngineSpec> effective = EffectiveEngines(config->client);
  EXPECT_EQ(effective.at("vllm"), vllm);
  EXPECT_EQ(effective.at("llama-server"), llama);
  EXPECT_EQ(effective.at("sglang"), presets.at("sglang"));
}

TEST(EngineConfigTest, WrongTypesNameFileLineAndKey) {
  ExpectConfigError("client:\n  engines:\n    vllm:\n      command: 5\n", 4,
                    "client.engines.vllm.command",
                    "expected a list of strings or a command line string, got the value \"5\"");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      command: true\n", 4,
                    "client.engines.vllm.command", "expected a list of strings");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      command: {a: b}\n", 4,
                    "client.engines.vllm.command", "got a map");
  ExpectConfigError("client:\n  engines:\n    x:\n      command: [a, [b]]\n", 4,
                    "client.engines.x.command", "expected each argument to be a string");
  ExpectConfigError("client:\n  engines:\n    x:\n      command: 'a \"b'\n", 4,
                    "client.engines.x.command", "unterminated double quote");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      ready_timeout_s: soon\n", 4,
                    "client.engines.vllm.ready_timeout_s", "\"soon\" is not a number");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      ready_timeout_s: [1]\n", 4,
                    "client.engines.vllm.ready_timeout_s", "expected a number, got a list");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      health_path: [a]\n", 4,
                    "client.engines.vllm.health_path", "expected a string, got a list");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      env: [A]\n", 4,
                    "client.engines.vllm.env", "expected a map of variable names to values");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      env:\n        A: [1]\n", 5,
                    "client.engines.vllm.env.A", "expected a string, got a list");
  ExpectConfigError("client:\n  engines:\n    vllm: serve\n", 3, "client.engines.vllm",
                    "expected a map with command");
  ExpectConfigError("client:\n  engines: [vllm]\n", 2, "client.engines",
                    "expected a map of engine names");
}

TEST(EngineConfigTest, InvalidEnginesFailTheLoadNamingLineAndKey) {
  ExpectConfigError(R"(client:
  engines:
    vllm:
      ready_timeout_s: 900
      command: ["vllm", "serve", "{modle_path}"]
)",
                    5, "client.engines.vllm.command",
                    "engine \"vllm\": unknown placeholder {modle_path} in command (known: ");
  ExpectConfigError(R"(client:
  engines:
    mine:
      command: mine
      env:
        OK: "1"
        HF_HOME: "{cache}/hf"
)",
                    7, "client.engines.mine.env.HF_HOME",
                    "engine \"mine\": unknown placeholder {cache} in env HF_HOME");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      ready_timeout_s: 0\n", 4,
                    "client.engines.vllm.ready_timeout_s", "must be a number of seconds greater");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      memory_factor: 0.5\n", 4,
                    "client.engines.vllm.memory_factor", "must be a number from 1 to 100");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      memory_factor: lots\n", 4,
                    "client.engines.vllm.memory_factor", "\"lots\" is not a number");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      health_path: health\n", 4,
                    "client.engines.vllm.health_path", "must start with '/'");
  // A new engine needs a command; the error points at the engine.
  ExpectConfigError("client:\n  engines:\n    mine:\n      health_path: /h\n", 3,
                    "client.engines.mine.command", "engine \"mine\": the command is empty");
  ExpectConfigError("client:\n  engines:\n    vllm:\n      command: []\n", 4,
                    "client.engines.vllm.command", "the command is empty");
}

TEST(EngineConfigTest, UnknownEngineFieldsWarnAndDuplicatesWarn) {
  absl::StatusOr<Config> config = ParseConfig(R"(client:
  engines:
    vllm:
      comand: oops
    sglang:
      ready_timeout_s: 5
    sglang:
      ready_timeout_s: 7
)",
                                              "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->warnings.size(), 2u);
  EXPECT_EQ(config->warnings[0], "cfg:4: unknown key \"client.engines.vllm.comand\" (ignored)");
  EXPECT_EQ(config->warnings[1],
            "cfg:7: duplicate key \"client.engines.sglang\" (the last one wins)");
  EXPECT_EQ(config->client.engines.at("sglang").ready_timeout_s, 7);
}

TEST(EngineConfigTest, DefaultEngineMustBeKnown) {
  ExpectConfigError(
      "client:\n  heartbeat_interval_s: 1\n  default_engine: vlm\n", 3, "client.default_engine",
      "\"vlm\" is not a known engine (known: compose, llama-server, nim, sglang, vllm; ");
  // Configured engines count, wherever they appear in the file.
  absl::StatusOr<Config> config = ParseConfig(
      "client:\n  default_engine: mine\n  engines:\n    mine:\n      command: mine\n", "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  config = ParseConfig("client:\n  default_engine: sglang\n", "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->client.default_engine, "sglang");

  // Flags and the environment are checked too.
  Config flags;
  EXPECT_TRUE(SetConfigValue(flags, "client.default_engine", "llama-server", "flag").ok());
  absl::Status status =
      SetConfigValue(flags, "client.default_engine", "nope", "flag client.default_engine");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      Contains(Message(status), "flag client.default_engine: \"nope\" is not a known engine"));
}

class EngineLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "engine_config_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  absl::StatusOr<Config> Load(const std::string& yaml, std::map<std::string, std::string> env,
                              std::vector<std::pair<std::string, std::string>> flags = {}) {
    const std::string path = dir_ + "/gswarm.conf";
    std::ofstream(path) << yaml;
    env_ = std::move(env);
    LoadOptions options;
    options.path = path;
    options.env = &env_;
    options.overrides = std::move(flags);
    return LoadConfig(options);
  }

  std::string dir_;
  std::map<std::string, std::string> env_;
};

TEST_F(EngineLoadTest, DefaultEngineFromEnvironmentAndFlags) {
  const std::string yaml = "client:\n  engines:\n    mine:\n      command: mine\n";
  absl::StatusOr<Config> config = Load(yaml, {{"GSWARM_CLIENT_DEFAULT_ENGINE", "mine"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->client.default_engine, "mine");

  config = Load(yaml, {{"GSWARM_CLIENT_DEFAULT_ENGINE", "theirs"}});
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(Message(config.status()),
                       "environment GSWARM_CLIENT_DEFAULT_ENGINE: \"theirs\" is not a known "
                       "engine (known: compose, llama-server, mine, nim, sglang, vllm;"));

  config = Load(yaml, {{"GSWARM_CLIENT_DEFAULT_ENGINE", "theirs"}},
                {{"client.default_engine", "sglang"}});
  ASSERT_FALSE(config.ok());  // the environment is read, and checked, before the flags

  config = Load(yaml, {}, {{"client.default_engine", "sglang"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->client.default_engine, "sglang");
  config = Load(yaml, {}, {{"client.default_engine", "x"}});
  EXPECT_TRUE(Contains(Message(config.status()), "flag client.default_engine: \"x\" is not"));
}

TEST(EngineConfigTest, JsonShowsConfiguredEnginesWithSecretsMasked) {
  Config config;
  EXPECT_EQ(ConfigToJson(config)["client"]["engines"], nlohmann::json::object());
  EXPECT_EQ(ConfigToJson(config)["client"]["default_engine"], "vllm");
  EngineSpec spec = Spec({"e", "--port", "{port}"});
  spec.env = {{"HF_TOKEN", "hf_secret"}, {"OPENAI_API_KEY", "sk-secret"}, {"PLAIN", "1"}};
  config.client.engines["test"] = spec;
  nlohmann::json json = ConfigToJson(config);
  const nlohmann::json& engine = json["client"]["engines"]["test"];
  EXPECT_EQ(engine["command"], nlohmann::json::array({"e", "--port", "{port}"}));
  EXPECT_EQ(engine["health_path"], "/health");
  EXPECT_EQ(engine["ready_timeout_s"], 600.0);
  EXPECT_EQ(engine["env"]["HF_TOKEN"], "***");
  EXPECT_EQ(engine["env"]["OPENAI_API_KEY"], "***");
  EXPECT_EQ(engine["env"]["PLAIN"], "1");
  EXPECT_EQ(json.dump().find("secret"), std::string::npos);
}

TEST(EngineConfigTest, YamlShowsEnginesAndParsesBack) {
  Config config;
  config.client.default_engine = "my engine";
  EngineSpec odd = Spec({"/opt/e", "--cfg", "{{\"port\": {port}}}", "a \"quoted\" arg", ""});
  odd.name = "my engine";
  odd.health_path = "/v1/models";
  odd.ready_timeout_s = 12.5;
  odd.env = {{"HF_HOME", "{model_path}/hf"}, {"PLAIN", "yes"}};
  config.client.engines["my engine"] = odd;
  EngineSpec vllm = BuiltinEngines().at("vllm");
  vllm.ready_timeout_s = 1200;
  config.client.engines["vllm"] = vllm;

  const std::string yaml = ConfigToYaml(config);
  EXPECT_TRUE(Contains(yaml, "  default_engine: \"my engine\"\n  engines:\n"));
  EXPECT_TRUE(Contains(yaml, "\n    vllm:\n      command: [\"vllm\", \"serve\", \"{model_path}\""));
  EXPECT_TRUE(Contains(yaml, "\n    \"my engine\":\n"));
  absl::StatusOr<Config> parsed = ParseConfig(yaml, "yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
  EXPECT_TRUE(parsed->warnings.empty()) << yaml;
  EXPECT_EQ(*parsed, config) << yaml;

  // No engines configured: an empty map, still parsing back to the defaults.
  const std::string plain = ConfigToYaml(Config());
  EXPECT_TRUE(Contains(plain, "\n  engines: {}\n"));
  EXPECT_EQ(*ParseConfig(plain, "yaml"), Config());
}

// The commented-out example of the default file that starts at `first` (up to the next blank
// line), uncommented under `client:`; "" when there is none.
std::string UncommentedExample(const std::string& first) {
  std::istringstream in(DefaultConfigYaml());
  std::string yaml = "client:\n", line;
  bool in_example = false;
  while (std::getline(in, line)) {
    if (line == first) in_example = true;
    if (!in_example) continue;
    if (line.empty()) break;
    EXPECT_EQ(line.rfind("  # ", 0), 0u) << line;
    yaml += "  " + line.substr(4) + "\n";
  }
  return in_example ? yaml : "";
}

TEST(EngineConfigTest, TheDefaultFilesDiskLocationsExampleLoadsWhenUncommented) {
  const std::string yaml = UncommentedExample("  # disk_locations:");
  ASSERT_FALSE(yaml.empty());
  absl::StatusOr<Config> config = ParseConfig(yaml, "example");
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << yaml;
  EXPECT_TRUE(config->warnings.empty()) << config->warnings[0];
  EXPECT_EQ(config->client.disk_locations.at("secondary").path, "/mnt/data/gswarm-models");
  EXPECT_DOUBLE_EQ(config->client.disk_locations.at("primary").high_watermark, 0.9);
}

TEST(EngineConfigTest, TheDefaultFilesEngineExampleLoadsWhenUncommented) {
  const std::string yaml = UncommentedExample("  # engines:");
  ASSERT_FALSE(yaml.empty());
  absl::StatusOr<Config> config = ParseConfig(yaml, "example");
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << yaml;
  EXPECT_TRUE(config->warnings.empty()) << config->warnings[0];
  EXPECT_EQ(config->client.engines.size(), 3u);
  EXPECT_EQ(config->client.engines.at("vllm").ready_timeout_s, 1200);
  EXPECT_EQ(*RenderCommand(config->client.engines.at("my-other"), Vars()),
            (std::vector<std::string>{"my-other", "--config", "{\"port\": 8123}"}));
}

TEST(EngineConfigTest, AStopCommandLoadsAndRendersWithTheInstanceId) {
  absl::StatusOr<Config> config = ParseConfig(R"(client:
  engines:
    boxed:
      command: podman run --rm --name gswarm-{instance_id} -p {port}:8000 img
      stop_command: podman stop gswarm-{instance_id}
)",
                                              "cfg");
  ASSERT_TRUE(config.ok()) << config.status();
  const EngineSpec& boxed = config->client.engines.at("boxed");
  EXPECT_EQ(*RenderStopCommand(boxed, Vars()),
            (std::vector<std::string>{"podman", "stop", "gswarm-inst-1"}));
  absl::StatusOr<Config> back = ParseConfig(ConfigToYaml(*config), "rendered");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->client.engines.at("boxed"), boxed);
  ExpectConfigError(R"(client:
  engines:
    boxed:
      command: img
      stop_command: ["{instance_id}-stop"]
)",
                    5, "client.engines.boxed.stop_command", "without placeholders");
}

}  // namespace
}  // namespace gswarm::common
