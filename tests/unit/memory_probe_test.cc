#include "client/memory_probe.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace gswarm::client {
namespace {

constexpr char kMeminfo[] =
    "MemTotal:       16305524 kB\n"
    "MemFree:         1234567 kB\n"
    "MemAvailable:   12000000 kB\n"
    "Buffers:          100000 kB\n";

TEST(MeminfoTest, ParsesTotalAndAvailableInBytes) {
  absl::StatusOr<MeminfoFigures> figures = ParseMeminfo(kMeminfo);
  ASSERT_TRUE(figures.ok()) << figures.status();
  EXPECT_EQ(figures->total_bytes, 16305524ull * 1024);
  EXPECT_EQ(figures->available_bytes, 12000000ull * 1024);
}

TEST(MeminfoTest, MissingAvailableIsAnError) {
  EXPECT_FALSE(ParseMeminfo("MemTotal: 100 kB\nMemFree: 5 kB\n").ok());
  EXPECT_FALSE(ParseMeminfo("").ok());
  EXPECT_FALSE(ParseMeminfo("MemTotal: lots kB\nMemAvailable: 5 kB\n").ok());
}

class FakeGpus final : public GpuProbe {
 public:
  std::vector<v1::GpuInfo> Sample() override {
    v1::GpuInfo gpu;
    gpu.set_index(0);
    gpu.set_name("Fake H200");
    gpu.set_memory_total_bytes(100ull << 30);
    gpu.set_memory_used_bytes(10ull << 30);
    gpu.set_memory_free_bytes(90ull << 30);
    return {gpu};
  }
};

class MemoryProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gswarm-probe-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_ / "dram" / "model-a");
    std::ofstream(dir_ / "meminfo") << kMeminfo;
    std::ofstream(dir_ / "dram" / "model-a" / "weights.bin") << std::string(3000, 'x');
    std::ofstream(dir_ / "dram" / "top.bin") << std::string(100, 'x');
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(MemoryProbeTest, SampleCombinesEverySource) {
  MemoryProbe::Options options;
  options.meminfo_path = (dir_ / "meminfo").string();
  options.model_cache_dir = (dir_ / "models-not-created-yet").string();
  options.dram_tier_dir = (dir_ / "dram").string();
  options.dram_tier_budget_bytes = 1 << 20;
  options.gpu_memory_fraction = 0.5;
  MemoryProbe probe(options, std::make_unique<FakeGpus>());

  v1::MemoryUsage usage = probe.Sample();
  EXPECT_EQ(usage.dram_total_bytes(), 16305524ull * 1024);
  EXPECT_EQ(usage.dram_available_bytes(), 12000000ull * 1024);
  // A cache directory that does not exist yet is measured on its nearest existing parent.
  EXPECT_GT(usage.disk_total_bytes(), 0u);
  EXPECT_LE(usage.disk_free_bytes(), usage.disk_total_bytes());
  EXPECT_EQ(usage.dram_tier_used_bytes(), 3100u);
  EXPECT_EQ(usage.dram_tier_budget_bytes(), 1u << 20);
  ASSERT_EQ(usage.gpus_size(), 1);
  EXPECT_EQ(usage.gpus(0).memory_budget_bytes(), 50ull << 30);
}

TEST_F(MemoryProbeTest, UnreadableSourcesLeaveZerosInsteadOfFailing) {
  MemoryProbe::Options options;
  options.meminfo_path = (dir_ / "no-such-meminfo").string();
  options.model_cache_dir = (dir_ / "models").string();
  options.dram_tier_dir = (dir_ / "no-dram").string();
  MemoryProbe probe(options, std::make_unique<FakeGpus>());
  v1::MemoryUsage usage = probe.Sample();
  EXPECT_EQ(usage.dram_total_bytes(), 0u);
  EXPECT_EQ(usage.dram_tier_used_bytes(), 0u);
}

TEST(NvmlTest, LoadNeverFailsWithoutADriver) {
  // On machines without NVIDIA's driver (CI) this must be an empty list, not an error; on a GPU
  // machine, every reported GPU has a total.
  std::unique_ptr<GpuProbe> probe = LoadNvmlProbe();
  ASSERT_NE(probe, nullptr);
  for (const v1::GpuInfo& gpu : probe->Sample()) EXPECT_GT(gpu.memory_total_bytes(), 0u);
}

TEST(DirectoryBytesTest, MissingDirectoryIsZero) {
  EXPECT_EQ(DirectoryBytes("/no/such/gswarm/dir"), 0u);
}

}  // namespace
}  // namespace gswarm::client
