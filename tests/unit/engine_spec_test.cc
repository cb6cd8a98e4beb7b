#include "common/engine_spec.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/config.h"

namespace gswarm::common {
namespace {

// Whether `text` holds `fragment`, showing `text` when it does not.
::testing::AssertionResult Contains(const std::string& text, const std::string& fragment) {
  if (text.find(fragment) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << fragment << "\" is not in:\n" << text;
}

EngineVars Vars() {
  EngineVars vars;
  vars.model_path = "/dev/shm/gswarm_models/llama";
  vars.model_file = "/dev/shm/gswarm_models/llama/model-q4.gguf";
  vars.model_name = "llama";
  vars.host = "127.0.0.1";
  vars.port = 8123;
  vars.gpu = "1";
  vars.gpu_memory_utilization = 0.85;
  vars.max_concurrent_requests = 64;
  return vars;
}

EngineSpec Spec(std::vector<std::string> command) {
  EngineSpec spec;
  spec.name = "test";
  spec.command = std::move(command);
  return spec;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST(EngineSpecTest, PresetsRenderWithEveryPlaceholderSubstituted) {
  const std::map<std::string, EngineSpec> presets = BuiltinEngines();
  ASSERT_EQ(presets.size(), 3u);
  for (const auto& [name, spec] : presets) {
    SCOPED_TRACE(name);
    EXPECT_EQ(spec.name, name);
    EXPECT_EQ(spec.health_path, "/health");
    EXPECT_GT(spec.ready_timeout_s, 0);
    ASSERT_TRUE(ValidateEngineSpec(spec).ok()) << ValidateEngineSpec(spec);
    absl::StatusOr<std::vector<std::string>> argv = RenderCommand(spec, Vars());
    ASSERT_TRUE(argv.ok()) << argv.status();
    ASSERT_EQ(argv->size(), spec.command.size());
    for (const std::string& arg : *argv) {
      EXPECT_EQ(arg.find_first_of("{}"), std::string::npos) << arg;
      EXPECT_FALSE(arg.empty());
    }
  }
  EXPECT_EQ(*RenderCommand(presets.at("vllm"), Vars()),
            (std::vector<std::string>{"vllm", "serve", "/dev/shm/gswarm_models/llama",
                                      "--served-model-name", "llama", "--host", "127.0.0.1",
                                      "--port", "8123", "--gpu-memory-utilization", "0.85",
                                      "--max-num-seqs", "64", "--enable-sleep-mode"}));
  EXPECT_EQ(*RenderCommand(presets.at("llama-server"), Vars()),
            (std::vector<std::string>{
                "llama-server", "--model", "/dev/shm/gswarm_models/llama/model-q4.gguf", "--alias",
                "llama", "--host", "127.0.0.1", "--port", "8123", "--parallel", "64",
                "--kv-unified", "--n-gpu-layers", "999"}));
  EXPECT_EQ(
      *RenderCommand(presets.at("sglang"), Vars()),
      (std::vector<std::string>{"python3", "-m", "sglang.launch_server", "--model-path",
                                "/dev/shm/gswarm_models/llama", "--served-model-name", "llama",
                                "--host", "127.0.0.1", "--port", "8123", "--mem-fraction-static",
                                "0.85", "--max-running-requests", "64", "--enable-memory-saver"}));
}

TEST(EngineSpecTest, EveryPlaceholderIsKnownAndRenders) {
  std::vector<std::string> command = {"engine"};
  for (const std::string& name : EnginePlaceholders()) command.push_back("{" + name + "}");
  absl::StatusOr<std::vector<std::string>> argv = RenderCommand(Spec(command), Vars());
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_EQ(*argv, (std::vector<std::string>{"engine", "/dev/shm/gswarm_models/llama",
                                             "/dev/shm/gswarm_models/llama/model-q4.gguf", "llama",
                                             "127.0.0.1", "8123", "1", "0.85", "64", "1"}));
}

TEST(EngineSpecTest, UnknownPlaceholderNamesEngineAndPlaceholder) {
  EngineSpec spec = BuiltinEngines().at("vllm");
  spec.command[2] = "{modle_path}";
  absl::Status status = ValidateEngineSpec(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(Message(status),
                       "engine \"vllm\": unknown placeholder {modle_path} in command (known: "
                       "{model_path}, {model_file}, {model_name}, {host}, {port}, {gpu}, "
                       "{gpu_memory_utilization}, {max_concurrent_requests}"));
  EXPECT_EQ(EngineSpecErrorField(status), "command");
  // Rendering refuses it the same way.
  EXPECT_EQ(RenderCommand(spec, Vars()).status(), status);
  // JSON in an argument must double its braces; the message says how.
  status = ValidateEngineSpec(Spec({"e", "--cfg", "{\"a\": 1}"}));
  EXPECT_TRUE(Contains(Message(status), "unknown placeholder {\"a\": 1}"));
  EXPECT_TRUE(Contains(Message(status), "write {{ and }} for literal braces"));
}

TEST(EngineSpecTest, LiteralBraces) {
  absl::StatusOr<std::vector<std::string>> argv =
      RenderCommand(Spec({"e", "{{\"port\": {port}}}", "{{model_path}}", "}}{{", "a{{b"}), Vars());
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_EQ(*argv,
            (std::vector<std::string>{"e", "{\"port\": 8123}", "{model_path}", "}{", "a{b"}));
}

TEST(EngineSpecTest, SeveralPlaceholdersAndTextInOneElement) {
  absl::StatusOr<std::vector<std::string>> argv = RenderCommand(
      Spec({"e", "--url=http://{host}:{port}/v1/{model_name}", "{port}{port}", "gpu{gpu}-x"}),
      Vars());
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_EQ(*argv, (std::vector<std::string>{"e", "--url=http://127.0.0.1:8123/v1/llama",
                                             "81238123", "gpu1-x"}));
}

TEST(EngineSpecTest, StrayBracesAreErrors) {
  absl::Status status = ValidateEngineSpec(Spec({"e", "--x={model_path"}));
  EXPECT_TRUE(Contains(Message(status), "engine \"test\": unmatched '{' in command"));
  EXPECT_TRUE(Contains(Message(status), "--x={model_path"));
  status = ValidateEngineSpec(Spec({"e", "a}b"}));
  EXPECT_TRUE(Contains(Message(status), "unmatched '}' in command \"a}b\""));
  status = ValidateEngineSpec(Spec({"e", "{}"}));
  EXPECT_TRUE(Contains(Message(status), "unknown placeholder {} in command"));
  status = ValidateEngineSpec(Spec({"e", "{PORT}"}));  // names are case-sensitive
  EXPECT_TRUE(Contains(Message(status), "unknown placeholder {PORT}"));
}

TEST(EngineSpecTest, ValidationNamesEngineAndField) {
  struct Case {
    EngineSpec spec;
    std::string field;
    std::string fragment;
  };
  std::vector<Case> cases;
  cases.push_back({Spec({}), "command", "engine \"test\": the command is empty"});
  cases.push_back({Spec({" ", "x"}), "command", "the program (the first element of command)"});
  cases.push_back({Spec({"{model_path}/run", "x"}), "command", "may not hold braces"});
  EngineSpec spec = Spec({"e"});
  spec.health_path = "health";
  cases.push_back({spec, "health_path", "health_path \"health\" must start with '/'"});
  spec.health_path = "";
  cases.push_back({spec, "health_path", "must start with '/'"});
  for (double timeout : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    spec = Spec({"e"});
    spec.ready_timeout_s = timeout;
    cases.push_back({spec, "ready_timeout_s", "ready_timeout_s must be a number of seconds"});
  }
  spec = Spec({"e"});
  spec.env["A=B"] = "x";
  cases.push_back({spec, "env.A=B", "env name \"A=B\""});
  spec = Spec({"e"});
  spec.env["HF_HOME"] = "{model_dir}/hf";
  cases.push_back({spec, "env.HF_HOME", "unknown placeholder {model_dir} in env HF_HOME"});
  spec = Spec({"e"});
  spec.name = "";
  cases.push_back({spec, "", "an engine needs a name"});
  for (const Case& c : cases) {
    absl::Status status = ValidateEngineSpec(c.spec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.fragment;
    EXPECT_TRUE(Contains(Message(status), c.fragment));
    EXPECT_EQ(EngineSpecErrorField(status), c.field) << status;
  }
  EXPECT_EQ(EngineSpecErrorField(absl::InternalError("x")), "");
}

TEST(EngineSpecTest, RenderEnvSubstitutes) {
  EngineSpec spec = Spec({"e"});
  spec.env = {{"MODEL_DIR", "{model_path}"}, {"PLAIN", "1"}, {"JSON", "{{\"gpu\": \"{gpu}\"}}"}};
  absl::StatusOr<std::map<std::string, std::string>> env = RenderEnv(spec, Vars());
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(*env, (std::map<std::string, std::string>{{"JSON", "{\"gpu\": \"1\"}"},
                                                      {"MODEL_DIR", "/dev/shm/gswarm_models/llama"},
                                                      {"PLAIN", "1"}}));
}

TEST(EngineSpecTest, AnEmptyValueTheCommandNeedsIsAnError) {
  EngineVars vars = Vars();
  vars.model_file.clear();
  absl::StatusOr<std::vector<std::string>> argv =
      RenderCommand(BuiltinEngines().at("llama-server"), vars);
  EXPECT_EQ(argv.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(Message(argv.status()),
                       "engine \"llama-server\": command uses {model_file}, which is empty"));
  // vLLM does not use {model_file}; a CPU instance has no GPU index.
  vars.gpu.clear();
  EXPECT_TRUE(RenderCommand(BuiltinEngines().at("vllm"), vars).ok());
  EXPECT_EQ(*RenderCommand(Spec({"e", "gpu={gpu}"}), vars),
            (std::vector<std::string>{"e", "gpu="}));
}

TEST(EngineSpecTest, NumbersRenderShort) {
  EngineVars vars = Vars();
  vars.gpu_memory_utilization = 0.9;
  EXPECT_EQ((*RenderCommand(Spec({"e", "{gpu_memory_utilization}"}), vars))[1], "0.9");
  vars.gpu_memory_utilization = 1;
  EXPECT_EQ((*RenderCommand(Spec({"e", "{gpu_memory_utilization}"}), vars))[1], "1");
}

TEST(SplitCommandLineTest, SplitsOnWhitespaceAndHonoursDoubleQuotes) {
  struct Case {
    std::string text;
    std::vector<std::string> args;
  };
  const Case cases[] = {
      {"vllm serve {model_path}", {"vllm", "serve", "{model_path}"}},
      {"  a \t b\n c  ", {"a", "b", "c"}},
      {"", {}},
      {"   ", {}},
      {R"(e --name "my model" "")", {"e", "--name", "my model", ""}},
      {R"(a"b c"d)", {"ab cd"}},
      {R"(e "say \"hi\"" "back\\slash" "a\b")", {"e", "say \"hi\"", "back\\slash", "a\\b"}},
      {R"(e 'single quotes' are\ plain)", {"e", "'single", "quotes'", "are\\", "plain"}},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::vector<std::string>> args = SplitCommandLine(c.text);
    ASSERT_TRUE(args.ok()) << c.text << ": " << args.status();
    EXPECT_EQ(*args, c.args) << c.text;
  }
  absl::StatusOr<std::vector<std::string>> bad = SplitCommandLine(R"(e "open)");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(Message(bad.status()), "unterminated double quote"));
}

// A temporary directory of fake engine binaries.
class FindExecutableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "engine_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    empty_dir_ = dir_ + "/empty";
    bin_dir_ = dir_ + "/bin";
    std::filesystem::create_directories(empty_dir_);
    std::filesystem::create_directories(bin_dir_ + "/a-directory");
    Write(bin_dir_ + "/fake-engine", 0755);
    Write(bin_dir_ + "/not-executable", 0644);
  }

  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  static void Write(const std::string& path, mode_t mode) {
    std::ofstream(path) << "#!/bin/sh\nexit 0\n";
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
  }

