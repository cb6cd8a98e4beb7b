#pragma once

// What the benchmarks read of a process from /proc and getrusage: CPU time and resident memory.

#include <cstdint>

#include "absl/status/statusor.h"

namespace gswarm::bench {

// utime + stime of `pid`, in clock ticks (sysconf(_SC_CLK_TCK) a second).
absl::StatusOr<uint64_t> ReadCpuTicks(int pid);
// VmRSS of `pid`, KiB.
absl::StatusOr<uint64_t> ReadRssKib(int pid);
// This process's own user + system CPU, seconds.
double SelfCpuSeconds();

}  // namespace gswarm::bench
