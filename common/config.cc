#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <set>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/auth.h"
#include "common/model_name.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/text.h"

extern char** environ;

namespace gswarm::common {
namespace {

// Where a key's value lives in Config; its alternative is the key's type.
using Field = std::variant<std::string*, int*, bool*, double*, std::vector<std::string>*>;

// kModelNames applies to each entry of a list.
enum class Check { kNone, kPort, kNonNegative, kFraction, kPositive, kAtLeastOne, kModelNames };

// One known key. This table drives the file, the environment, flags, JSON and YAML output, so a
// key is declared once. Keys of one section stay together: ConfigToYaml relies on it.
struct Key {
  const char* path;
  Field (*field)(Config&);
  Check check = Check::kNone;
  bool secret = false;
};

#define GSWARM_KEY(path, member, ...)                               \
  Key {                                                             \
    path, [](Config& c) -> Field { return &c.member; }, __VA_ARGS__ \
  }

constexpr Key kKeys[] = {
    GSWARM_KEY("host.host", host.host),
    GSWARM_KEY("host.port", host.port, Check::kPort),
    GSWARM_KEY("host.grpc_port", host.grpc_port, Check::kPort),
    GSWARM_KEY("host.model_cache_dir", host.model_cache_dir),
    GSWARM_KEY("host.huggingface_cache_dir", host.huggingface_cache_dir),
    GSWARM_KEY("host.auto_discover_models", host.auto_discover_models),
    GSWARM_KEY("host.cleanup_on_shutdown", host.cleanup_on_shutdown),
    GSWARM_KEY("host.prefer_peers", host.prefer_peers),
    GSWARM_KEY("host.keep_alive_s", host.keep_alive_s),
    GSWARM_KEY("host.max_loaded_models", host.max_loaded_models, Check::kNonNegative),
    GSWARM_KEY("host.preload", host.preload, Check::kModelNames),
    GSWARM_KEY("host.autoload", host.autoload),
    GSWARM_KEY("host.router_queue_size", host.router_queue_size, Check::kNonNegative),
    GSWARM_KEY("host.router_queue_timeout_s", host.router_queue_timeout_s, Check::kPositive),
    GSWARM_KEY("host.auth_token", host.auth_token, Check::kNone, true),
    GSWARM_KEY("host.insecure", host.insecure),
    GSWARM_KEY("host.storage_devices.disk.enabled", host.disk.enabled),
    GSWARM_KEY("host.storage_devices.disk.path", host.disk.path),
    GSWARM_KEY("host.storage_devices.disk.max_size_gb", host.disk.max_size_gb, Check::kNonNegative),
    GSWARM_KEY("host.storage_devices.dram.enabled", host.dram.enabled),
    GSWARM_KEY("host.storage_devices.dram.path", host.dram.path),
    GSWARM_KEY("host.storage_devices.dram.max_size_gb", host.dram.max_size_gb, Check::kNonNegative),
    GSWARM_KEY("host.tls.cert_file", host.tls.cert_file),
    GSWARM_KEY("host.tls.key_file", host.tls.key_file),
    GSWARM_KEY("host.tls.ca_file", host.tls.ca_file),
    GSWARM_KEY("client.host_url", client.host_url),
    GSWARM_KEY("client.host_grpc", client.host_grpc),
    GSWARM_KEY("client.node_id", client.node_id),
    GSWARM_KEY("client.model_cache_dir", client.model_cache_dir),
    GSWARM_KEY("client.dram_cache_dir", client.dram_cache_dir),
    GSWARM_KEY("client.dram_cache_size", client.dram_cache_size, Check::kNonNegative),
    GSWARM_KEY("client.gpu_memory_fraction", client.gpu_memory_fraction, Check::kFraction),
    GSWARM_KEY("client.default_gpu_memory_utilization", client.default_gpu_memory_utilization,
               Check::kFraction),
    GSWARM_KEY("client.max_concurrent_requests", client.max_concurrent_requests,
               Check::kAtLeastOne),
    GSWARM_KEY("client.auth_token", client.auth_token, Check::kNone, true),
    GSWARM_KEY("client.data_port", client.data_port, Check::kPort),
    GSWARM_KEY("client.heartbeat_interval_s", client.heartbeat_interval_s, Check::kPositive),
    GSWARM_KEY("client.default_engine", client.default_engine),
};

#undef GSWARM_KEY

const Key* FindKey(absl::string_view path) {
  for (const Key& key : kKeys) {
    if (key.path == path) return &key;
  }
  return nullptr;
}

// "host", "host.storage_devices", ...: a prefix of some key.
bool IsSection(absl::string_view path) {
  for (const Key& key : kKeys) {
    absl::string_view candidate = key.path;
    if (candidate.size() > path.size() && absl::StartsWith(candidate, path) &&
        candidate[path.size()] == '.') {
      return true;
    }
  }
  return false;
}

// Only reads through the pointer; the table's accessors take Config& to serve both directions.
Field ReadField(const Key& key, const Config& config) {
  return key.field(const_cast<Config&>(config));
}

absl::Status Invalid(absl::string_view source, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", problem));
}

std::string TypeName(const Field& field) {
  switch (field.index()) {
    case 0:
      return "a string";
    case 1:
      return "an integer";
    case 2:
      return "true or false";
    case 3:
      return "a number";
    default:
      return "a list of strings";
  }
}

// What a key's value should be, for "expected ..., got ..." messages.
std::string ExpectedValue(const Key& key, const Field& field) {
  return key.check == Check::kModelNames ? "a list of model names" : TypeName(field);
}

// The problem with `value` for `check`, or "" when there is none.
std::string Violation(Check check, double value) {
  switch (check) {
    case Check::kNone:
      return "";
    case Check::kPort:
      return value >= 1 && value <= 65535 ? "" : "is out of range (1-65535)";
    case Check::kNonNegative:
      return value >= 0 ? "" : "must not be negative";
    case Check::kFraction:
      return value > 0 && value <= 1 ? "" : "is out of range (must be > 0 and <= 1)";
    case Check::kPositive:
      return value > 0 ? "" : "must be greater than 0";
    case Check::kAtLeastOne:
      return value >= 1 ? "" : "must be at least 1";
    case Check::kModelNames:
      return "";  // checked per entry by EntryViolation
  }
  return "";
}

// The problem with list entry `entry` for `check`, or "" when there is none. Model names follow
// the registry's rule (host/registry.h): one safe path component.
std::string EntryViolation(Check check, absl::string_view entry) {
  if (check != Check::kModelNames) return "";
  return std::string(ValidateModelName(entry).message());
}

// Appends `text`, trimmed, to `list` after checking it; an empty entry is dropped.
absl::Status AddEntry(const Key& key, absl::string_view text, absl::string_view source,
                      std::vector<std::string>& list) {
  absl::string_view entry = absl::StripAsciiWhitespace(text);
  if (entry.empty()) return absl::OkStatus();
  if (std::string problem = EntryViolation(key.check, entry); !problem.empty()) {
    return Invalid(source, problem);
  }
  list.emplace_back(entry);
  return absl::OkStatus();
}

bool ParseBool(absl::string_view text, bool* out) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") {
    *out = true;
  } else if (lower == "false" || lower == "no" || lower == "off" || lower == "0") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

// Parses `text` by the key's type, validates it and stores it. Messages start with `source`.
absl::Status ParseInto(const Key& key, Field field, absl::string_view text,
                       absl::string_view source) {
  if (auto* s = std::get_if<std::string*>(&field)) {
    **s = std::string(text);
    return absl::OkStatus();
  }
  if (auto* list = std::get_if<std::vector<std::string>*>(&field)) {
    std::vector<std::string> entries;  // the old value stays if one entry is rejected
    for (absl::string_view entry : absl::StrSplit(text, ',')) {
      RETURN_IF_ERROR(AddEntry(key, entry, source, entries));
    }
    **list = std::move(entries);
    return absl::OkStatus();
  }
  absl::string_view t = absl::StripAsciiWhitespace(text);
  if (auto* b = std::get_if<bool*>(&field)) {
    if (!ParseBool(t, *b)) {
      return Invalid(source, absl::StrCat(Quote(text), " is not a boolean (use true or false)"));
    }
    return absl::OkStatus();
  }
  if (auto* i = std::get_if<int*>(&field)) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(t, &v)) return Invalid(source, Quote(text) + " is not an integer");
    if (std::string problem = Violation(key.check, static_cast<double>(v)); !problem.empty()) {
      return Invalid(source, absl::StrCat(t, " ", problem));
    }
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
      return Invalid(source, absl::StrCat(t, " is out of range for an integer"));
    }
    **i = static_cast<int>(v);
    return absl::OkStatus();
  }
  double* d = std::get<double*>(field);
  double v = 0;
  if (!absl::SimpleAtod(t, &v) || !std::isfinite(v)) {
    return Invalid(source, Quote(text) + " is not a number");
  }
  if (std::string problem = Violation(key.check, v); !problem.empty()) {
    return Invalid(source, absl::StrCat(t, " ", problem));
  }
  *d = v;
  return absl::OkStatus();
}

