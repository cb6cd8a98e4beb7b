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
#include "tests/unit/engine_test_util.h"

namespace gswarm::common {
namespace {

TEST(EngineSpecTest, PresetsRenderWithEveryPlaceholderSubstituted) {
  const std::map<std::string, EngineSpec> presets = BuiltinEngines();
  ASSERT_EQ(presets.size(), 5u);
  for (const auto& [name, spec] : presets) {
    SCOPED_TRACE(name);
    EXPECT_EQ(spec.name, name);
    const bool container = name == "nim" || name == "compose";
    EXPECT_EQ(spec.health_path, container ? "/v1/health/ready" : "/health");
    EXPECT_EQ(spec.stop_command.empty(), !container);
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
  // The containers are named after the instance, which their stop command reaches.
  EXPECT_EQ(*RenderCommand(presets.at("nim"), Vars()),
            (std::vector<std::string>{"docker", "run", "--rm", "--name", "gswarm-inst-1", "--gpus",
                                      "device=1", "--shm-size", "16g", "-p", "127.0.0.1:8123:8000",
                                      "-v", "/dev/shm/gswarm_models/llama:/opt/models/model:ro",
                                      "-e", "NIM_MODEL_NAME=/opt/models/model", "-e",
                                      "NIM_SERVED_MODEL_NAME=llama",
                                      "nvcr.io/nim/nvidia/llm-nim:latest"}));
  EXPECT_EQ(*RenderStopCommand(presets.at("nim"), Vars()),
            (std::vector<std::string>{"docker", "stop", "gswarm-inst-1"}));
  EXPECT_EQ(*RenderStopCommand(presets.at("compose"), Vars()),
            (std::vector<std::string>{"docker", "compose", "stop", "llama"}));
  EXPECT_EQ(RenderEnv(presets.at("compose"), Vars())->at("GSWARM_PORT"), "8123");
  EXPECT_TRUE(RenderStopCommand(presets.at("vllm"), Vars())->empty());
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
  EXPECT_EQ(*argv,
            (std::vector<std::string>{"engine", "/dev/shm/gswarm_models/llama",
                                      "/dev/shm/gswarm_models/llama/model-q4.gguf", "llama",
                                      "127.0.0.1", "8123", "1", "0.85", "64", "1", "inst-1"}));
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

}  // namespace
}  // namespace gswarm::common
