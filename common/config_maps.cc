#include <yaml-cpp/yaml.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/config_keys.h"
#include "common/config_yaml.h"
#include "common/engine_spec.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/text.h"

// The config file's two sections that are maps of named entries rather than keys of the table
// (config_keys.cc): client.engines and client.disk_locations.

namespace gswarm::common::config_internal {
namespace {

// A plain (unquoted) scalar YAML would read as a number or a boolean.
bool LooksLikeNonString(const YAML::Node& node) {
  if (node.Tag() != "?") return false;
  double number = 0;
  std::string lower = absl::AsciiStrToLower(node.Scalar());
  return absl::SimpleAtod(node.Scalar(), &number) || lower == "true" || lower == "false";
}

// `command:` as a list of strings, or one string split like a command line.
absl::Status ReadCommand(const YAML::Node& value, absl::string_view source,
                         std::vector<std::string>& command) {
  command.clear();
  if (value.IsNull()) return absl::OkStatus();  // empty: ValidateEngineSpec says so
  if (value.IsSequence()) {
    for (const YAML::Node& arg : value) {
      if (!arg.IsScalar()) {
        return Invalid(source, absl::StrCat("expected each argument to be a string, got ",
                                            Describe(arg), " at line ", arg.Mark().line + 1));
      }
      command.push_back(arg.Scalar());
    }
    return absl::OkStatus();
  }
  if (!value.IsScalar() || LooksLikeNonString(value)) {
    return Invalid(source, absl::StrCat("expected a list of strings or a command line string, got ",
                                        Describe(value)));
  }
  absl::StatusOr<std::vector<std::string>> split = SplitCommandLine(value.Scalar());
  if (!split.ok()) return Invalid(source, split.status().message());
  command = *std::move(split);
  return absl::OkStatus();
}

// An engine's sleep/wake/reload calls: a list of "METHOD /path [BODY]" strings, or one.
absl::Status ReadCalls(const YAML::Node& value, absl::string_view source,
                       std::vector<std::string>& calls) {
  calls.clear();
  if (value.IsNull()) return absl::OkStatus();
  if (value.IsScalar()) {
    calls.push_back(value.Scalar());
    return absl::OkStatus();
  }
  if (!value.IsSequence()) {
    return Invalid(source, absl::StrCat("expected a list of \"METHOD /path [BODY]\" strings, got ",
                                        Describe(value)));
  }
  for (const YAML::Node& call : value) {
    if (!call.IsScalar()) {
      return Invalid(source, absl::StrCat("expected each call to be a string, got ", Describe(call),
                                          " at line ", call.Mark().line + 1));
    }
    calls.push_back(call.Scalar());
  }
  return absl::OkStatus();
}

// One entry of client.engines at key path `path`; `spec` holds the preset of that name, if any.
absl::Status ReadEngine(const YAML::Node& node, const YAML::Mark& name_mark, absl::string_view file,
                        const std::string& path, EngineSpec& spec, Config& config) {
  if (!node.IsMap()) {
    return Invalid(
        absl::StrCat(Location(file, name_mark), ": ", path),
        absl::StrCat(
            "expected a map with command (and optionally health_path, "
            "ready_timeout_s, memory_factor, env, stop_command, sleep, wake, reload), got ",
            Describe(node)));
  }
  std::map<std::string, YAML::Mark> marks;  // by EngineSpecErrorField, for validation messages
  std::set<std::string> seen;
  for (const auto& entry : node) {
    const YAML::Node& name = entry.first;
    const YAML::Node& value = entry.second;
    const std::string where = Location(file, name.Mark());
    if (!name.IsScalar()) {
      config.warnings.push_back(
          absl::StrCat(where, ": unknown key (", Describe(name), ") in ", path, " (ignored)"));
      continue;
    }
    const std::string field = name.Scalar();
    const std::string key = absl::StrCat(path, ".", field);
    const std::string source = absl::StrCat(where, ": ", key);
    if (!seen.insert(field).second) {
      config.warnings.push_back(
          absl::StrCat(where, ": duplicate key \"", key, "\" (the last one wins)"));
    }
    marks[field] = name.Mark();
    if (field == "command") {
      RETURN_IF_ERROR(ReadCommand(value, source, spec.command));
    } else if (field == "health_path") {
      if (!value.IsScalar() && !value.IsNull()) {
        return Invalid(source, absl::StrCat("expected a string, got ", Describe(value)));
      }
      spec.health_path = value.IsNull() ? "" : value.Scalar();
    } else if (field == "ready_timeout_s" || field == "memory_factor") {
      double number = 0;
      if (!value.IsScalar()) {
        return Invalid(source, absl::StrCat("expected a number, got ", Describe(value)));
      }
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(value.Scalar()), &number) ||
          !std::isfinite(number)) {
        return Invalid(source, Quote(value.Scalar()) + " is not a number");
      }
      (field == "memory_factor" ? spec.memory_factor : spec.ready_timeout_s) = number;
    } else if (field == "stop_command") {
      RETURN_IF_ERROR(ReadCommand(value, source, spec.stop_command));
    } else if (field == "sleep") {
      RETURN_IF_ERROR(ReadCalls(value, source, spec.sleep));
    } else if (field == "wake") {
      RETURN_IF_ERROR(ReadCalls(value, source, spec.wake));
    } else if (field == "reload") {
      RETURN_IF_ERROR(ReadCalls(value, source, spec.reload));
    } else if (field == "env") {
      spec.env.clear();
      if (value.IsNull()) continue;
      if (!value.IsMap()) {
        return Invalid(source, absl::StrCat("expected a map of variable names to values, got ",
                                            Describe(value)));
      }
      for (const auto& variable : value) {
        const std::string at = Location(file, variable.first.Mark());
        if (!variable.first.IsScalar()) {
          return Invalid(absl::StrCat(at, ": ", key),
                         absl::StrCat("expected a variable name, got ", Describe(variable.first)));
        }
        const std::string var = variable.first.Scalar();
        if (!variable.second.IsScalar() && !variable.second.IsNull()) {
          return Invalid(absl::StrCat(at, ": ", key, ".", var),
                         absl::StrCat("expected a string, got ", Describe(variable.second)));
        }
        spec.env[var] = variable.second.IsNull() ? "" : variable.second.Scalar();
        marks[absl::StrCat("env.", var)] = variable.first.Mark();
      }
    } else {
      config.warnings.push_back(absl::StrCat(where, ": unknown key \"", key, "\" (ignored)"));
    }
  }
  if (absl::Status valid = ValidateEngineSpec(spec); !valid.ok()) {
    const std::string field = EngineSpecErrorField(valid);
    auto mark = marks.find(field);
    return Invalid(absl::StrCat(Location(file, mark != marks.end() ? mark->second : name_mark),
                                ": ", path, field.empty() ? "" : ".", field),
                   valid.message());
  }
  return absl::OkStatus();
}

}  // namespace

