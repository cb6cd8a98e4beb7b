#include "common/config_keys.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/model_name.h"
#include "common/status.h"
#include "common/text.h"

namespace gswarm::common::config_internal {
namespace {

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
    GSWARM_KEY("host.metrics_public", host.metrics_public),
    GSWARM_KEY("host.http_io_threads", host.http_io_threads, Check::kNonNegative),
    GSWARM_KEY("host.http_max_body_mb", host.http_max_body_mb, Check::kPositive),
    GSWARM_KEY("host.http_header_timeout_s", host.http_header_timeout_s, Check::kPositive),
    GSWARM_KEY("host.http_keep_alive_timeout_s", host.http_keep_alive_timeout_s, Check::kPositive),
    GSWARM_KEY("host.auth_token", host.auth_token, Check::kNone, true),
    GSWARM_KEY("host.insecure", host.insecure),
    GSWARM_KEY("host.storage_devices.disk.enabled", host.disk.enabled),
    GSWARM_KEY("host.storage_devices.disk.path", host.disk.path),
    GSWARM_KEY("host.storage_devices.disk.max_size_gb", host.disk.max_size_gb, Check::kGiB),
    GSWARM_KEY("host.storage_devices.dram.enabled", host.dram.enabled),
    GSWARM_KEY("host.storage_devices.dram.path", host.dram.path),
    GSWARM_KEY("host.storage_devices.dram.max_size_gb", host.dram.max_size_gb, Check::kGiB),
    GSWARM_KEY("host.tls.cert_file", host.tls.cert_file),
    GSWARM_KEY("host.tls.key_file", host.tls.key_file),
    GSWARM_KEY("host.tls.ca_file", host.tls.ca_file),
    GSWARM_KEY("client.host_url", client.host_url),
    GSWARM_KEY("client.host_grpc", client.host_grpc),
    GSWARM_KEY("client.node_id", client.node_id),
    GSWARM_KEY("client.model_cache_dir", client.model_cache_dir),
    GSWARM_KEY("client.dram_cache_dir", client.dram_cache_dir),
    GSWARM_KEY("client.dram_cache_size", client.dram_cache_size, Check::kGiB),
    GSWARM_KEY("client.gpu_memory_fraction", client.gpu_memory_fraction, Check::kFraction),
    GSWARM_KEY("client.cpu_memory_budget", client.cpu_memory_budget, Check::kGiB),
    GSWARM_KEY("client.unified_memory", client.unified_memory),
    GSWARM_KEY("client.default_gpu_memory_utilization", client.default_gpu_memory_utilization,
               Check::kFraction),
    GSWARM_KEY("client.max_concurrent_requests", client.max_concurrent_requests,
               Check::kAtLeastOne),
    GSWARM_KEY("client.engine_host", client.engine_host),
    GSWARM_KEY("client.cleanup_on_shutdown", client.cleanup_on_shutdown),
    GSWARM_KEY("client.huggingface_cache_dir", client.huggingface_cache_dir),
    GSWARM_KEY("client.auth_token", client.auth_token, Check::kNone, true),
    GSWARM_KEY("client.data_port", client.data_port, Check::kPort),
    GSWARM_KEY("client.download_connections", client.download_connections, Check::kAtLeastOne),
    GSWARM_KEY("client.heartbeat_interval_s", client.heartbeat_interval_s, Check::kPositive),
    GSWARM_KEY("client.default_engine", client.default_engine),
};

#undef GSWARM_KEY

}  // namespace

absl::Span<const Key> AllKeys() { return kKeys; }

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
    case Check::kGiB:
      return value >= 0 && value <= 1e9 ? "" : "is out of range (0 to 1e9 GiB)";
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

}  // namespace gswarm::common::config_internal
