#pragma once

// GSwarm's model names: one safe path component, the same rule everywhere a name arrives (the
// API, the config's host.preload, a peer's listing).

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gswarm::common {

// `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` without "..". INVALID_ARGUMENT names the rule.
absl::Status ValidateModelName(absl::string_view name);

}  // namespace gswarm::common
