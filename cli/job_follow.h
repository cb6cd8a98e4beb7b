#pragma once

// Following a long job (download, copy) from the CLI: a progress bar from WatchJob until it ends.

#include <string>

#include "cli/api_client.h"

namespace gswarm::cli {

// Watches `started` until it ends, drawing progress on stderr (unless `json`). Returns 0 when it
// succeeded (its last state in `*final`), else prints why and returns 1. The job goes on if the
// CLI is interrupted.
int FollowJob(ApiClient& api, const v1::Job& started, const std::string& label, bool json,
              v1::Job* final);

// For --detach: says the job started and how to follow it (or prints it with --json). Returns 0.
int ReportStarted(const v1::Job& job, bool json);

}  // namespace gswarm::cli
