#pragma once

// What an agent reports about its node's memory in every heartbeat: DRAM from /proc/meminfo,
// the model cache's filesystem from statvfs, the DRAM tier's use against its budget, and GPUs.

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "client/nvml.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

struct MeminfoFigures {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
};

// Parses /proc/meminfo text. MemAvailable is required (Linux >= 3.14).
absl::StatusOr<MeminfoFigures> ParseMeminfo(absl::string_view text);

struct FilesystemFigures {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // available to unprivileged writers (f_bavail)
};

// statvfs of `path`, or of its nearest existing parent when `path` does not exist yet.
absl::StatusOr<FilesystemFigures> StatFilesystem(const std::string& path);

// Bytes in regular files below `path`, not following links; 0 when it does not exist.
uint64_t DirectoryBytes(const std::string& path);

// The RAM engines on the CPU may take: `configured` (client.cpu_memory_budget) when set, else
// the node's RAM less the DRAM tier's budget less a headroom for everything else (10% of the
// RAM, at least 1 GiB); 0 when nothing is left.
uint64_t CpuMemoryBudget(uint64_t configured, uint64_t dram_total, uint64_t dram_tier_budget);

// The resident memory of the processes of each of `groups` (an engine and its children), from
// one pass over <proc>/<pid>/stat and statm. A group with no process found is absent.
std::map<uint32_t, uint64_t> RssByProcessGroup(const std::set<uint32_t>& groups,
                                               const std::string& proc = "/proc");

// Thread safety: Sample() may be called from any thread.
class MemoryProbe {
 public:
  struct Options {
    std::string meminfo_path = "/proc/meminfo";
    std::string model_cache_dir;  // expanded
    std::string dram_tier_dir;    // expanded
    uint64_t dram_tier_budget_bytes = 0;
    double gpu_memory_fraction = 0.9;
  };

  MemoryProbe(Options options, std::unique_ptr<GpuProbe> gpus);

  // Figures now. A source that cannot be read leaves its fields zero (and logs once why)
  // rather than failing the heartbeat.
  v1::MemoryUsage Sample();
  // Whether the node has GPUs NVML can see.
  bool HasGpus() { return !gpus_->Sample().empty(); }
  // Processes holding GPU memory now (for attribution to instances).
  std::vector<GpuProcess> GpuProcesses() { return gpus_->Processes(); }

 private:
  const Options options_;
  std::unique_ptr<GpuProbe> gpus_;
};

}  // namespace gswarm::client
