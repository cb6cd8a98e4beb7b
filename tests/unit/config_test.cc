#include "common/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/paths.h"

namespace gswarm::common {
namespace {

// The "Sample Configuration File" from the seed, verbatim (including the blank line with spaces).
constexpr char kSeedSample[] = R"(host:
  host: "0.0.0.0"
  port: 8100
  model_cache_dir: "~/.cache/gswarm/models"
  huggingface_cache_dir: "~/.cache/huggingface"
  auto_discover_models: true
  cleanup_on_shutdown: true
  
  storage_devices:
    disk:
      enabled: true
      path: "~/.cache/gswarm/models"
    dram:
      enabled: true
      path: "/dev/shm/gswarm_models"
      max_size_gb: 64

client:
  host_url: "http://localhost:8100"
  model_cache_dir: "~/.cache/gswarm/models"
  dram_cache_size: 16
  gpu_memory_fraction: 0.9
  default_gpu_memory_utilization: 0.90
  max_concurrent_requests: 256
)";

// Each test runs with HOME in its own temporary directory; HOME is restored afterwards.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* home = getenv("HOME")) old_home_ = home;
    std::string pattern = (std::filesystem::temp_directory_path() / "config_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    ASSERT_EQ(setenv("HOME", dir_.c_str(), 1), 0);
  }

  void TearDown() override {
    if (old_home_) {
      setenv("HOME", old_home_->c_str(), 1);
    } else {
      unsetenv("HOME");
    }
    std::error_code ec;
    std::filesystem::permissions(dir_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(dir_, ec);
  }

  std::string WriteConfig(const std::string& contents, const std::string& name = "gswarm.conf") {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << contents;
    return path;
  }

  // Loads `path` with only `env` as the environment.
  absl::StatusOr<Config> Load(const std::string& path, std::map<std::string, std::string> env = {},
                              std::vector<std::pair<std::string, std::string>> flags = {}) {
    env_ = std::move(env);
    LoadOptions options;
    options.path = path;
    options.env = &env_;
    options.overrides = std::move(flags);
    return LoadConfig(options);
  }

  // Asserts that `yaml` fails to load with a message naming the file, the 1-based line and the
  // key, and containing `fragment`.
  void ExpectFileError(const std::string& yaml, int line, const std::string& key,
                       const std::string& fragment) {
    SCOPED_TRACE(yaml);
    std::string path = WriteConfig(yaml);
    absl::StatusOr<Config> config = Load(path);
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    std::string message(config.status().message());
    EXPECT_NE(message.find(path + ":" + std::to_string(line) + ": " + key + ": "),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }

  std::string dir_;
  std::optional<std::string> old_home_;
  std::map<std::string, std::string> env_;
};

TEST(ConfigDefaultsTest, StructDefaults) {
  Config config;
  EXPECT_EQ(config.host.host, "0.0.0.0");
  EXPECT_EQ(config.host.port, 8100);
  EXPECT_EQ(config.host.grpc_port, 8101);
  EXPECT_EQ(config.host.dram.max_size_gb, 64);
  EXPECT_EQ(config.client.host_url, "http://localhost:8100");
  EXPECT_EQ(config.client.data_port, 8102);
  EXPECT_EQ(config.client.heartbeat_interval_s, 2);
  EXPECT_EQ(config.client.max_concurrent_requests, 256);
}

TEST_F(ConfigTest, SeedSampleLoadsUnchanged) {
  std::string path = WriteConfig(kSeedSample);
  absl::StatusOr<Config> config = Load(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->warnings.empty()) << config->warnings[0];
  EXPECT_EQ(config->path, path);
  EXPECT_EQ(config->host.host, "0.0.0.0");
  EXPECT_EQ(config->host.port, 8100);
  EXPECT_EQ(config->host.model_cache_dir, "~/.cache/gswarm/models");  // "~" kept as written
  EXPECT_EQ(config->host.huggingface_cache_dir, "~/.cache/huggingface");
  EXPECT_TRUE(config->host.auto_discover_models);
  EXPECT_TRUE(config->host.cleanup_on_shutdown);
  EXPECT_TRUE(config->host.disk.enabled);
  EXPECT_EQ(config->host.disk.path, "~/.cache/gswarm/models");
  EXPECT_TRUE(config->host.dram.enabled);
  EXPECT_EQ(config->host.dram.path, "/dev/shm/gswarm_models");
  EXPECT_EQ(config->host.dram.max_size_gb, 64);
  EXPECT_EQ(config->client.host_url, "http://localhost:8100");
  EXPECT_EQ(config->client.model_cache_dir, "~/.cache/gswarm/models");
  EXPECT_EQ(config->client.dram_cache_size, 16);
  EXPECT_EQ(config->client.gpu_memory_fraction, 0.9);
  EXPECT_EQ(config->client.default_gpu_memory_utilization, 0.9);
  EXPECT_EQ(config->client.max_concurrent_requests, 256);
}

TEST_F(ConfigTest, ValuesDifferentFromDefaultsAreRead) {
  absl::StatusOr<Config> config = ParseConfig(R"(
host:
  port: 9000
  auto_discover_models: no
  storage_devices: {dram: {max_size_gb: 0.5, enabled: false}}
  tls: {cert_file: /etc/c.pem, key_file: /etc/c.key}
client:
  node_id: gpu-3
  gpu_memory_fraction: 1
  heartbeat_interval_s: 0.25
)",
                                              "inline");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.port, 9000);
  EXPECT_FALSE(config->host.auto_discover_models);
  EXPECT_EQ(config->host.dram.max_size_gb, 0.5);
  EXPECT_FALSE(config->host.dram.enabled);
  EXPECT_EQ(config->host.tls.cert_file, "/etc/c.pem");
  EXPECT_EQ(config->host.tls.key_file, "/etc/c.key");
  EXPECT_EQ(config->client.node_id, "gpu-3");
  EXPECT_EQ(config->client.gpu_memory_fraction, 1.0);
  EXPECT_EQ(config->client.heartbeat_interval_s, 0.25);
  EXPECT_EQ(config->host.disk, Config().host.disk);
}

