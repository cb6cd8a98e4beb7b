#include "client/memory_probe.h"

#include <unistd.h>

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

TEST(CpuMemoryBudgetTest, ConfiguredWinsElseRamLessTierLessHeadroom) {
  constexpr uint64_t kGiB = 1ull << 30;
  EXPECT_EQ(CpuMemoryBudget(5 * kGiB, 64 * kGiB, 16 * kGiB), 5 * kGiB);
  // 64 GiB less the 16 GiB tier less 10% (6.4 GiB).
  EXPECT_EQ(CpuMemoryBudget(0, 64 * kGiB, 16 * kGiB), 64 * kGiB - 16 * kGiB - 64 * kGiB / 10);
  // A small board: the headroom is at least 1 GiB.
  EXPECT_EQ(CpuMemoryBudget(0, 8 * kGiB, 2 * kGiB), 5 * kGiB);
  EXPECT_EQ(CpuMemoryBudget(0, 2 * kGiB, 2 * kGiB), 0u);  // nothing left
}

// A fake /proc with three processes: two in group 40 (an engine and its worker), one in 41.
TEST(RssByProcessGroupTest, SumsTheResidentPagesOfEachGroupFromProc) {
  const std::string proc = ::testing::TempDir() + "/gswarm_proc_test";
  std::filesystem::remove_all(proc);
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  auto process = [&](int pid, const std::string& comm, int group, int resident_pages) {
    const std::string dir = proc + "/" + std::to_string(pid);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/stat") << pid << " (" << comm << ") S 1 " << group << " " << group
                                 << " 0 -1 4194560 0 0 0 0\n";
    std::ofstream(dir + "/statm") << "9999 " << resident_pages << " 10 1 0 50 0\n";
  };
  process(100, "llama-server", 40, 1000);
  process(101, "worker (a) b)", 40, 24);  // a name with spaces and parentheses
  process(102, "other", 41, 7);
  std::filesystem::create_directories(proc + "/self_not_a_pid");
  std::map<uint32_t, uint64_t> rss = RssByProcessGroup({40, 42}, proc);
  EXPECT_EQ(rss, (std::map<uint32_t, uint64_t>{{40, 1024 * page}}));  // 41 not asked, 42 none
  EXPECT_EQ(RssByProcessGroup({41}, proc)[41], 7 * page);
  EXPECT_TRUE(RssByProcessGroup({}, proc).empty());
  // The real /proc: this test's own group holds memory.
  const auto self = static_cast<uint32_t>(::getpgrp());
  EXPECT_GT(RssByProcessGroup({self})[self], 0u);
  std::filesystem::remove_all(proc);
}

}  // namespace
}  // namespace gswarm::client

namespace gswarm::client {
namespace {

TEST(GpuAttributionTest, SumsEveryProcessOfAGroupOnEveryGpu) {
  // An engine (group 100) with a worker on another GPU, and an unrelated process (group 300).
  const std::vector<GpuProcess> processes = {
      {0, 100, 30ull << 30}, {1, 101, 10ull << 30}, {0, 300, 5ull << 30}, {1, 999, 1ull << 30}};
  const std::map<uint32_t, uint32_t> groups = {{100, 100}, {101, 100}, {300, 300}};
  std::map<uint32_t, uint64_t> by_group = GpuMemoryByGroup(processes, [&](uint32_t pid) {
    auto it = groups.find(pid);
    return it == groups.end() ? 0u : it->second;  // 999: gone, not counted
  });
  ASSERT_EQ(by_group.size(), 2u);
  EXPECT_EQ(by_group[100], 40ull << 30);
  EXPECT_EQ(by_group[300], 5ull << 30);
}

TEST(GpuAttributionTest, ReadsProcessGroupsFromProc) {
  EXPECT_EQ(ProcessGroupOf(static_cast<uint32_t>(::getpid())), static_cast<uint32_t>(::getpgrp()));
  EXPECT_EQ(ProcessGroupOf(0x7ffffff0u), 0u);  // no such process
}

TEST(GpuAttributionTest, ProbesWithoutProcessSupportReportNone) {
  // The seam's default: a probe that cannot list processes attributes nothing.
  class Plain final : public GpuProbe {
   public:
    std::vector<v1::GpuInfo> Sample() override { return {}; }
  } plain;
  EXPECT_TRUE(plain.Processes().empty());
  // Real NVML where there is one: every process it lists has a pid.
  for (const GpuProcess& process : LoadNvmlProbe()->Processes()) EXPECT_GT(process.pid, 0u);
}

}  // namespace
}  // namespace gswarm::client