// "file:line" (1-based), or just "file" when the node has no position.
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

// Sets `key` from `value`, the YAML node after the key's name (at `mark`) in `file`.
absl::Status ApplyNode(Config& config, const Key& key, const YAML::Mark& mark,
                       const YAML::Node& value, absl::string_view file) {
  const std::string source = absl::StrCat(Location(file, mark), ": ", key.path);
  Field field = key.field(config);
  if (auto* list = std::get_if<std::vector<std::string>*>(&field); list && value.IsSequence()) {
    std::vector<std::string> entries;
    for (const YAML::Node& item : value) {
      // A block list's entries have lines of their own; a message names the entry's.
      const std::string at = absl::StrCat(Location(file, item.Mark()), ": ", key.path);
      if (item.IsNull()) continue;  // `- ` with nothing after it
      if (!item.IsScalar()) {
        return Invalid(at,
                       absl::StrCat("expected each entry to be a string, got ", Describe(item)));
      }
      RETURN_IF_ERROR(AddEntry(key, item.Scalar(), at, entries));
    }
    **list = std::move(entries);
    return absl::OkStatus();
  }
  // A scalar where a list goes is split on commas.
  if (value.IsScalar()) return ParseInto(key, field, value.Scalar(), source);
  if (value.IsNull() && (std::holds_alternative<std::string*>(field) ||
                         std::holds_alternative<std::vector<std::string>*>(field))) {
    // `node_id:` with nothing after it: an empty string (an empty list).
    return ParseInto(key, field, "", source);
  }
  return Invalid(source,
                 absl::StrCat("expected ", ExpectedValue(key, field), ", got ", Describe(value)));
}

