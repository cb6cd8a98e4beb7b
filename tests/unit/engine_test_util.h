#pragma once

// Helpers shared by the engine spec and engine config tests.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/engine_spec.h"

namespace gswarm::common {

// Whether `text` holds `fragment`, showing `text` when it does not.
inline ::testing::AssertionResult Contains(const std::string& text, const std::string& fragment) {
  if (text.find(fragment) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << fragment << "\" is not in:\n" << text;
}

inline EngineVars Vars() {
  EngineVars vars;
  vars.model_path = "/dev/shm/gswarm_models/llama";
  vars.model_file = "/dev/shm/gswarm_models/llama/model-q4.gguf";
  vars.model_name = "llama";
  vars.host = "127.0.0.1";
  vars.port = 8123;
  vars.gpu = "1";
  vars.gpu_memory_utilization = 0.85;
  vars.max_concurrent_requests = 64;
  vars.instance_id = "inst-1";
  return vars;
}

inline EngineSpec Spec(std::vector<std::string> command) {
  EngineSpec spec;
  spec.name = "test";
  spec.command = std::move(command);
  return spec;
}

inline std::string Message(const absl::Status& status) { return std::string(status.message()); }

}  // namespace gswarm::common
