#pragma once

// The config key table and typed parsing, shared by the config's readers (config.cc) and its
// renderers (config_render.cc). Internal to common/: include config.h instead.

#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/config.h"
#include "nlohmann/json.hpp"

namespace gswarm::common::config_internal {

// Where a key's value lives in Config; its alternative is the key's type.
using Field = std::variant<std::string*, int*, bool*, double*, std::vector<std::string>*>;

// kModelNames applies to each entry of a list.
enum class Check {
  kNone,
  kPort,
  kNonNegative,
  kGiB,  // a size in GiB: 0 to 1e9 (bytes must fit 64 bits)
  kFraction,
  kPositive,
  kAtLeastOne,
  kModelNames
};

// One known key. This table drives the file, the environment, flags, JSON and YAML output, so a
// key is declared once. Keys of one section stay together: ConfigToYaml relies on it.
struct Key {
  const char* path;
  Field (*field)(Config&);
  Check check = Check::kNone;
  bool secret = false;
};

// Every known key, in the order the default file lists them.
absl::Span<const Key> AllKeys();
const Key* FindKey(absl::string_view path);
// "host", "host.storage_devices", ...: a prefix of some key.
bool IsSection(absl::string_view path);
// Only reads through the pointer; the table's accessors take Config& to serve both directions.
Field ReadField(const Key& key, const Config& config);
// INVALID_ARGUMENT "<source>: <problem>".
absl::Status Invalid(absl::string_view source, absl::string_view problem);
// "a number", "a list of model names", ...: what `key` takes, for messages.
std::string ExpectedValue(const Key& key, const Field& field);
// Adds one list entry after its check.
absl::Status AddEntry(const Key& key, absl::string_view text, absl::string_view source,
                      std::vector<std::string>& list);
// Parses `text` into `field` as `key` says, checking its range; errors name `source`.
absl::Status ParseInto(const Key& key, Field field, absl::string_view text,
                       absl::string_view source);
// The key's value as JSON, secrets masked.
nlohmann::json ValueJson(const Key& key, const Config& config);

}  // namespace gswarm::common::config_internal