// client.engines: a map, not a key of the table, read by ReadEngines.
constexpr char kEnginesKey[] = "client.engines";

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

// One entry of client.engines at key path `path`; `spec` holds the preset of that name, if any.
absl::Status ReadEngine(const YAML::Node& node, const YAML::Mark& name_mark, absl::string_view file,
                        const std::string& path, EngineSpec& spec, Config& config) {
  if (!node.IsMap()) {
    return Invalid(absl::StrCat(Location(file, name_mark), ": ", path),
                   absl::StrCat("expected a map with command (and optionally health_path, "
                                "ready_timeout_s, env), got ",
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
    } else if (field == "ready_timeout_s") {
      double seconds = 0;
      if (!value.IsScalar()) {
        return Invalid(source, absl::StrCat("expected a number, got ", Describe(value)));
      }
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(value.Scalar()), &seconds) ||
          !std::isfinite(seconds)) {
        return Invalid(source, Quote(value.Scalar()) + " is not a number");
      }
      spec.ready_timeout_s = seconds;
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

// client.default_engine must name a preset or a configured engine.
absl::Status CheckDefaultEngine(const ClientConfig& client, absl::string_view source) {
  const std::map<std::string, EngineSpec> engines = EffectiveEngines(client);
  if (engines.count(client.default_engine) > 0) return absl::OkStatus();
  std::vector<std::string> names;
  for (const auto& [name, spec] : engines) names.push_back(name);
  return Invalid(source, absl::StrCat(Quote(client.default_engine),
                                      " is not a known engine (known: ", absl::StrJoin(names, ", "),
                                      "; configure others under client.engines)"));
}

// Reads the map `node` at section `prefix` ("" for the top level) into `config`.
absl::Status ReadSection(const YAML::Node& node, const std::string& prefix, absl::string_view file,
                         Config& config, std::set<std::string>& seen) {
  for (const auto& entry : node) {  // a by-value pair; `it->first` would dangle
    const YAML::Node& name = entry.first;
    const YAML::Node& value = entry.second;
    std::string where = Location(file, name.Mark());
    if (!name.IsScalar()) {
      config.warnings.push_back(absl::StrCat(where, ": unknown key (", Describe(name), ") in ",
                                             prefix.empty() ? "the top level" : prefix,
                                             " (ignored)"));
      continue;
    }
    std::string path = prefix.empty() ? name.Scalar() : absl::StrCat(prefix, ".", name.Scalar());
    if (!seen.insert(path).second) {
      config.warnings.push_back(
          absl::StrCat(where, ": duplicate key \"", path, "\" (the last one wins)"));
    }
    if (const Key* key = FindKey(path)) {
      RETURN_IF_ERROR(ApplyNode(config, *key, name.Mark(), value, file));
      config.explicit_keys.insert(path);
    } else if (path == kEnginesKey) {
      RETURN_IF_ERROR(ReadEngines(value, file, config));
    } else if (IsSection(path)) {
      if (value.IsNull()) continue;  // `client:` with no keys under it
      if (!value.IsMap()) {
        return Invalid(absl::StrCat(where, ": ", path),
                       absl::StrCat("expected a section (a map of keys), got ", Describe(value)));
      }
      RETURN_IF_ERROR(ReadSection(value, path, file, config, seen));
    } else {
      config.warnings.push_back(absl::StrCat(where, ": unknown key \"", path, "\" (ignored)"));
    }
  }
  return absl::OkStatus();
}

std::string EnvName(absl::string_view path) {
  return absl::StrCat("GSWARM_", absl::AsciiStrToUpper(absl::StrReplaceAll(path, {{".", "_"}})));
}

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    absl::string_view text(*entry);
    size_t eq = text.find('=');
    if (eq == absl::string_view::npos || !absl::StartsWith(text, "GSWARM_")) continue;
    env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
  }
  return env;
}