std::string Location(absl::string_view file, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return std::string(file);
  return absl::StrCat(file, ":", mark.line + 1);
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return absl::StrCat("the value ", Quote(node.Scalar()));
    default:
      return "no value";
  }
}

// client.engines: engine name -> {command, health_path, ready_timeout_s, env}. An entry named
// like a preset starts from the preset.
absl::Status ReadEngines(const YAML::Node& node, absl::string_view file, Config& config) {
  config.client.engines.clear();  // a repeated `engines:` replaces the earlier one
  if (node.IsNull()) return absl::OkStatus();
  if (!node.IsMap()) {
    return Invalid(absl::StrCat(Location(file, node.Mark()), ": ", kEnginesKey),
                   absl::StrCat("expected a map of engine names to {command, health_path, "
                                "ready_timeout_s, env}, got ",
                                Describe(node)));
  }
  const std::map<std::string, EngineSpec> presets = BuiltinEngines();
  for (const auto& entry : node) {
    const YAML::Node& name = entry.first;
    const std::string where = Location(file, name.Mark());
    if (!name.IsScalar() || name.Scalar().empty()) {
      return Invalid(
          absl::StrCat(where, ": ", kEnginesKey),
          absl::StrCat("an engine name must be a non-empty string, got ", Describe(name)));
    }
    const std::string path = absl::StrCat(kEnginesKey, ".", name.Scalar());
    if (config.client.engines.count(name.Scalar()) > 0) {
      config.warnings.push_back(
          absl::StrCat(where, ": duplicate key \"", path, "\" (the last one wins)"));
    }
    EngineSpec spec;
    if (auto preset = presets.find(name.Scalar()); preset != presets.end()) spec = preset->second;
    spec.name = name.Scalar();
    RETURN_IF_ERROR(ReadEngine(entry.second, name.Mark(), file, path, spec, config));
    config.client.engines[spec.name] = std::move(spec);
  }
  return absl::OkStatus();
}

