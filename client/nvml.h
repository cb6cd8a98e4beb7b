#pragma once

// GPU figures from NVML, loaded at run time with dlopen so that GSwarm builds and runs on
// machines without NVIDIA's driver: there the probe reports zero GPUs, which is not an error.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

// One process's memory on one GPU (compute contexts only, as NVML reports them).
struct GpuProcess {
  uint32_t gpu_index = 0;
  uint32_t pid = 0;
  uint64_t used_bytes = 0;
};

// The seam tests replace: anything that can list the node's GPUs.
// Thread safety: implementations must allow concurrent calls.
class GpuProbe {
 public:
  virtual ~GpuProbe() = default;
  // Every GPU with memory and utilisation now; empty when there are none.
  virtual std::vector<v1::GpuInfo> Sample() = 0;
  // Every process holding GPU memory now; empty when unknown.
  virtual std::vector<GpuProcess> Processes() { return {}; }
};

// GPU memory per process group: what every process of the group holds on every GPU, so that an
// engine's workers count towards its instance. `group_of` maps a pid to its process group (0
// when unknown: the process is skipped).
std::map<uint32_t, uint64_t> GpuMemoryByGroup(const std::vector<GpuProcess>& processes,
                                              const std::function<uint32_t(uint32_t)>& group_of);

// The process group of `pid` from /proc/<pid>/stat; 0 when it cannot be read.
uint32_t ProcessGroupOf(uint32_t pid);

// NVML through dlopen("libnvidia-ml.so.1"). Load() never fails: without the library, or when
// nvmlInit fails (no driver, no device), it returns a probe that reports no GPUs and says why
// once in the log.
std::unique_ptr<GpuProbe> LoadNvmlProbe();

}  // namespace gswarm::client