absl::Status ApplyEnvironment(Config& config, const std::map<std::string, std::string>& env) {
  // GSWARM_TOKEN first, so that GSWARM_HOST_AUTH_TOKEN / GSWARM_CLIENT_AUTH_TOKEN win over it.
  if (auto it = env.find("GSWARM_TOKEN"); it != env.end()) {
    for (const char* key : {"host.auth_token", "client.auth_token"}) {
      RETURN_IF_ERROR(SetConfigValue(config, key, it->second, "environment GSWARM_TOKEN"));
    }
  }
  for (const Key& key : kKeys) {
    std::string name = EnvName(key.path);
    if (auto it = env.find(name); it != env.end()) {
      RETURN_IF_ERROR(SetConfigValue(config, key.path, it->second, "environment " + name));
    }
  }
  return absl::OkStatus();
}

nlohmann::json ValueJson(const Key& key, const Config& config) {
  Field field = ReadField(key, config);
  if (auto* s = std::get_if<std::string*>(&field)) {
    return key.secret && !(*s)->empty() ? std::string("***") : **s;
  }
  if (auto* i = std::get_if<int*>(&field)) return **i;
  if (auto* b = std::get_if<bool*>(&field)) return **b;
  if (auto* list = std::get_if<std::vector<std::string>*>(&field)) return **list;
  return *std::get<double*>(field);
}

