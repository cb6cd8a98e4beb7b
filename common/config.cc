#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdint>
#include <exception>
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
#include "common/config_keys.h"
#include "common/config_yaml.h"
#include "common/model_name.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/text.h"

extern char** environ;

namespace gswarm::common {
namespace {

using config_internal::AddEntry;
using config_internal::Check;
using config_internal::Describe;
using config_internal::ExpectedValue;
using config_internal::Field;
using config_internal::FindKey;
using config_internal::Invalid;
using config_internal::IsSection;
using config_internal::kDiskLocationsKey;
using config_internal::kEnginesKey;
using config_internal::Key;
using config_internal::Location;
using config_internal::ParseInto;
using config_internal::ReadDiskLocations;
using config_internal::ReadEngines;

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
    } else if (path == kDiskLocationsKey) {
      RETURN_IF_ERROR(ReadDiskLocations(value, file, config));
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
  for (const Key& key : config_internal::AllKeys()) {
    std::string name = EnvName(key.path);
    if (auto it = env.find(name); it != env.end()) {
      RETURN_IF_ERROR(SetConfigValue(config, key.path, it->second, "environment " + name));
    }
  }
  return absl::OkStatus();
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

bool IsDiskLocationName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && name != "custom" &&
         std::all_of(name.begin(), name.end(),
                     [](char c) {
                       return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                              c == '_' || c == '.';
                     }) &&
         name != "." && name != "..";
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
