
#include "tests/unit/config_fixture.h"

namespace gswarm::common {
namespace {

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

TEST_F(ConfigTest, DiskLocationsAreReadAndChecked) {
  absl::StatusOr<Config> config = ParseConfig(R"(
client:
  disk_locations:
    primary: {high_watermark: 0.85}
    secondary:
      path: /mnt/data/models
    fast.nvme: {path: /nvme, high_watermark: 1}
)",
                                              "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  const auto& locations = config->client.disk_locations;
  ASSERT_EQ(locations.size(), 3u);
  EXPECT_EQ(locations.at("primary").path, "");
  EXPECT_DOUBLE_EQ(locations.at("primary").high_watermark, 0.85);
  EXPECT_EQ(locations.at("secondary").path, "/mnt/data/models");
  EXPECT_DOUBLE_EQ(locations.at("secondary").high_watermark, 0.9);
  EXPECT_DOUBLE_EQ(locations.at("fast.nvme").high_watermark, 1.0);

  ExpectFileError("client:\n  disk_locations:\n    secondary: {high_watermark: 0.9}\n", 3,
                  "client.disk_locations.secondary", "a path is required");
  ExpectFileError("client:\n  disk_locations:\n    primary: {path: /x}\n", 3,
                  "client.disk_locations.primary", "client.model_cache_dir");
  ExpectFileError("client:\n  disk_locations:\n    s: {path: rel/dir}\n", 3,
                  "client.disk_locations.s.path", "is not an absolute path");
  ExpectFileError("client:\n  disk_locations:\n    s: {path: /x, high_watermark: 1.5}\n", 3,
                  "client.disk_locations.s.high_watermark", "above 0 and at most 1");
  ExpectFileError("client:\n  disk_locations:\n    custom: {path: /x}\n", 3,
                  "client.disk_locations", "not \"custom\"");
  ExpectFileError("client:\n  disk_locations: [a]\n", 2, "client.disk_locations", "expected a map");
}

TEST_F(ConfigTest, NegativeSizesAreErrors) {
  ExpectFileError("host:\n  storage_devices:\n    dram:\n      max_size_gb: -1\n", 4,
                  "host.storage_devices.dram.max_size_gb", "-1 is out of range");
  ExpectFileError("host:\n  storage_devices:\n    disk: {max_size_gb: -0.5}\n", 3,
                  "host.storage_devices.disk.max_size_gb", "is out of range");
  ExpectFileError("client:\n  model_cache_dir: /m\n  dram_cache_size: -16\n", 3,
                  "client.dram_cache_size", "-16 is out of range (0 to 1e9 GiB)");
  // Sizes whose bytes would not fit 64 bits.
  ExpectFileError("client:\n  cpu_memory_budget: 1e30\n", 2, "client.cpu_memory_budget",
                  "is out of range (0 to 1e9 GiB)");
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

}  // namespace
}  // namespace gswarm::common