TEST_F(ConfigTest, EmptyAndCommentOnlyFilesAreDefaults) {
  for (const char* text : {"", "# nothing here\n\n   # still nothing\n", "host:\nclient:\n"}) {
    SCOPED_TRACE(text);
    std::string path = WriteConfig(text);
    absl::StatusOr<Config> config = Load(path);
    ASSERT_TRUE(config.ok()) << config.status();
    Config expected;
    expected.path = path;
    EXPECT_EQ(*config, expected);
  }
}

TEST_F(ConfigTest, NoFileMeansDefaultsSilently) {
  absl::StatusOr<Config> config = Load("");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, Config());
  EXPECT_EQ(config->path, "");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/.gswarm.conf"));
}

TEST_F(ConfigTest, DefaultPathIsReadFromHome) {
  std::string path = WriteConfig("host:\n  port: 9100\n", ".gswarm.conf");
  absl::StatusOr<Config> config = Load("");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->path, path);
  EXPECT_EQ(config->host.port, 9100);
}

TEST_F(ConfigTest, GswarmConfigVariableSelectsFile) {
  WriteConfig("host:\n  port: 9100\n", ".gswarm.conf");
  std::string other = WriteConfig("host:\n  port: 9200\n", "other.conf");
  absl::StatusOr<Config> config = Load("", {{"GSWARM_CONFIG", other}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->path, other);
  EXPECT_EQ(config->host.port, 9200);
}

TEST_F(ConfigTest, PrecedenceFlagOverEnvOverFileOverDefault) {
  std::string path = WriteConfig(
      "host:\n  port: 9001\n  grpc_port: 9002\n  host: 10.0.0.1\nclient:\n  node_id: from-file\n");
  absl::StatusOr<Config> config =
      Load(path, {{"GSWARM_HOST_PORT", "9011"}, {"GSWARM_HOST_GRPC_PORT", "9012"}},
           {{"host.port", "9021"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.port, 9021);        // flag over env and file
  EXPECT_EQ(config->host.grpc_port, 9012);   // env over file
  EXPECT_EQ(config->host.host, "10.0.0.1");  // file over default
  EXPECT_EQ(config->client.node_id, "from-file");
  EXPECT_EQ(config->client.data_port, 8102);  // default
  // What was given, wherever from, is told apart from a default (the agent follows the cluster's
  // tier layout only where its own config is silent).
  EXPECT_EQ(config->explicit_keys,
            (std::set<std::string>{"host.port", "host.grpc_port", "host.host", "client.node_id"}));
}

TEST_F(ConfigTest, EnvironmentNamesFollowKeyPaths) {
  absl::StatusOr<Config> config =
      Load("", {{"GSWARM_CLIENT_NODE_ID", "gpu-7"},
                {"GSWARM_HOST_STORAGE_DEVICES_DRAM_MAX_SIZE_GB", "12.5"},
                {"GSWARM_HOST_STORAGE_DEVICES_DISK_ENABLED", "Off"},
                {"GSWARM_HOST_INSECURE", "YES"},
                {"GSWARM_CLIENT_HOST_GRPC", "h:1"},
                {"GSWARM_UNRELATED", "ignored"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->client.node_id, "gpu-7");
  EXPECT_EQ(config->host.dram.max_size_gb, 12.5);
  EXPECT_FALSE(config->host.disk.enabled);
  EXPECT_TRUE(config->host.insecure);
  EXPECT_EQ(config->client.host_grpc, "h:1");
}

TEST_F(ConfigTest, TokenVariableSetsBothTokensAndSpecificOnesWin) {
  absl::StatusOr<Config> both = Load("", {{"GSWARM_TOKEN", "t0"}});
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->host.auth_token, "t0");
  EXPECT_EQ(both->client.auth_token, "t0");

  absl::StatusOr<Config> specific = Load("", {{"GSWARM_TOKEN", "t0"},
                                              {"GSWARM_HOST_AUTH_TOKEN", "th"},
                                              {"GSWARM_CLIENT_AUTH_TOKEN", "tc"}});
  ASSERT_TRUE(specific.ok()) << specific.status();
  EXPECT_EQ(specific->host.auth_token, "th");
  EXPECT_EQ(specific->client.auth_token, "tc");
}

TEST_F(ConfigTest, BadEnvironmentValueNamesTheVariable) {
  absl::StatusOr<Config> config = Load("", {{"GSWARM_HOST_PORT", "abc"}});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(), "environment GSWARM_HOST_PORT: \"abc\" is not an integer");

  config = Load("", {{"GSWARM_CLIENT_DATA_PORT", "0"}});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "environment GSWARM_CLIENT_DATA_PORT: 0 is out of range (1-65535)");

  config = Load("", {{"GSWARM_HOST_AUTO_DISCOVER_MODELS", "maybe"}});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("environment GSWARM_HOST_AUTO_DISCOVER_MODELS: "
                                           "\"maybe\" is not a boolean"),
            absl::string_view::npos)
      << config.status();
}

TEST_F(ConfigTest, BadFlagNamesTheFlag) {
  absl::StatusOr<Config> config = Load("", {}, {{"host.port", "70000"}});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(), "flag host.port: 70000 is out of range (1-65535)");

  config = Load("", {}, {{"host.prot", "1"}});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(), "flag host.prot: unknown key \"host.prot\"");
}