// `json` as YAML flow style: JSON is valid YAML; a list or map gets a space after each comma and
// colon, as a person would write it (["a", "b"], {k: "v"}).
std::string FlowYaml(const nlohmann::json& json) {
  auto dump = [](const nlohmann::json& value) {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::vector<std::string> items;
  if (json.is_array()) {
    for (const nlohmann::json& item : json) items.push_back(dump(item));
    return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
  }
  if (json.is_object()) {
    for (const auto& [key, value] : json.items()) {
      items.push_back(absl::StrCat(dump(key), ": ", dump(value)));
    }
    return absl::StrCat("{", absl::StrJoin(items, ", "), "}");
  }
  return dump(json);
}

// Engine environment variables whose values are masked like the auth tokens.
bool IsSecretVariable(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (const char* word : {"TOKEN", "SECRET", "PASSWORD", "KEY"}) {
    if (absl::StrContains(upper, word)) return true;
  }
  return false;
}

nlohmann::json EngineJson(const EngineSpec& spec) {
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [name, value] : spec.env) {
    env[name] = IsSecretVariable(name) && !value.empty() ? std::string("***") : value;
  }
  return {{"command", spec.command},
          {"health_path", spec.health_path},
          {"ready_timeout_s", spec.ready_timeout_s},
          {"env", std::move(env)}};
}

// client.engines as YAML lines under `client:`, in the order a reader wants them.
std::string EnginesYaml(const ClientConfig& client) {
  if (client.engines.empty()) return "  engines: {}\n";
  std::string out = "  engines:\n";
  for (const auto& [name, spec] : client.engines) {
    const bool plain = !name.empty() && absl::ascii_isalpha(static_cast<unsigned char>(name[0])) &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                                c == '_' || c == '.';
                       });
    const nlohmann::json json = EngineJson(spec);
    absl::StrAppend(&out, "    ", plain ? name : FlowYaml(name), ":\n",                  //
                    "      command: ", FlowYaml(json["command"]), "\n",                  //
                    "      health_path: ", FlowYaml(json["health_path"]), "\n",          //
                    "      ready_timeout_s: ", FlowYaml(json["ready_timeout_s"]), "\n",  //
                    "      env: ", FlowYaml(json["env"]), "\n");
  }
  return out;
}

}  // namespace

absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source_view) {
  const absl::string_view source = AV(source_view);
  Config config;
  try {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(yaml));
    } catch (const YAML::ParserException& e) {
      return Invalid(Location(source, e.mark), absl::StrCat("invalid YAML: ", e.msg));
    }
    if (root.IsNull()) return config;  // empty, or only comments
    if (!root.IsMap()) {
      return Invalid(
          Location(source, root.Mark()),
          absl::StrCat("expected a map with host: and client: sections, got ", Describe(root)));
    }
    std::set<std::string> seen;
    RETURN_IF_ERROR(ReadSection(root, "", source, config, seen));
    YAML::Mark mark = YAML::Mark::null_mark();  // where the file sets it, if it does
    const YAML::Node& const_root = root;        // const: lookups must not insert
    if (const YAML::Node client = const_root["client"]; client && client.IsMap()) {
      if (const YAML::Node engine = client["default_engine"]; engine) mark = engine.Mark();
    }
    RETURN_IF_ERROR(CheckDefaultEngine(
        config.client, absl::StrCat(Location(source, mark), ": client.default_engine")));
  } catch (const YAML::Exception& e) {
    return Invalid(Location(source, e.mark), absl::StrCat("invalid YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(source, ": cannot read the configuration: ", e.what()));
  }
  return config;
}

absl::Status SetConfigValue(Config& config, std::string_view key, std::string_view value,
                            std::string_view source) {
  const Key* known = FindKey(AV(key));
  if (known == nullptr) {
    return Invalid(AV(source), absl::StrCat("unknown key \"", AV(key), "\"",
                                            IsSection(AV(key)) ? " (a section, not a key)" : ""));
  }
  RETURN_IF_ERROR(ParseInto(*known, known->field(config), AV(value), AV(source)));
  config.explicit_keys.insert(known->path);
  if (absl::string_view(known->path) == "client.default_engine") {
    return CheckDefaultEngine(config.client, AV(source));
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> LoadConfig(const LoadOptions& options) {
  std::map<std::string, std::string> process_env;
  const std::map<std::string, std::string>* env = options.env;
  if (env == nullptr) {
    process_env = ProcessEnvironment();
    env = &process_env;
  }

  const bool explicit_path = !options.path.empty();
  std::string path;
  if (explicit_path) {
    path = ExpandUser(options.path);
  } else if (auto it = env->find("GSWARM_CONFIG"); it != env->end() && !it->second.empty()) {
    path = ExpandUser(it->second);
  } else {
    path = DefaultConfigPath();
  }

  absl::StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) {
    if (explicit_path) {
      return absl::NotFoundError(absl::StrCat(
          "config file ", path, " does not exist (omit --config to use ~/.gswarm.conf)"));
    }
    if (options.create_if_missing) {
      if (size_t slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
        RETURN_IF_ERROR(
            Annotate(MakeDirs(path.substr(0, slash)), "cannot create the default config file"));
      }
      RETURN_IF_ERROR(Annotate(WriteFileAtomically(path, DefaultConfigYaml(), 0600),
                               "cannot create the default config file"));
      text = DefaultConfigYaml();
    } else {
      path.clear();  // no file: the defaults
      text = std::string();
    }
  }
  if (!text.ok()) return Annotate(text.status(), "cannot load the configuration");

  Config config;
  if (!path.empty()) {
    ASSIGN_OR_RETURN(config, ParseConfig(*text, path));
    config.path = path;
  }
  RETURN_IF_ERROR(ApplyEnvironment(config, *env));
  for (const auto& [key, value] : options.overrides) {
    RETURN_IF_ERROR(SetConfigValue(config, key, value, absl::StrCat("flag ", key)));
  }
  return config;
}

std::string DefaultConfigYaml() {
  return R"yaml(# GSwarm configuration.
# Precedence: command-line flags > environment (GSWARM_HOST_PORT, GSWARM_CLIENT_NODE_ID, ...;
# GSWARM_TOKEN sets both auth tokens) > this file > built-in defaults.

host:
  host: "0.0.0.0"            # address the HTTP and gRPC servers bind to
  port: 8100                 # HTTP: REST API, OpenAI router, metrics, dashboard
  grpc_port: 8101            # gRPC: public API and the agent link
  model_cache_dir: "~/.cache/gswarm/models"
  huggingface_cache_dir: "~/.cache/huggingface"
  auto_discover_models: true # register models found on disk at start-up
  cleanup_on_shutdown: true  # stop instances and empty the DRAM tier when an agent exits
  prefer_peers: true         # fetch a commit another node holds from that node, not the Hub
  keep_alive_s: 300          # router: stop an on-demand instance after this idle time (-1: never)
  max_loaded_models: 0       # router: models loaded on demand at once (0: no limit)
  preload: []                # router: models to load at start-up and keep loaded, e.g. [a, b]
  autoload: true             # router: load a requested model that has no ready instance
  router_queue_size: 64      # router: requests waiting for a busy instance; beyond it 429
  router_queue_timeout_s: 60 # router: seconds a request waits (queue or load) before 503
  # Bearer token for every call but /health. Empty: none on loopback; beyond loopback one is
  # generated into ~/.cache/gswarm/token.
  auth_token: ""

  # The cluster's default tier layout, sent to every agent on connect.
  storage_devices:
    disk:
      enabled: true
      path: "~/.cache/gswarm/models"
    dram:
      enabled: true
      path: "/dev/shm/gswarm_models"
      max_size_gb: 64        # GiB; 0: bounded only by the device

  # TLS for gRPC and HTTP:
  # tls:
  #   cert_file: "/etc/gswarm/host.pem"
  #   key_file: "/etc/gswarm/host.key"

client:
  host_url: "http://localhost:8100"
  host_grpc: ""              # host:port; empty: the host of host_url, port 8101
  node_id: ""                # empty: this machine's hostname
  model_cache_dir: "~/.cache/gswarm/models"
  dram_cache_dir: "/dev/shm/gswarm_models"
  dram_cache_size: 16        # DRAM tier budget, GiB
  gpu_memory_fraction: 0.9   # share of each GPU's memory instances may use
  default_gpu_memory_utilization: 0.90
  max_concurrent_requests: 256
  auth_token: ""             # token sent to the host; GSWARM_TOKEN also sets it
  data_port: 8102            # serves this node's tiers to peers
  heartbeat_interval_s: 2    # seconds between heartbeats to the host
  default_engine: "vllm"     # the engine `serve` starts unless told: vllm, llama-server, sglang
                             # or one under engines

  # Inference engines by name: a command (a list, or one string split on spaces) with the
  # placeholders {model_path} {model_file} {model_name} {host} {port} {gpu}
  # {gpu_memory_utilization} {max_concurrent_requests} ({{ and }} are literal braces), the
  # health path polled until ready, a ready timeout and extra environment. An entry named like a
  # preset (vllm, llama-server, sglang) changes only the fields it gives.
  # engines:
  #   vllm:                    # the preset, with more time to load
  #     ready_timeout_s: 1200
  #   my-server:
  #     command: "/opt/my-server --model {model_path} --name {model_name} --port {port}"
  #     health_path: "/healthz"
  #     ready_timeout_s: 120
  #     env: {HF_HUB_OFFLINE: "1"}
  #   my-other:
  #     command: ["my-other", "--config", "{{\"port\": {port}}}"]
)yaml";
}

nlohmann::json ConfigToJson(const Config& config) {
  nlohmann::json out = nlohmann::json::object();
  for (const Key& key : kKeys) {
    nlohmann::json* node = &out;
    for (absl::string_view part : absl::StrSplit(key.path, '.')) node = &(*node)[std::string(part)];
    *node = ValueJson(key, config);
  }
  nlohmann::json& engines = out["client"]["engines"] = nlohmann::json::object();
  for (const auto& [name, spec] : config.client.engines) engines[name] = EngineJson(spec);
  return out;
}

std::string ConfigToYaml(const Config& config) {
  std::string out;
  std::vector<absl::string_view> open;   // the sections the previous key sat in
  const Key* last_client_key = nullptr;  // client.engines follows it
  for (const Key& key : kKeys) {
    if (absl::StartsWith(key.path, "client.")) last_client_key = &key;
  }
  for (const Key& key : kKeys) {
    std::vector<absl::string_view> parts = absl::StrSplit(key.path, '.');
    absl::string_view name = parts.back();
    parts.pop_back();
    size_t common = 0;
    while (common < open.size() && common < parts.size() && open[common] == parts[common]) {
      ++common;
    }
    open.resize(common);
    for (size_t i = common; i < parts.size(); ++i) {
      if (i == 0 && !out.empty()) out += "\n";
      absl::StrAppend(&out, std::string(2 * i, ' '), parts[i], ":\n");
      open.push_back(parts[i]);
    }
    // Strings come out double-quoted and escaped, lists as ["a", "b"].
    absl::StrAppend(&out, std::string(2 * parts.size(), ' '), name, ": ",
                    FlowYaml(ValueJson(key, config)), "\n");
    if (&key == last_client_key) out += EnginesYaml(config.client);
  }
  return out;
}

std::map<std::string, EngineSpec> EffectiveEngines(const ClientConfig& client) {
  std::map<std::string, EngineSpec> engines = BuiltinEngines();
  for (const auto& [name, spec] : client.engines) engines[name] = spec;
  return engines;
}

std::string HostGrpcTarget(const ClientConfig& client) {
  if (!client.host_grpc.empty()) return client.host_grpc;
  absl::string_view s = absl::StripAsciiWhitespace(client.host_url);
  if (size_t scheme = s.find("://"); scheme != absl::string_view::npos) s.remove_prefix(scheme + 3);
  s = s.substr(0, s.find_first_of("/?#"));
  if (size_t at = s.rfind('@'); at != absl::string_view::npos) s.remove_prefix(at + 1);
  std::string host;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    host = close == absl::string_view::npos ? absl::StrCat(s, "]")
                                            : std::string(s.substr(0, close + 1));
  } else if (std::count(s.begin(), s.end(), ':') > 1) {
    host = absl::StrCat("[", s, "]");  // a bare IPv6 literal
  } else {
    host = std::string(s.substr(0, s.find(':')));
  }
  if (host.empty()) host = "localhost";
  return absl::StrCat(host, ":", HostConfig{}.grpc_port);
}

std::string HostGrpcTarget(const Config& config) {
  std::string target = HostGrpcTarget(config.client);
  if (!config.client.host_grpc.empty()) return target;
  const size_t colon = target.rfind(':');
  const std::string host = target.substr(0, colon);
  if (!IsLoopbackAddress(host)) return target;
  return absl::StrCat(host, ":", config.host.grpc_port);
}

}  // namespace gswarm::common
