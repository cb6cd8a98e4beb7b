#pragma once

// The tier verbs: copy (and move) between disk and DRAM or between nodes, evict from DRAM.

#include <string>

#include "CLI/CLI.hpp"
#include "cli/api_client.h"

namespace gswarm::cli {

class TierCommands {
 public:
  explicit TierCommands(CLI::App& app);
  bool Parsed() const;
  int Run(ApiClient& api, bool json);

 private:
  int Copy(ApiClient& api, bool json);
  int Evict(ApiClient& api, bool json);

  CLI::App* copy_;
  CLI::App* evict_;
  std::string name_;
  std::string from_ = "disk";
  std::string to_ = "dram";
  std::string node_;
  std::string from_node_;
  std::string to_node_;
  bool move_ = false;
  bool evict_lru_ = false;
  bool pin_ = false;
  bool detach_ = false;
  bool force_ = false;
};

}  // namespace gswarm::cli