TEST_F(ConfigTest, WrongTypesAreErrorsNamingFileLineAndKey) {
  ExpectFileError("host:\n  port: abc\n", 2, "host.port", "\"abc\" is not an integer");
  ExpectFileError("host:\n  host: x\n\n  port: 8100.5\n", 4, "host.port", "is not an integer");
  ExpectFileError("host:\n  auto_discover_models: sometimes\n", 2, "host.auto_discover_models",
                  "is not a boolean");
  ExpectFileError("client:\n  dram_cache_size: 16GB\n", 2, "client.dram_cache_size",
                  "\"16GB\" is not a number");
  ExpectFileError("client:\n  max_concurrent_requests: \"many\"\n", 2,
                  "client.max_concurrent_requests", "is not an integer");
  ExpectFileError("host:\n  port:\n    a: 1\n", 2, "host.port", "expected an integer, got a map");
  ExpectFileError("host:\n  host: [a, b]\n", 2, "host.host", "expected a string, got a list");
  ExpectFileError("host:\n  grpc_port:\n", 2, "host.grpc_port", "got no value");
  ExpectFileError("# comment\nhost: 8100\n", 2, "host", "expected a section");
  ExpectFileError("host:\n  storage_devices:\n    dram: big\n", 3, "host.storage_devices.dram",
                  "expected a section");
  ExpectFileError("client:\n  - a\n", 1, "client", "got a list");
}

