#pragma once

// Protobuf messages <-> JSON in protobuf's JSON mapping, the one shape REST, the CLI's --json
// and the gRPC API share. Output keeps the proto field names (snake_case, as the original
// GSwarm's bodies) and prints fields that hold default values, so scripts always find them.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace gswarm::common {

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty = false);

// Accepts snake_case and lowerCamelCase names; unknown fields are ignored so that clients of the
// original GSwarm that send extra keys keep working. An empty body is an empty message.
absl::Status FromJson(absl::string_view json, google::protobuf::Message* message);

// `json` as compact text. Never throws: a string that is not valid UTF-8 (from a request, echoed
// in an error) comes out with U+FFFD in place of its bad bytes, where nlohmann's dump() throws.
std::string DumpJson(const nlohmann::json& json);

}  // namespace gswarm::common
