#include "client/nvml.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "client/process.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

// The few NVML types and entry points used, declared here because the header ships with CUDA,
// which we do not build against. Layouts follow nvml.h (stable ABI, versioned entry points).
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
// nvmlProcessInfo_t as the _v2 and _v3 entry points fill it.
struct nvmlProcessInfo_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr nvmlReturn_t kNvmlInsufficientSize = 7;
// NVML_VALUE_NOT_AVAILABLE: the driver cannot say (e.g. without privileges under MIG).
constexpr unsigned long long kNvmlValueNotAvailable = ~0ull;
constexpr unsigned kNameLength = 96;
constexpr unsigned kUuidLength = 96;

struct NvmlApi {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  const char* (*error_string)(nvmlReturn_t);
  nvmlReturn_t (*device_count)(unsigned*);
  nvmlReturn_t (*device_by_index)(unsigned, nvmlDevice_t*);
  nvmlReturn_t (*device_name)(nvmlDevice_t, char*, unsigned);
  nvmlReturn_t (*device_uuid)(nvmlDevice_t, char*, unsigned);
  nvmlReturn_t (*memory_info)(nvmlDevice_t, nvmlMemory_t*);
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*);
  // Optional: older drivers lack the versioned call.
  nvmlReturn_t (*processes)(nvmlDevice_t, unsigned*, nvmlProcessInfo_t*);
};

class NoGpuProbe final : public GpuProbe {
 public:
  std::vector<v1::GpuInfo> Sample() override { return {}; }
};

class NvmlProbe final : public GpuProbe {
 public:
  NvmlProbe(void* library, NvmlApi api) : library_(library), api_(api) {}
  ~NvmlProbe() override {
    api_.shutdown();
    dlclose(library_);
  }

  std::vector<v1::GpuInfo> Sample() override {
    // NVML is thread-safe, but one sample at a time keeps the figures of one call consistent.
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::GpuInfo> gpus;
    unsigned count = 0;
    if (api_.device_count(&count) != kNvmlSuccess) return gpus;
    for (unsigned i = 0; i < count; ++i) {
      nvmlDevice_t device = nullptr;
      if (api_.device_by_index(i, &device) != kNvmlSuccess) continue;
      v1::GpuInfo gpu;
      gpu.set_index(i);
      char text[kNameLength > kUuidLength ? kNameLength : kUuidLength] = {};
      if (api_.device_name(device, text, kNameLength) == kNvmlSuccess) gpu.set_name(text);
      if (api_.device_uuid(device, text, kUuidLength) == kNvmlSuccess) gpu.set_uuid(text);
      nvmlMemory_t memory{};
      if (api_.memory_info(device, &memory) == kNvmlSuccess) {
        gpu.set_memory_total_bytes(memory.total);
        gpu.set_memory_used_bytes(memory.used);
        gpu.set_memory_free_bytes(memory.free);
      }
      nvmlUtilization_t utilization{};
      if (api_.utilization(device, &utilization) == kNvmlSuccess) {
        gpu.set_utilization_percent(utilization.gpu);
      }
      gpus.push_back(std::move(gpu));
    }
    return gpus;
  }

  std::vector<GpuProcess> Processes() override {
    std::vector<GpuProcess> out;
    if (api_.processes == nullptr) return out;
    std::lock_guard<std::mutex> lock(mu_);
    unsigned count = 0;
    if (api_.device_count(&count) != kNvmlSuccess) return out;
    for (unsigned i = 0; i < count; ++i) {
      nvmlDevice_t device = nullptr;
      if (api_.device_by_index(i, &device) != kNvmlSuccess) continue;
      // Ask for the size, then fetch with room for processes that start in between.
      std::vector<nvmlProcessInfo_t> infos(16);
      for (int attempt = 0; attempt < 3; ++attempt) {
        unsigned n = static_cast<unsigned>(infos.size());
        const nvmlReturn_t rc = api_.processes(device, &n, infos.data());
        if (rc == kNvmlInsufficientSize) {
          infos.resize(n + 16);
          continue;
        }
        if (rc != kNvmlSuccess) break;
        for (unsigned k = 0; k < n && k < infos.size(); ++k) {
          const unsigned long long used = infos[k].usedGpuMemory;
          out.push_back({i, infos[k].pid, used == kNvmlValueNotAvailable ? 0 : used});
        }
        break;
      }
    }
    return out;
  }

 private:
  std::mutex mu_;
  void* library_;
  NvmlApi api_;
};

template <typename Fn>
bool Resolve(void* library, const char* symbol, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(library, symbol));
  return *out != nullptr;
}

}  // namespace

std::map<uint32_t, uint64_t> GpuMemoryByGroup(const std::vector<GpuProcess>& processes,
                                              const std::function<uint32_t(uint32_t)>& group_of) {
  std::map<uint32_t, uint64_t> by_group;
  for (const GpuProcess& process : processes) {
    const uint32_t group = group_of(process.pid);
    if (group != 0) by_group[group] += process.used_bytes;
  }
  return by_group;
}

uint32_t ProcessGroupOf(uint32_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(static_cast<pid_t>(pid));
  return stat.ok() ? static_cast<uint32_t>(stat->pgrp) : 0;
}

std::unique_ptr<GpuProbe> LoadNvmlProbe() {
  void* library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    spdlog::info("no NVML (libnvidia-ml.so.1 not found): reporting zero GPUs");
    return std::make_unique<NoGpuProbe>();
  }
  NvmlApi api{};
  bool ok = Resolve(library, "nvmlInit_v2", &api.init) &&
            Resolve(library, "nvmlShutdown", &api.shutdown) &&
            Resolve(library, "nvmlErrorString", &api.error_string) &&
            Resolve(library, "nvmlDeviceGetCount_v2", &api.device_count) &&
            Resolve(library, "nvmlDeviceGetHandleByIndex_v2", &api.device_by_index) &&
            Resolve(library, "nvmlDeviceGetName", &api.device_name) &&
            Resolve(library, "nvmlDeviceGetUUID", &api.device_uuid) &&
            Resolve(library, "nvmlDeviceGetMemoryInfo", &api.memory_info) &&
            Resolve(library, "nvmlDeviceGetUtilizationRates", &api.utilization);
  if (!Resolve(library, "nvmlDeviceGetComputeRunningProcesses_v3", &api.processes)) {
    Resolve(library, "nvmlDeviceGetComputeRunningProcesses_v2", &api.processes);
  }
  if (!ok) {
    spdlog::warn("NVML library lacks an expected symbol: reporting zero GPUs");
    dlclose(library);
    return std::make_unique<NoGpuProbe>();
  }
  if (nvmlReturn_t rc = api.init(); rc != kNvmlSuccess) {
    spdlog::info("NVML did not initialise ({}): reporting zero GPUs", api.error_string(rc));
    dlclose(library);
    return std::make_unique<NoGpuProbe>();
  }
  return std::make_unique<NvmlProbe>(library, api);
}

}  // namespace gswarm::client
