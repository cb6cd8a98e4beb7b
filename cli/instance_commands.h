#pragma once

// The instance verbs: serve, ps, stop, sleep, wake, logs, switch, plan.

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli/api_client.h"

namespace gswarm::cli {

class InstanceCommands {
 public:
  explicit InstanceCommands(CLI::App& app);
  bool Parsed() const;
  int Run(ApiClient& api, bool json);

 private:
  int Serve(ApiClient& api, bool json);
  int Ps(ApiClient& api, bool json);
  int Stop(ApiClient& api, bool json);
  int SleepOrWake(ApiClient& api, bool json);
  int Logs(ApiClient& api);
  int Switch(ApiClient& api, bool json);
  int Plan(ApiClient& api, bool json);

  CLI::App* serve_;
  CLI::App* ps_;
  CLI::App* stop_;
  CLI::App* sleep_;
  CLI::App* wake_;
  CLI::App* logs_;
  CLI::App* switch_;
  CLI::App* plan_;
  bool follow_ = false;
  int tail_ = 100;
  int level_ = 1;
  std::string name_;
  std::string gpu_;
  int port_ = 0;
  std::string from_;
  std::string engine_;
  std::string node_;
  std::string id_;
  std::vector<std::string> extra_args_;
  bool all_ = false;
  bool force_ = false;
  bool detach_ = false;
};

}  // namespace gswarm::cli
