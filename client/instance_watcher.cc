// InstanceSupervisor's watcher threads, one per live instance: readiness, liveness, restarts.
// The rest of the class is in instance_supervisor.cc.

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/http_client.h"
#include "client/instance_supervisor.h"
#include "client/log_tail.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

constexpr int kLogTailLines = 20;
constexpr uint64_t kLogTailWindow = 256 << 10;  // bytes read from the end of the log

// The engine's last words, less the access-log lines our own health polls caused (vLLM's and the
// fake engine's logs fill with them while loading).
std::string LastLines(const std::string& log, const InstanceSpec& spec) {
  TailOptions options;
  options.window_bytes = kLogTailWindow;
  options.quote = true;
  options.skip = absl::StrCat("GET ", spec.health_path, " ");
  absl::StatusOr<LogTail> tail = TailFile(log, kLogTailLines, options);
  const std::string text = tail.ok() ? tail->text : "";
  return absl::StrCat("; last log lines:\n", text.empty() ? "(the log is empty)" : text);
}

}  // namespace

void InstanceSupervisor::Watch(std::shared_ptr<Entry> e, bool ready) {
  common::Backoff backoff(options_.restart_backoff);
  const InstanceSpec& spec = e->spec;
  for (;;) {
    std::shared_ptr<ProcessGroup> proc;
    {
      gswarm::MutexLock lock(&mu_);
      if (e->quit) return;
      proc = e->proc;
    }
    Outcome outcome = Outcome::kReady;
    if (!ready) {
      std::string answer;
      outcome = AwaitReady(*e, *proc, &answer);
      if (outcome == Outcome::kQuit) return;
      if (outcome == Outcome::kNotReady) {
        absl::Status killed = proc->Terminate(options_.stop_grace, /*force=*/false);
        const std::string reason = absl::StrCat(
            "not ready after ", absl::FormatDuration(spec.ready_timeout), " (", answer, ")",
            killed.ok() ? "" : "; ", killed.message(), LastLines(LogPath(spec.id), spec));
        {
          gswarm::MutexLock lock(&mu_);
          if (e->quit) return;
        }
        // Before the change goes out: a caller may start the id again from on_change.
        RemoveRecord(spec.id);
        {
          gswarm::MutexLock lock(&mu_);
          Transition(*e, "failed", reason);
        }
        DeliverEvents();
        return;
      }
      if (outcome == Outcome::kReady) {
        {
          gswarm::MutexLock lock(&mu_);
          if (e->quit) return;
          e->info.set_load_time_ms(
              static_cast<uint64_t>(absl::ToInt64Milliseconds(absl::Now() - e->attempt_start)));
          Transition(*e, "ready", "");
        }
        WriteRecord(*e);
        DeliverEvents();
      }
    }
    if (outcome == Outcome::kReady) outcome = AwaitExit(*e, *proc);
    if (outcome == Outcome::kQuit) return;
    if (!Restart(*e, backoff, proc->DescribeExit())) return;
    ready = false;
  }
}

InstanceSupervisor::Outcome InstanceSupervisor::AwaitReady(Entry& e, ProcessGroup& proc,
                                                           std::string* answer) {
  absl::Time deadline;
  {
    gswarm::MutexLock lock(&mu_);
    deadline = e.ready_deadline;
  }
  *answer = "no answer yet";
  for (;;) {
    if (proc.Exited()) return Outcome::kExited;
    // Short requests: Stop() waits for this thread.
    const absl::Duration timeout =
        std::clamp(deadline - absl::Now(), absl::Milliseconds(100), absl::Seconds(1));
    if (Healthy(e.spec, timeout, answer)) return Outcome::kReady;
    CapLogFile(LogPath(e.spec.id), options_.max_log_bytes);
    if (absl::Now() >= deadline) return Outcome::kNotReady;
    if (SleepOrQuit(e, std::min(options_.health_interval, deadline - absl::Now()))) {
      return Outcome::kQuit;
    }
  }
}

InstanceSupervisor::Outcome InstanceSupervisor::AwaitExit(Entry& e, ProcessGroup& proc) {
  for (;;) {
    if (SleepOrQuit(e, options_.health_interval)) return Outcome::kQuit;
    if (proc.Exited()) return Outcome::kExited;
    CapLogFile(LogPath(e.spec.id), options_.max_log_bytes);
  }
}