  static EngineSpec Engine(const std::string& program) {
    EngineSpec spec;
    spec.name = "vllm";
    spec.command = {program, "serve", "{model_path}"};
    return spec;
  }

  std::string dir_, empty_dir_, bin_dir_;
};

TEST_F(FindExecutableTest, SearchesThePathInOrder) {
  const std::string path = empty_dir_ + ":" + bin_dir_ + ":/usr/bin:/bin";
  absl::StatusOr<std::string> found = FindExecutable(Engine("fake-engine"), path);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, bin_dir_ + "/fake-engine");
  found = FindExecutable(Engine("sh"), path);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(*found == "/usr/bin/sh" || *found == "/bin/sh") << *found;
}

TEST_F(FindExecutableTest, MissingBinaryIsNotFoundWithTheSentence) {
  for (const std::string program : {"gswarm-no-such-engine", "not-executable", "a-directory"}) {
    absl::StatusOr<std::string> found =
        FindExecutable(Engine(program), empty_dir_ + ":" + bin_dir_);
    EXPECT_EQ(found.status().code(), absl::StatusCode::kNotFound) << program;
    EXPECT_EQ(Message(found.status()),
              "engine \"vllm\": \"" + program +
                  "\" is not on PATH (install it, or set client.engines.vllm.command)");
  }
}

