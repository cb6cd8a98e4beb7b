#pragma once

// Internal to common/: what the YAML reader of the config file (config.cc) shares with the
// readers of its map sections (config_maps.cc).

#include <yaml-cpp/yaml.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/config.h"

namespace gswarm::common::config_internal {

// Sections that are maps of named entries, not keys of the table (config_keys.cc).
inline constexpr char kEnginesKey[] = "client.engines";
inline constexpr char kDiskLocationsKey[] = "client.disk_locations";

// "file:line" of a YAML node, for messages.
std::string Location(absl::string_view file, const YAML::Mark& mark);
// What a node is, for messages: "a map", "a list", "the value \"x\"", "no value".
std::string Describe(const YAML::Node& node);

// client.engines: engine name -> {command, health_path, ready_timeout_s, memory_factor, env,
// stop_command, sleep, wake, reload}; an entry named like a preset starts from the preset.
absl::Status ReadEngines(const YAML::Node& node, absl::string_view file, Config& config);
// client.disk_locations: name -> {path, high_watermark}.
absl::Status ReadDiskLocations(const YAML::Node& node, absl::string_view file, Config& config);

}  // namespace gswarm::common::config_internal
