#pragma once

// The long-running commands: `gswarm host`, `gswarm client`, `gswarm start`. Each builds its
// parts, waits for SIGINT or SIGTERM, shuts down cleanly and returns the exit code.

#include "common/config.h"

namespace gswarm::cli {

// Blocks SIGINT and SIGTERM in the calling thread and every thread started after it, so that
// the main thread alone receives them through sigwait. Call before starting any thread.
void BlockTerminationSignals();

int RunHost(const common::Config& config);
int RunClient(const common::Config& config);
int RunStart(const common::Config& config);

}  // namespace gswarm::cli