TEST_F(ConfigTest, NegativeSizesAreErrors) {
  ExpectFileError("host:\n  storage_devices:\n    dram:\n      max_size_gb: -1\n", 4,
                  "host.storage_devices.dram.max_size_gb", "-1 must not be negative");
  ExpectFileError("host:\n  storage_devices:\n    disk: {max_size_gb: -0.5}\n", 3,
                  "host.storage_devices.disk.max_size_gb", "must not be negative");
  ExpectFileError("client:\n  model_cache_dir: /m\n  dram_cache_size: -16\n", 3,
                  "client.dram_cache_size", "-16 must not be negative");
}

TEST_F(ConfigTest, PortsOutOfRangeAreErrors) {
  ExpectFileError("host:\n  host: \"0.0.0.0\"\n  port: 8100\n  grpc_port: 8101\n  port: 70000\n", 5,
                  "host.port", "70000 is out of range (1-65535)");
  ExpectFileError("host:\n  grpc_port: 0\n", 2, "host.grpc_port", "0 is out of range (1-65535)");
  ExpectFileError("client:\n  data_port: -8102\n", 2, "client.data_port",
                  "-8102 is out of range (1-65535)");
  ExpectFileError("client:\n  data_port: 99999999999999\n", 2, "client.data_port",
                  "is out of range (1-65535)");
}

TEST_F(ConfigTest, FractionsAndLimitsAreValidated) {
  ExpectFileError("client:\n  gpu_memory_fraction: 0\n", 2, "client.gpu_memory_fraction",
                  "0 is out of range");
  ExpectFileError("client:\n  gpu_memory_fraction: 1.5\n", 2, "client.gpu_memory_fraction",
                  "1.5 is out of range");
  ExpectFileError("client:\n  default_gpu_memory_utilization: -0.1\n", 2,
                  "client.default_gpu_memory_utilization", "is out of range");
  ExpectFileError("client:\n  heartbeat_interval_s: 0\n", 2, "client.heartbeat_interval_s",
                  "0 must be greater than 0");
  ExpectFileError("client:\n  heartbeat_interval_s: .nan\n", 2, "client.heartbeat_interval_s",
                  "is not a number");
  ExpectFileError("client:\n  max_concurrent_requests: 0\n", 2, "client.max_concurrent_requests",
                  "0 must be at least 1");
}

TEST_F(ConfigTest, InvalidYamlNamesTheLine) {
  std::string path = WriteConfig("host:\n  port: 8100\nclient: [unclosed\n\n");
  absl::StatusOr<Config> config = Load(path);
  ASSERT_FALSE(config.ok());
  std::string message(config.status().message());
  EXPECT_NE(message.find(path + ":"), std::string::npos) << message;
  EXPECT_NE(message.find("invalid YAML"), std::string::npos) << message;

  path = WriteConfig("host:\n  port: 8100\n   bad: indent\n");
  config = Load(path);
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find(path + ":3: invalid YAML"), absl::string_view::npos)
      << config.status();
}

TEST_F(ConfigTest, TopLevelMustBeAMap) {
  for (const char* text : {"- host\n- client\n", "just a string\n"}) {
    std::string path = WriteConfig(text);
    absl::StatusOr<Config> config = Load(path);
    ASSERT_FALSE(config.ok()) << text;
    EXPECT_NE(config.status().message().find(path + ":1: expected a map"), absl::string_view::npos)
        << config.status();
  }
}

TEST_F(ConfigTest, UnknownKeysAreWarningsNotErrors) {
  std::string path = WriteConfig(
      "host:\n  port: 9000\n  colour: blue\n  storage_devices:\n    nvme: {path: /x}\n"
      "client:\n  foo: 1\nextras:\n  a: b\n");
  absl::StatusOr<Config> config = Load(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.port, 9000);
  ASSERT_EQ(config->warnings.size(), 4u);
  EXPECT_EQ(config->warnings[0], path + ":3: unknown key \"host.colour\" (ignored)");
  EXPECT_EQ(config->warnings[1], path + ":5: unknown key \"host.storage_devices.nvme\" (ignored)");
  EXPECT_EQ(config->warnings[2], path + ":7: unknown key \"client.foo\" (ignored)");
  EXPECT_EQ(config->warnings[3], path + ":8: unknown key \"extras\" (ignored)");
}

