#pragma once

// The fixture of the config tests (config_test.cc, config_output_test.cc): a temporary HOME,
// config files written there, and loads with a controlled environment and flags.
// Test-only.

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

#include "common/config.h"
#include "common/paths.h"

namespace gswarm::common {

// The "Sample Configuration File" from the seed, verbatim (including the blank line with spaces).
inline constexpr char kSeedSample[] = R"(host:
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

}  // namespace gswarm::common