bool InstanceSupervisor::Restart(Entry& e, common::Backoff& backoff, const std::string& exit) {
  std::shared_ptr<ProcessGroup> old;
  {
    gswarm::MutexLock lock(&mu_);
    old = e.proc;
  }
  // What the leader left behind (workers, a grandchild) would still hold the port and the GPU.
  old->Terminate(absl::ZeroDuration(), /*force=*/true).IgnoreError();
  RunStopCommand(e.spec, "before a restart");  // a container that outlived its client
  const std::string tail = LastLines(LogPath(e.spec.id), e.spec);
  int restarts;
  bool give_up;
  {
    gswarm::MutexLock lock(&mu_);
    if (e.quit) return false;
    restarts = static_cast<int>(e.info.restarts());
    give_up = restarts >= options_.max_restarts;
    if (!give_up) {
      e.info.set_restarts(static_cast<uint32_t>(++restarts));
      Transition(e, "starting",
                 absl::StrCat("restarting after ", exit, " (restart ", restarts, " of ",
                              options_.max_restarts, ")"));
    }
  }
  if (give_up) {
    RemoveRecord(e.spec.id);
    {
      gswarm::MutexLock lock(&mu_);
      Transition(e, "failed",
                 absl::StrCat(exit, " after ", restarts, " restarts (the limit)", tail));
    }
    DeliverEvents();
    return false;
  }
  DeliverEvents();
  if (SleepOrQuit(e, backoff.Next())) return false;

  absl::StatusOr<std::shared_ptr<ProcessGroup>> proc = Launch(e.spec, restarts + 1);
  if (!proc.ok()) {
    RemoveRecord(e.spec.id);
    {
      gswarm::MutexLock lock(&mu_);
      Transition(e, "failed",
                 absl::StrCat("cannot restart after ", exit, ": ", proc.status().message()));
    }
    DeliverEvents();
    return false;
  }
  {
    gswarm::MutexLock lock(&mu_);
    SetProcess(e, *std::move(proc), absl::Now());
  }
  WriteRecord(e);
  return true;
}

bool InstanceSupervisor::SleepOrQuit(Entry& e, absl::Duration d) {
  gswarm::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&e.quit), d);
  return e.quit;
}

bool InstanceSupervisor::Healthy(const InstanceSpec& spec, absl::Duration timeout,
                                 std::string* answer) {
  HttpRequest request;
  request.url = absl::StrCat("http://", LoopbackFor(spec.host), ":", spec.port,
                             absl::StartsWith(spec.health_path, "/") ? "" : "/", spec.health_path);
  request.timeout = timeout;
  request.follow_redirects = false;
  request.max_body_bytes = 1 << 20;
  absl::StatusOr<HttpResponse> response = SendHttpRequest(request);
  if (response.ok() && response->status == 200) return true;
  *answer = absl::StrCat("GET ", request.url, ": ",
                         response.ok() ? absl::StrCat("HTTP ", response->status)
                                       : std::string(response.status().message()));
  return false;
}

void InstanceSupervisor::RunStopCommand(const InstanceSpec& spec, const char* why) {
  if (spec.stop_argv.empty()) return;
  SpawnOptions options;
  options.argv = spec.stop_argv;
  options.env = spec.env;
  options.log_path = LogPath(spec.id);
  absl::StatusOr<std::unique_ptr<ProcessGroup>> stopper = ProcessGroup::Spawn(options);
  if (!stopper.ok()) {
    spdlog::warn("instance={}: stop command {} could not start: {}", spec.id, spec.stop_argv[0],
                 std::string(stopper.status().message()));
    return;
  }
  const absl::Time deadline = absl::Now() + options_.stop_grace;
  while (!(*stopper)->Exited() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const std::string outcome =
      (*stopper)->Exited() ? (*stopper)->DescribeExit() : "still running at the stop grace: killed";
  (*stopper)->Terminate(absl::ZeroDuration(), /*force=*/true).IgnoreError();
  spdlog::info("instance={}: stop command ({}) {}: {}", spec.id, why,
               absl::StrJoin(spec.stop_argv, " "), outcome);
}

std::string LoopbackFor(const std::string& host) {
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::" || host == "[::]") return "[::1]";
  return host;
}

}  // namespace gswarm::client