TEST_F(ConfigTest, DuplicateKeyWarnsAndLastWins) {
  absl::StatusOr<Config> config = ParseConfig("host:\n  port: 1\n  port: 2\n", "f");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.port, 2);
  ASSERT_EQ(config->warnings.size(), 1u);
  EXPECT_EQ(config->warnings[0], "f:3: duplicate key \"host.port\" (the last one wins)");
}

TEST_F(ConfigTest, EmptyStringValueIsEmpty) {
  absl::StatusOr<Config> config = ParseConfig("client:\n  node_id:\n  host_url: ''\n", "f");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->client.node_id, "");
  EXPECT_EQ(config->client.host_url, "");
}

TEST_F(ConfigTest, UnreadableDirectoryIsAnError) {
  std::string path = dir_ + "/a-directory";
  ASSERT_TRUE(std::filesystem::create_directory(path));
  absl::StatusOr<Config> config = Load(path);
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find(path), absl::string_view::npos) << config.status();
}

TEST_F(ConfigTest, UnreadableFileIsAnError) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads any file; the directory case covers this";
  std::string path = WriteConfig(kSeedSample);
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  absl::StatusOr<Config> config = Load(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(config.status().message().find(path), absl::string_view::npos) << config.status();
}

TEST_F(ConfigTest, ExplicitMissingPathIsAnError) {
  std::string path = dir_ + "/missing.conf";
  LoadOptions options;
  options.path = path;
  options.create_if_missing = true;
  std::map<std::string, std::string> env;
  options.env = &env;
  absl::StatusOr<Config> config = LoadConfig(options);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(config.status().message(),
            "config file " + path + " does not exist (omit --config to use ~/.gswarm.conf)");
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(ConfigTest, MissingDefaultFileIsCreatedWith0600) {
  LoadOptions options;
  options.create_if_missing = true;
  std::map<std::string, std::string> env;
  options.env = &env;
  absl::StatusOr<Config> config = LoadConfig(options);
  ASSERT_TRUE(config.ok()) << config.status();
  std::string path = dir_ + "/.gswarm.conf";
  EXPECT_EQ(config->path, path);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(*ReadFile(path), DefaultConfigYaml());
  Config expected;
  expected.path = path;
  EXPECT_EQ(*config, expected);
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().string(), path) << "temporary file left behind";
  }

  // The second load reads the file written by the first.
  config = LoadConfig(options);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, expected);
}

TEST_F(ConfigTest, MissingGswarmConfigFileIsCreatedWithItsDirectory) {
  std::string path = dir_ + "/etc/gswarm/gswarm.conf";
  LoadOptions options;
  options.create_if_missing = true;
  std::map<std::string, std::string> env = {{"GSWARM_CONFIG", path}};
  options.env = &env;
  absl::StatusOr<Config> config = LoadConfig(options);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->path, path);
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST_F(ConfigTest, DefaultConfigYamlParsesToDefaults) {
  std::string yaml = DefaultConfigYaml();
  absl::StatusOr<Config> config = ParseConfig(yaml, "default");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, Config());
  // It keeps the seed's layout and adds GSwarm's keys.
  for (const char* line :
       {"host:\n", "  port: 8100", "  grpc_port: 8101", "  storage_devices:\n", "    dram:\n",
        "      max_size_gb: 64", "client:\n", "  dram_cache_size: 16", "  data_port: 8102",
        "  heartbeat_interval_s: 2", "  node_id: \"\"", "  host_grpc: \"\"",
        "  dram_cache_dir: \"/dev/shm/gswarm_models\""}) {
    EXPECT_NE(yaml.find(line), std::string::npos) << line;
  }
}

