#include "client/instance_record.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gswarm::client {
namespace {

nlohmann::json CallsJson(const std::vector<common::EngineCall>& calls) {
  nlohmann::json out = nlohmann::json::array();
  for (const common::EngineCall& call : calls) {
    out.push_back({{"method", call.method}, {"path", call.path}, {"body", call.body}});
  }
  return out;
}

std::vector<common::EngineCall> ParseCalls(const nlohmann::json& json) {
  std::vector<common::EngineCall> calls;
  for (const nlohmann::json& call : json) {
    calls.push_back({call.at("method").get<std::string>(), call.at("path").get<std::string>(),
                     call.value("body", "")});
  }
  return calls;
}

}  // namespace

std::string InstanceRecordToJson(const InstanceRecord& r) {
  const InstanceSpec& s = r.spec;
  nlohmann::json j = {
      {"version", 1},
      {"id", s.id},
      {"pid", r.pid},
      {"pgid", r.pgid},
      {"start_ticks", r.start_ticks},
      {"started_at_ms", absl::ToUnixMillis(r.started_at)},
      {"load_time_ms", r.load_time_ms},
      {"restarts", r.restarts},
      {"model_name", s.model_name},
      {"engine", s.engine},
      {"argv", s.argv},
      {"env", s.env},
      {"gpu_device", s.gpu_device},
      {"host", s.host},
      {"port", s.port},
      {"health_path", s.health_path},
      {"ready_timeout_ms", absl::ToInt64Milliseconds(s.ready_timeout)},
      {"source_tier", s.source_tier},
      {"managed_by", s.managed_by},
      {"sleep_level", r.sleep_level},
      {"stop_argv", s.stop_argv},
      {"wake", CallsJson(s.wake)},
      {"reload", CallsJson(s.reload)},
  };
  nlohmann::json& sleep = j["sleep"] = nlohmann::json::array();
  for (const std::vector<common::EngineCall>& level : s.sleep) sleep.push_back(CallsJson(level));
  return j.dump(2) + "\n";
}

absl::StatusOr<InstanceRecord> ParseInstanceRecord(absl::string_view json) {
  // nlohmann throws on malformed input and on a field of the wrong type: both end up here.
  try {
    nlohmann::json j = nlohmann::json::parse(json.begin(), json.end());
    InstanceRecord r;
    InstanceSpec& s = r.spec;
    j.at("id").get_to(s.id);
    r.pid = j.at("pid").get<pid_t>();
    r.pgid = j.at("pgid").get<pid_t>();
    r.start_ticks = j.at("start_ticks").get<uint64_t>();
    r.started_at = absl::FromUnixMillis(j.value("started_at_ms", int64_t{0}));
    r.load_time_ms = j.value("load_time_ms", uint64_t{0});
    r.restarts = j.value("restarts", uint32_t{0});
    s.model_name = j.value("model_name", "");
    s.engine = j.value("engine", "");
    j.at("argv").get_to(s.argv);
    s.env = j.value("env", std::map<std::string, std::string>{});
    s.gpu_device = j.value("gpu_device", "");
    s.host = j.value("host", "127.0.0.1");
    j.at("port").get_to(s.port);
    s.health_path = j.value("health_path", "/health");
    s.ready_timeout = absl::Milliseconds(j.value("ready_timeout_ms", int64_t{600000}));
    s.source_tier = j.value("source_tier", "");
    s.managed_by = j.value("managed_by", "");
    r.sleep_level = j.value("sleep_level", uint32_t{0});
    s.stop_argv = j.value("stop_argv", std::vector<std::string>{});
    for (const nlohmann::json& level : j.value("sleep", nlohmann::json::array())) {
      s.sleep.push_back(ParseCalls(level));
    }
    s.wake = ParseCalls(j.value("wake", nlohmann::json::array()));
    s.reload = ParseCalls(j.value("reload", nlohmann::json::array()));
    if (s.id.empty() || r.pid <= 0 || r.pgid <= 0 || s.argv.empty()) {
      return absl::InvalidArgumentError("instance record lacks an id, a pid, a pgid or argv");
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("instance record: ", e.what()));
  }
}

}  // namespace gswarm::client
