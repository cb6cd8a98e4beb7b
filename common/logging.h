#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gswarm::common {

// Sends spdlog's default logger to stderr at `level` (trace, debug, info, warn, error, off),
// with timestamps. INVALID_ARGUMENT naming the accepted levels for anything else.
absl::Status InitLogging(absl::string_view level);

}  // namespace gswarm::common