TEST_F(ConfigTest, ConfigToJsonNestsLikeTheFileAndMasksSecrets) {
  Config config;
  config.host.auth_token = "secret-host";
  config.client.auth_token = "";
  nlohmann::json json = ConfigToJson(config);
  EXPECT_EQ(json["host"]["auth_token"], "***");
  EXPECT_EQ(json["client"]["auth_token"], "");
  EXPECT_EQ(json.dump().find("secret-host"), std::string::npos);
  EXPECT_TRUE(json["host"]["port"].is_number_integer());
  EXPECT_EQ(json["host"]["port"], 8100);
  EXPECT_TRUE(json["host"]["storage_devices"]["dram"]["max_size_gb"].is_number_float());
  EXPECT_EQ(json["host"]["storage_devices"]["dram"]["max_size_gb"], 64.0);
  EXPECT_EQ(json["host"]["storage_devices"]["disk"]["path"], "~/.cache/gswarm/models");
  EXPECT_TRUE(json["host"]["storage_devices"]["disk"]["enabled"].is_boolean());
  EXPECT_EQ(json["host"]["tls"]["cert_file"], "");
  EXPECT_EQ(json["client"]["gpu_memory_fraction"], 0.9);
  EXPECT_EQ(json["client"]["max_concurrent_requests"], 256);
  EXPECT_EQ(json.size(), 2u);
}

TEST_F(ConfigTest, ConfigToYamlParsesBack) {
  Config config;
  config.host.port = 9000;
  config.host.dram.max_size_gb = 0.1;
  config.host.tls.ca_file = "/etc/ca \"quoted\".pem";
  config.client.node_id = "123";  // a string that looks like a number
  config.client.host_grpc = "h:1 # not a comment";
  config.client.heartbeat_interval_s = 1.5;
  config.host.auth_token = "secret";
  std::string yaml = ConfigToYaml(config);
  EXPECT_EQ(yaml.find("secret"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("auth_token: \"***\""), std::string::npos) << yaml;
  absl::StatusOr<Config> parsed = ParseConfig(yaml, "yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
  EXPECT_TRUE(parsed->warnings.empty()) << yaml;
  config.host.auth_token = "***";  // masked on the way out
  EXPECT_EQ(*parsed, config) << yaml;
}

TEST_F(ConfigTest, HostGrpcTarget) {
  ClientConfig client;
  EXPECT_EQ(HostGrpcTarget(client), "localhost:8101");
  const std::pair<const char*, const char*> cases[] = {
      {"http://gpu-host:8100", "gpu-host:8101"},
      {"https://gpu-host.example.com:443/", "gpu-host.example.com:8101"},
      {"10.1.2.3:8100", "10.1.2.3:8101"},
      {"gpu-host", "gpu-host:8101"},
      {"http://[::1]:8100", "[::1]:8101"},
      {"[fe80::1]", "[fe80::1]:8101"},
      {"http://user:pw@h:8100/api", "h:8101"},
      {"", "localhost:8101"},
  };
  for (const auto& [url, target] : cases) {
    client.host_url = url;
    EXPECT_EQ(HostGrpcTarget(client), target) << url;
  }
  client.host_grpc = "other:9999";
  EXPECT_EQ(HostGrpcTarget(client), "other:9999");
}

TEST_F(ConfigTest, SetConfigValueParsesByType) {
  Config config;
  ASSERT_TRUE(SetConfigValue(config, "client.dram_cache_size", "32", "flag x").ok());
  EXPECT_EQ(config.client.dram_cache_size, 32);
  ASSERT_TRUE(SetConfigValue(config, "host.port", " 9000 ", "flag x").ok());
  EXPECT_EQ(config.host.port, 9000);
  for (const char* yes : {"true", "TRUE", "yes", "On", "1"}) {
    config.host.insecure = false;
    ASSERT_TRUE(SetConfigValue(config, "host.insecure", yes, "flag x").ok()) << yes;
    EXPECT_TRUE(config.host.insecure) << yes;
  }
  for (const char* no : {"false", "No", "OFF", "0"}) {
    config.host.insecure = true;
    ASSERT_TRUE(SetConfigValue(config, "host.insecure", no, "flag x").ok()) << no;
    EXPECT_FALSE(config.host.insecure) << no;
  }
  ASSERT_TRUE(SetConfigValue(config, "client.model_cache_dir", "~/m", "flag x").ok());
  EXPECT_EQ(config.client.model_cache_dir, "~/m");  // not expanded
}

TEST_F(ConfigTest, SetConfigValueRejectsBadValues) {
  Config config;
  const Config before = config;
  const std::tuple<const char*, const char*, const char*> cases[] = {
      {"client.dram_cache_size", "-1", "flag client.dram_cache_size: -1 must not be negative"},
      {"client.dram_cache_size", "lots", "flag client.dram_cache_size: \"lots\" is not a number"},
      {"client.dram_cache_size", "inf", "flag client.dram_cache_size: \"inf\" is not a number"},
      {"host.port", "", "flag host.port: \"\" is not an integer"},
      {"host.port", "65536", "flag host.port: 65536 is out of range (1-65535)"},
      {"client.max_concurrent_requests", "3000000000",
       "flag client.max_concurrent_requests: 3000000000 is out of range for an integer"},
      {"host.insecure", "2", "flag host.insecure: \"2\" is not a boolean (use true or false)"},
      {"client.gpu_memory_fraction", "1.01",
       "flag client.gpu_memory_fraction: 1.01 is out of range (must be > 0 and <= 1)"},
      {"client.nope", "1", "flag client.nope: unknown key \"client.nope\""},
      {"host.storage_devices", "1",
       "flag host.storage_devices: unknown key \"host.storage_devices\" (a section, not a key)"},
  };
  for (const auto& [key, value, message] : cases) {
    absl::Status status = SetConfigValue(config, key, value, std::string("flag ") + key);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << key << "=" << value;
    EXPECT_EQ(status.message(), message);
  }
  EXPECT_EQ(config, before);  // a rejected value changes nothing
}

TEST(ConfigDefaultsTest, RouterDefaults) {
  HostConfig host;
  EXPECT_TRUE(host.preload.empty());
  EXPECT_TRUE(host.autoload);
  EXPECT_EQ(host.router_queue_size, 64);
  EXPECT_EQ(host.router_queue_timeout_s, 60);
}

TEST_F(ConfigTest, PreloadFromYamlLists) {
  for (const char* text : {"host:\n  preload: [llama2-7b, \"qwen2.5_0.5b\"]\n",
                           "host:\n  preload:\n    - llama2-7b\n    -\n    - qwen2.5_0.5b\n"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<Config> config = ParseConfig(text, "f");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->host.preload, (std::vector<std::string>{"llama2-7b", "qwen2.5_0.5b"}));
    EXPECT_TRUE(config->warnings.empty());
  }
}

TEST_F(ConfigTest, PreloadFromACommaSeparatedString) {
  absl::StatusOr<Config> config = ParseConfig("host:\n  preload: \" a ,, b2 , \"\n", "f");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.preload, (std::vector<std::string>{"a", "b2"}));

  config = ParseConfig("host:\n  preload: only-one\n", "f");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.preload, std::vector<std::string>{"only-one"});

  for (const char* empty :
       {"host:\n  preload:\n", "host:\n  preload: \"\"\n", "host:\n  preload: []\n"}) {
    config = ParseConfig(empty, "f");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_TRUE(config->host.preload.empty()) << empty;
  }
}

