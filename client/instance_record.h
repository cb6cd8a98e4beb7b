#pragma once

// The on-disk record of one live instance, <state_dir>/<id>.json: enough to find its process
// again after an agent restart (pid, pgid and the process's start time, which tells it from a
// later process that reuses the pid) and to restart it (the whole spec).
//
//   {"version": 1, "id": "inst-1", "pid": 4242, "pgid": 4242, "start_ticks": 123456,
//    "started_at_ms": 1700000000000, "load_time_ms": 1200, "restarts": 0,
//    "model_name": "m", "engine": "vllm", "argv": [...], "env": {...}, "gpu_device": "gpu0",
//    "host": "127.0.0.1", "port": 8080, "health_path": "/health", "ready_timeout_ms": 600000,
//    "source_tier": "dram", "managed_by": "router", "sleep_level": 0,
//    "sleep": [[{"method": "POST", "path": "/sleep?level=1", "body": ""}], ...], "wake": [...],
//    "reload": [...]}

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/instance_supervisor.h"

namespace gswarm::client {

struct InstanceRecord {
  InstanceSpec spec;
  pid_t pid = 0;
  pid_t pgid = 0;
  uint64_t start_ticks = 0;
  absl::Time started_at;
  uint64_t load_time_ms = 0;
  uint32_t restarts = 0;
  uint32_t sleep_level = 0;  // asleep at this level when written (0: awake)
};

std::string InstanceRecordToJson(const InstanceRecord& record);

// INVALID_ARGUMENT naming what is missing or malformed.
absl::StatusOr<InstanceRecord> ParseInstanceRecord(absl::string_view json);

}  // namespace gswarm::client