TEST_F(FindExecutableTest, APathWithASlashIsUsedAsIs) {
  absl::StatusOr<std::string> found = FindExecutable(Engine(bin_dir_ + "/fake-engine"), "");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, bin_dir_ + "/fake-engine");

  found = FindExecutable(Engine(bin_dir_ + "/missing"), bin_dir_);
  EXPECT_EQ(found.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(Message(found.status()), "engine \"vllm\": \"" + bin_dir_ +
                                                    "/missing\" does not exist (install it, or set "
                                                    "client.engines.vllm.command)"));

  found = FindExecutable(Engine(bin_dir_ + "/not-executable"), bin_dir_);
  EXPECT_EQ(found.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(Message(found.status()), "is not an executable file"));

  // Relative to the working directory, returned absolute.
  const std::filesystem::path old_cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_);
  found = FindExecutable(Engine("./bin/fake-engine"), "");
  std::filesystem::current_path(old_cwd);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(std::filesystem::path(*found).lexically_normal(),
            std::filesystem::path(bin_dir_ + "/fake-engine"));
}

TEST_F(FindExecutableTest, ReadsTheProcessPath) {
  std::optional<std::string> old_path;
  if (const char* path = getenv("PATH")) old_path = path;
  ASSERT_EQ(setenv("PATH", (empty_dir_ + ":" + bin_dir_).c_str(), 1), 0);
  absl::StatusOr<std::string> found = FindExecutable(Engine("fake-engine"));
  absl::StatusOr<std::string> sh = FindExecutable(Engine("sh"));
  if (old_path) {
    setenv("PATH", old_path->c_str(), 1);
  } else {
    unsetenv("PATH");
  }
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, bin_dir_ + "/fake-engine");
  EXPECT_EQ(sh.status().code(), absl::StatusCode::kNotFound);  // not on this PATH
}

