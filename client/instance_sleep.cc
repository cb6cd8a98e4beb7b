// InstanceSupervisor::Sleep and Wake: an engine that frees its GPU memory without exiting (vLLM's
// sleep mode, SGLang's memory saver) and takes it back in a fraction of a cold start.

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/http_client.h"
#include "client/instance_supervisor.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

constexpr absl::Duration kCallTimeout = absl::Minutes(5);  // a level-2 reload reads the weights
constexpr size_t kQuotedBody = 300;                        // of an answer, in an error

// Sends `calls` to the engine in order; the first that does not answer 2xx ends it.
absl::Status CallEngine(const InstanceSpec& spec, const std::vector<common::EngineCall>& calls) {
  for (const common::EngineCall& call : calls) {
    HttpRequest request;
    request.method = call.method;
    request.url = absl::StrCat("http://", LoopbackFor(spec.host), ":", spec.port, call.path);
    request.body = call.body;
    if (!call.body.empty()) request.headers.push_back("Content-Type: application/json");
    request.timeout = kCallTimeout;
    request.follow_redirects = false;
    request.max_body_bytes = 1 << 20;
    absl::StatusOr<HttpResponse> response = SendHttpRequest(request);
    if (!response.ok()) {
      return absl::UnavailableError(absl::StrCat("engine ", spec.engine, ": ", call.method, " ",
                                                 call.path, ": ", response.status().message()));
    }
    if (response->status < 200 || response->status >= 300) {
      std::string body = response->body.substr(0, kQuotedBody);
      return absl::FailedPreconditionError(
          absl::StrCat("engine ", spec.engine, ": ", call.method, " ", call.path, " answered HTTP ",
                       response->status, body.empty() ? "" : ": ", body));
    }
  }
  return absl::OkStatus();
}

// Whether the instance's engine sleeps at `level`.
absl::Status CanSleep(const InstanceSpec& spec, int level) {
  const int deepest = static_cast<int>(spec.sleep.size());
  if (deepest == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "engine \"", spec.engine,
        "\" cannot sleep (give it sleep and wake calls under client.engines.", spec.engine, ")"));
  }
  if (level < 1 || level > deepest) {
    return absl::FailedPreconditionError(
        absl::StrCat("engine \"", spec.engine, "\" sleeps at level 1",
                     deepest == 2 ? " or 2" : " only", "; level ", level, " is not one"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<InstanceSupervisor::Entry>> InstanceSupervisor::BeginSwitch(
    const std::string& id, const char* expected, const char* verb,
    const std::function<absl::Status(const InstanceSpec&)>& check) {
  gswarm::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("instance ", id, " is unknown on this node"));
  }
  std::shared_ptr<Entry> e = it->second;
  if (check) RETURN_IF_ERROR(check(e->spec));
  if (e->switching) {
    return absl::FailedPreconditionError(
        absl::StrCat("instance ", id, " is already going to sleep or waking; try again"));
  }
  if (e->info.state() != expected) {
    return absl::FailedPreconditionError(absl::StrCat(
        "instance ", id, " is ", e->info.state(), ": only a ", expected, " instance can ", verb));
  }
  e->switching = true;
  return e;
}

absl::StatusOr<v1::Instance> InstanceSupervisor::Sleep(const std::string& id, int level) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> e,
                   BeginSwitch(id, "ready", "sleep", [level](const InstanceSpec& spec) {
                     return CanSleep(spec, level);
                   }));
  const absl::Time start = absl::Now();
  const absl::Status slept = CallEngine(e->spec, e->spec.sleep[level - 1]);
  v1::Instance info;
  {
    gswarm::MutexLock lock(&mu_);
    e->switching = false;
    if (!slept.ok()) return slept;  // still ready: the engine may or may not have slept
    if (e->info.state() != "ready") {
      return absl::AbortedError(
          absl::StrCat("instance ", id, " became ", e->info.state(), " while going to sleep"));
    }
    e->info.set_sleep_level(static_cast<uint32_t>(level));
    Transition(
        *e, "sleeping",
        absl::StrFormat("level %d, in %.2f s", level, absl::ToDoubleSeconds(absl::Now() - start)));
    info = e->info;
  }
  DeliverEvents();
  WriteRecord(*e);  // an agent that restarts adopts it sleeping
  return info;
}

absl::StatusOr<v1::Instance> InstanceSupervisor::Wake(const std::string& id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> e, BeginSwitch(id, "sleeping", "wake"));
  const absl::Time start = absl::Now();
  uint32_t level = 0;
  {
    gswarm::MutexLock lock(&mu_);
    level = e->info.sleep_level();
  }
  absl::Status woke = CallEngine(e->spec, e->spec.wake);
  if (woke.ok() && level == 2) woke = CallEngine(e->spec, e->spec.reload);
  // Awake again once its health path answers, within its ready timeout.
  std::string answer;
  while (woke.ok() && !Healthy(e->spec, absl::Seconds(2), &answer)) {
    if (absl::Now() - start > e->spec.ready_timeout) {
      woke = absl::DeadlineExceededError(
          absl::StrCat("engine ", e->spec.engine, " did not answer its health path within ",
                       absl::FormatDuration(e->spec.ready_timeout), " of waking (", answer, ")"));
    } else {
      absl::SleepFor(options_.health_interval);
    }
  }
  v1::Instance info;
  {
    gswarm::MutexLock lock(&mu_);
    e->switching = false;
    if (!woke.ok()) return woke;
    if (e->info.state() != "sleeping") {
      return absl::AbortedError(
          absl::StrCat("instance ", id, " became ", e->info.state(), " while waking"));
    }
    e->info.set_sleep_level(0);
    Transition(*e, "ready",
               absl::StrFormat("woke in %.2f s", absl::ToDoubleSeconds(absl::Now() - start)));
    info = e->info;
  }
  DeliverEvents();
  WriteRecord(*e);
  return info;
}

}  // namespace gswarm::client
