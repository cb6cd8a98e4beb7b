#pragma once

// `gswarm top`: a live terminal view of the cluster — nodes with their memory and tiers against
// their budgets, running instances, active and recent jobs — redrawn when events say something
// changed (and every few seconds for memory, which heartbeats update without events). For people
// on a head node without a browser.

#include "CLI/CLI.hpp"
#include "cli/api_client.h"

namespace gswarm::cli {

class TopCommand {
 public:
  explicit TopCommand(CLI::App& app);
  bool Parsed() const;
  // --json (with --once) prints the snapshot as JSON.
  int Run(ApiClient& api, bool json);

 private:
  CLI::App* top_;
  bool once_ = false;
  double refresh_s_ = 5;
};

}  // namespace gswarm::cli