// client.engines and client.default_engine in the configuration.

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
  EXPECT_EQ(effective.size(), 6u);
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
  ExpectConfigError("client:\n  heartbeat_interval_s: 1\n  default_engine: vlm\n", 3,
                    "client.default_engine",
                    "\"vlm\" is not a known engine (known: llama-server, sglang, vllm; ");
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
                       "engine (known: llama-server, mine, sglang, vllm;"));

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

TEST(EngineConfigTest, TheDefaultFilesEngineExampleLoadsWhenUncommented) {
  std::istringstream in(DefaultConfigYaml());
  std::string yaml = "client:\n", line;
  bool in_example = false;
  while (std::getline(in, line)) {
    if (line == "  # engines:") in_example = true;
    if (!in_example) continue;
    ASSERT_EQ(line.rfind("  # ", 0), 0u) << line;
    yaml += "  " + line.substr(4) + "\n";
  }
  ASSERT_TRUE(in_example);
  absl::StatusOr<Config> config = ParseConfig(yaml, "example");
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << yaml;
  EXPECT_TRUE(config->warnings.empty()) << config->warnings[0];
  EXPECT_EQ(config->client.engines.size(), 3u);
  EXPECT_EQ(config->client.engines.at("vllm").ready_timeout_s, 1200);
  EXPECT_EQ(*RenderCommand(config->client.engines.at("my-other"), Vars()),
            (std::vector<std::string>{"my-other", "--config", "{\"port\": 8123}"}));
}

}  // namespace
}  // namespace gswarm::common
