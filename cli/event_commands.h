#pragma once

// `gswarm events`: what happened in the cluster (nodes, jobs, replicas, instances, router
// actions), the newest first printed oldest-first, and with -f as it happens.

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli/api_client.h"

namespace gswarm::cli {

class EventCommands {
 public:
  explicit EventCommands(CLI::App& app);
  bool Parsed() const;
  // --json prints one event per line (JSON Lines), for scripts that read as events arrive.
  int Run(ApiClient& api, bool json);

 private:
  CLI::App* events_;
  bool follow_ = false;
  std::vector<std::string> kinds_;
  std::string model_;
  std::string node_;
  uint64_t since_ = 0;
  int last_ = 20;
};

}  // namespace gswarm::cli
