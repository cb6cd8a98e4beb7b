#pragma once

// GPU figures from NVML, loaded at run time with dlopen so that GSwarm builds and runs on
// machines without NVIDIA's driver: there the probe reports zero GPUs, which is not an error.

#include <memory>
#include <vector>

#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

// The seam tests replace: anything that can list the node's GPUs.
// Thread safety: implementations must allow concurrent Sample() calls.
class GpuProbe {
 public:
  virtual ~GpuProbe() = default;
  // Every GPU with memory and utilisation now; empty when there are none.
  virtual std::vector<v1::GpuInfo> Sample() = 0;
};

// NVML through dlopen("libnvidia-ml.so.1"). Load() never fails: without the library, or when
// nvmlInit fails (no driver, no device), it returns a probe that reports no GPUs and says why
// once in the log.
std::unique_ptr<GpuProbe> LoadNvmlProbe();

}  // namespace gswarm::client
