// The config's outputs and its newer keys: the default file, JSON and YAML renderings that
// parse back, HostGrpcTarget, SetConfigValue by type, and the router's keys (preload, queue).

#include "tests/unit/config_fixture.h"

namespace gswarm::common {
namespace {

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
  config.client.disk_locations["primary"].high_watermark = 0.8;
  config.client.disk_locations["secondary"] = {"/mnt/models two", 0.95};
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
      {"client.dram_cache_size", "-1",
       "flag client.dram_cache_size: -1 is out of range (0 to 1e9 GiB)"},
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