// client.disk_locations: name -> {path, high_watermark}.
absl::Status ReadDiskLocations(const YAML::Node& node, absl::string_view file, Config& config) {
  config.client.disk_locations.clear();
  if (node.IsNull()) return absl::OkStatus();
  const std::string at = absl::StrCat(Location(file, node.Mark()), ": ", kDiskLocationsKey);
  if (!node.IsMap()) {
    return Invalid(at, absl::StrCat("expected a map of location names to {path, high_watermark}, "
                                    "got ",
                                    Describe(node)));
  }
  for (const auto& entry : node) {
    const YAML::Node& name = entry.first;
    const std::string where = Location(file, name.Mark());
    if (!name.IsScalar() || !IsDiskLocationName(name.Scalar())) {
      return Invalid(absl::StrCat(where, ": ", kDiskLocationsKey),
                     absl::StrCat("a location name is 1-64 letters, digits, '-', '_' or '.' (and "
                                  "not \"custom\", which names a path given per download), got ",
                                  Describe(name)));
    }
    const std::string path = absl::StrCat(kDiskLocationsKey, ".", name.Scalar());
    const YAML::Node& value = entry.second;
    if (!value.IsMap()) {
      return Invalid(
          absl::StrCat(where, ": ", path),
          absl::StrCat("expected a map with path and high_watermark, got ", Describe(value)));
    }
    DiskLocationSpec spec;
    for (const auto& field : value) {
      const std::string key =
          absl::StrCat(path, ".", field.first.IsScalar() ? field.first.Scalar() : "?");
      const std::string source = absl::StrCat(Location(file, field.first.Mark()), ": ", key);
      const std::string text = field.second.IsScalar() ? field.second.Scalar() : "";
      if (!field.first.IsScalar()) {
        config.warnings.push_back(absl::StrCat(source, ": unknown key (ignored)"));
      } else if (field.first.Scalar() == "path") {
        if (!field.second.IsScalar() || text.empty()) {
          return Invalid(source,
                         absl::StrCat("expected a directory, got ", Describe(field.second)));
        }
        spec.path = ExpandUser(text);
        if (spec.path.front() != '/') {
          return Invalid(source, absl::StrCat(Quote(text), " is not an absolute path"));
        }
      } else if (field.first.Scalar() == "high_watermark") {
        double w = 0;
        if (!field.second.IsScalar() || !absl::SimpleAtod(absl::StripAsciiWhitespace(text), &w) ||
            !(w > 0 && w <= 1)) {
          return Invalid(source, absl::StrCat(Quote(text),
                                              " is not a share of the disk above 0 and at most 1 "
                                              "(0.9: stop at 90% full)"));
        }
        spec.high_watermark = w;
      } else {
        config.warnings.push_back(absl::StrCat(source, ": unknown key (ignored)"));
      }
    }
    if (name.Scalar() == "primary" && !spec.path.empty()) {
      return Invalid(absl::StrCat(where, ": ", path),
                     "the primary location is client.model_cache_dir: set only its "
                     "high_watermark here");
    }
    if (name.Scalar() != "primary" && spec.path.empty()) {
      return Invalid(absl::StrCat(where, ": ", path), "a path is required");
    }
    config.client.disk_locations[name.Scalar()] = std::move(spec);
  }
  return absl::OkStatus();
}

}  // namespace gswarm::common::config_internal