TEST_F(ConfigTest, PreloadFromEnvironmentAndFlag) {
  std::string path = WriteConfig("host:\n  preload: [from-file]\n");
  absl::StatusOr<Config> config = Load(path, {{"GSWARM_HOST_PRELOAD", "a, b"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.preload, (std::vector<std::string>{"a", "b"}));

  config = Load(path, {{"GSWARM_HOST_PRELOAD", "a, b"}}, {{"host.preload", "c,d.e"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host.preload, (std::vector<std::string>{"c", "d.e"}));

  config = Load(path, {}, {{"host.preload", ""}});  // a flag can empty the list
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->host.preload.empty());
}

TEST_F(ConfigTest, PreloadRejectsBadModelNames) {
  ExpectFileError("host:\n  preload:\n    - good\n    - ../etc\n", 4, "host.preload",
                  "model name \"../etc\" is not valid");
  ExpectFileError("host:\n  port: 8100\n  preload: \"ok, a/b\"\n", 3, "host.preload",
                  "model name \"a/b\" is not valid");
  ExpectFileError("host:\n  preload: [a..b]\n", 2, "host.preload", "\"a..b\"");
  ExpectFileError("host:\n  preload: [-lead]\n", 2, "host.preload", "\"-lead\"");
  ExpectFileError("host:\n  preload: [" + std::string(129, 'm') + "]\n", 2, "host.preload",
                  "is not valid");
  ExpectFileError("host:\n  preload:\n    name: x\n", 2, "host.preload",
                  "expected a list of model names, got a map");
  ExpectFileError("host:\n  preload:\n    - [a, b]\n", 3, "host.preload",
                  "expected each entry to be a string, got a list");

  Config config;
  config.host.preload = {"kept"};
  absl::Status status = SetConfigValue(config, "host.preload", "a, b c", "flag host.preload");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("flag host.preload: model name \"b c\" is not valid"),
            absl::string_view::npos)
      << status;
  EXPECT_EQ(config.host.preload, std::vector<std::string>{"kept"});  // unchanged

  absl::StatusOr<Config> loaded = Load("", {{"GSWARM_HOST_PRELOAD", "a,.hidden"}});
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("environment GSWARM_HOST_PRELOAD: model name "
                                           "\".hidden\" is not valid"),
            absl::string_view::npos)
      << loaded.status();
}

TEST_F(ConfigTest, RouterQueueLimitsAreValidated) {
  absl::StatusOr<Config> config = ParseConfig(
      "host:\n  autoload: false\n  router_queue_size: 0\n  router_queue_timeout_s: 0.5\n", "f");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->host.autoload);
  EXPECT_EQ(config->host.router_queue_size, 0);
  EXPECT_EQ(config->host.router_queue_timeout_s, 0.5);

  ExpectFileError("host:\n  router_queue_size: -1\n", 2, "host.router_queue_size",
                  "-1 must not be negative");
  ExpectFileError("host:\n  router_queue_timeout_s: 0\n", 2, "host.router_queue_timeout_s",
                  "0 must be greater than 0");
  absl::StatusOr<Config> loaded = Load("", {}, {{"host.router_queue_timeout_s", "-3"}});
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().message(),
            "flag host.router_queue_timeout_s: -3 must be greater than 0");
}

