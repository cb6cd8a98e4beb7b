#pragma once

// The model verbs: download, ls, show, rm, discover, validate, jobs, cancel.

#include <string>

#include "CLI/CLI.hpp"
#include "cli/api_client.h"

namespace gswarm::cli {

class ModelCommands {
 public:
  // Adds the verbs and their flags to `app`.
  explicit ModelCommands(CLI::App& app);

  // Whether one of these verbs was on the command line.
  bool Parsed() const;
  // Runs it; returns the exit code.
  int Run(ApiClient& api, bool json);

 private:
  int Download(ApiClient& api, bool json);
  int List(ApiClient& api, bool json);
  int Show(ApiClient& api, bool json);
  int Remove(ApiClient& api, bool json);
  int Discover(ApiClient& api, bool json);
  int Validate(ApiClient& api, bool json);
  int Jobs(ApiClient& api, bool json);
  int Cancel(ApiClient& api, bool json);

  CLI::App* download_;
  CLI::App* ls_;
  CLI::App* show_;
  CLI::App* rm_;
  CLI::App* discover_;
  CLI::App* validate_;
  CLI::App* jobs_;
  CLI::App* cancel_;

  std::string source_;
  std::string name_;
  std::string node_;
  std::string revision_;
  std::string type_;
  std::string state_;
  std::string job_id_;
  bool detach_ = false;
  bool force_ = false;
  bool full_ = false;
};

// The model name a source suggests: hf://org/repo@rev -> "repo", https://x/y/model.gguf ->
// "model", file:///data/llama -> "llama". Empty when nothing usable.
std::string NameFromSource(absl::string_view source);

}  // namespace gswarm::cli