TEST_F(ConfigTest, PreloadInJsonAndYamlOutput) {
  Config config;
  EXPECT_EQ(ConfigToJson(config)["host"]["preload"], nlohmann::json::array());
  EXPECT_NE(ConfigToYaml(config).find("  preload: []\n"), std::string::npos);

  config.host.preload = {"llama2-7b", "123", "true"};  // entries YAML would read as non-strings
  config.host.autoload = false;
  config.host.router_queue_size = 5;
  config.host.router_queue_timeout_s = 2.5;
  nlohmann::json json = ConfigToJson(config);
  ASSERT_TRUE(json["host"]["preload"].is_array());
  EXPECT_EQ(json["host"]["preload"], nlohmann::json::array({"llama2-7b", "123", "true"}));
  EXPECT_EQ(json["host"]["autoload"], false);
  EXPECT_EQ(json["host"]["router_queue_size"], 5);
  EXPECT_EQ(json["host"]["router_queue_timeout_s"], 2.5);

  std::string yaml = ConfigToYaml(config);
  EXPECT_NE(yaml.find("  preload: [\"llama2-7b\", \"123\", \"true\"]\n"), std::string::npos)
      << yaml;
  absl::StatusOr<Config> parsed = ParseConfig(yaml, "yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
  EXPECT_TRUE(parsed->warnings.empty()) << yaml;
  EXPECT_EQ(*parsed, config) << yaml;
}

}  // namespace
}  // namespace gswarm::common

namespace gswarm::common {
namespace {

TEST(HostGrpcTargetTest, LoopbackHostUrlUsesTheConfiguredGrpcPort) {
  Config config;
  config.host.grpc_port = 19101;
  EXPECT_EQ(HostGrpcTarget(config), "localhost:19101");
  config.client.host_url = "http://127.0.0.1:8100";
  EXPECT_EQ(HostGrpcTarget(config), "127.0.0.1:19101");
  // A remote host's gRPC port is not known from this machine's host section.
  config.client.host_url = "http://gpu-head:8100";
  EXPECT_EQ(HostGrpcTarget(config), "gpu-head:8101");
  // An explicit host_grpc always wins.
  config.client.host_grpc = "10.0.0.5:7000";
  EXPECT_EQ(HostGrpcTarget(config), "10.0.0.5:7000");
}

}  // namespace
}  // namespace gswarm::common
