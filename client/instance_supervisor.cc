#include "client/instance_supervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/http_client.h"
#include "client/instance_record.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/units.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::client {

namespace {

bool Ended(const std::string& state) { return state == "stopped" || state == "failed"; }

absl::Status Validate(const InstanceSpec& spec) {
  const std::string what = absl::StrCat("instance \"", spec.id, "\"");
  if (spec.id.empty() || spec.id[0] == '.' ||
      !std::all_of(spec.id.begin(), spec.id.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
               c == '-';
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": an id is letters, digits, '.', '_' and '-' (like inst-1a2b)"));
  }
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no command to run"));
  }
  if (spec.port <= 0 || spec.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": port ", spec.port, " is not 1-65535"));
  }
  if (spec.ready_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ready_timeout must be positive"));
  }
  if (!spec.gpu_device.empty()) {
    absl::StatusOr<std::string> cuda = CudaVisibleDevices(spec.gpu_device);
    if (!cuda.ok()) return common::Annotate(cuda.status(), what);
  }
  return absl::OkStatus();
}

}  // namespace

InstanceSupervisor::InstanceSupervisor(Options options) : options_(std::move(options)) {
  InitCurl();
}

InstanceSupervisor::~InstanceSupervisor() {
  std::vector<std::thread> threads;
  {
    gswarm::MutexLock lock(&mu_);
    for (auto& [id, e] : entries_) {
      e->quit = true;
      if (e->watcher.joinable()) threads.push_back(std::move(e->watcher));
    }
    for (std::thread& t : finished_) threads.push_back(std::move(t));
  }
  for (std::thread& t : threads) {
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();
    } else {
      t.join();
    }
  }
}

absl::StatusOr<int> InstanceSupervisor::FreePort() { return FreeTcpPort(); }

bool InstanceSupervisor::PortInUse(int port) { return TcpPortInUse(port); }

std::string InstanceSupervisor::LogPath(const std::string& id) const {
  return absl::StrCat(options_.log_dir, "/", id, ".log");
}

std::string InstanceSupervisor::RecordPath(const std::string& id) const {
  return absl::StrCat(options_.state_dir, "/", id, ".json");
}

std::shared_ptr<InstanceSupervisor::Entry> InstanceSupervisor::NewEntry(const InstanceSpec& spec) {
  auto e = std::make_shared<Entry>();
  e->spec = spec;
  v1::Instance& info = e->info;
  info.set_id(spec.id);
  info.set_model_name(spec.model_name);
  info.set_engine(spec.engine);
  info.set_gpu_device(spec.gpu_device);
  info.set_port(static_cast<uint32_t>(spec.port));
  info.set_endpoint(absl::StrCat("http://", spec.host, ":", spec.port));
  info.set_source_tier(spec.source_tier);
  info.set_managed_by(spec.managed_by);
  info.set_max_sleep_level(static_cast<uint32_t>(spec.sleep.size()));
  return e;
}

absl::StatusOr<v1::Instance> InstanceSupervisor::Start(const InstanceSpec& spec) {
  RETURN_IF_ERROR(Validate(spec));
  gswarm::MutexLock start_lock(&start_mu_);
  {
    gswarm::MutexLock lock(&mu_);
    auto it = entries_.find(spec.id);
    if (it != entries_.end() && !Ended(it->second->info.state())) {
      return absl::AlreadyExistsError(
          absl::StrCat("instance ", spec.id, " already exists (", it->second->info.state(), ")"));
    }
    // Ours may not listen yet: an engine still starting has not bound its port.
    for (const auto& [id, other] : entries_) {
      if (!Ended(other->info.state()) && other->spec.port == spec.port) {
        return absl::FailedPreconditionError(
            absl::StrCat("port ", spec.port, " is in use on this node by instance ", id, " (",
                         other->info.model_name(), "; pick another or omit it)"));
      }
    }
  }
  if (PortInUse(spec.port)) {
    return absl::FailedPreconditionError(
        absl::StrCat("port ", spec.port, " is in use on this node (pick another or omit it)"));
  }
  RETURN_IF_ERROR(common::MakeDirs(options_.log_dir));
  RETURN_IF_ERROR(common::MakeDirs(options_.state_dir));
  ASSIGN_OR_RETURN(std::shared_ptr<ProcessGroup> proc, Launch(spec, 1));

  auto e = NewEntry(spec);
  {
    gswarm::MutexLock lock(&mu_);
    SetProcess(*e, std::move(proc), absl::Now());
  }
  // Before the watcher exists, so that it is the only writer afterwards.
  WriteRecord(*e);

  v1::Instance started;
  std::thread old;
  {
    gswarm::MutexLock lock(&mu_);
    std::shared_ptr<Entry>& slot = entries_[spec.id];
    if (slot != nullptr) old = std::move(slot->watcher);
    slot = e;
    Transition(*e, "starting", "");
    started = e->info;
    e->watcher = std::thread(&InstanceSupervisor::Watch, this, e, false);
    if (old.joinable() && old.get_id() == std::this_thread::get_id()) {
      finished_.push_back(std::move(old));
    }
  }
  if (old.joinable()) old.join();  // an ended instance's watcher, returning
  DeliverEvents();
  return started;
}

absl::StatusOr<std::shared_ptr<ProcessGroup>> InstanceSupervisor::Launch(const InstanceSpec& spec,
                                                                         int attempt) {
  SpawnOptions spawn;
  spawn.argv = spec.argv;
  spawn.env = spec.env;
  // Names the engine's record, written only once it runs: an agent killed in between finds the
  // engine by this (Adopt) instead of leaving it without an owner.
  spawn.env[std::string(kOwnerVariable)] = RecordPath(spec.id);
  if (!spec.gpu_device.empty()) {
    ASSIGN_OR_RETURN(spawn.env["CUDA_VISIBLE_DEVICES"], CudaVisibleDevices(spec.gpu_device));
  }
  spawn.log_path = LogPath(spec.id);
  CapLogFile(spawn.log_path, options_.max_log_bytes);
  // A header per attempt, so that the log tells its runs apart.
  const std::string header = absl::StrCat(
      "==== gswarm ", absl::FormatTime("%Y-%m-%d %H:%M:%S %z", absl::Now(), absl::LocalTimeZone()),
      ": instance ", spec.id, " model ", spec.model_name, " engine ", spec.engine, " attempt ",
      attempt, ": ", absl::StrJoin(spec.argv, " "), "\n");
  int fd = ::open(spawn.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (::write(fd, header.data(), header.size()) < 0) {
      spdlog::warn("instance={}: cannot write to {}", spec.id, spawn.log_path);
    }
    ::close(fd);
  }
  absl::StatusOr<std::unique_ptr<ProcessGroup>> proc = ProcessGroup::Spawn(spawn);
  if (!proc.ok()) return common::Annotate(proc.status(), absl::StrCat("instance ", spec.id));
  return std::shared_ptr<ProcessGroup>(*std::move(proc));
}

absl::StatusOr<v1::Instance> InstanceSupervisor::Stop(const std::string& id, bool force) {
  std::shared_ptr<Entry> e;
  std::thread watcher;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("instance ", id, " not found on this node"));
    }
    e = it->second;
    if (e->stopping) {
      // Another Stop is under way; its deadlines bound this wait.
      mu_.AwaitWithTimeout(absl::Condition(&e->done), options_.stop_grace + absl::Seconds(30));
      return e->info;
    }
    if (Ended(e->info.state())) return e->info;
    e->stopping = e->quit = true;
    Transition(*e, "stopping", force ? "force stop" : "stop requested");
    watcher = std::move(e->watcher);
    if (watcher.joinable() && watcher.get_id() == std::this_thread::get_id()) {
      finished_.push_back(std::move(watcher));
    }
  }
  DeliverEvents();
  // The watcher returns within one health request or one kill; then the process is ours alone.
  if (watcher.joinable()) watcher.join();
  std::shared_ptr<ProcessGroup> proc;
  {
    gswarm::MutexLock lock(&mu_);
    proc = e->proc;
  }
  if (!force) RunStopCommand(e->spec, "stop");
  absl::Status killed =
      proc != nullptr ? proc->Terminate(options_.stop_grace, force) : absl::OkStatus();
  RemoveRecord(id);
  v1::Instance stopped;
  {
    gswarm::MutexLock lock(&mu_);
    if (killed.ok()) {
      Transition(*e, "stopped", force ? "force stopped" : "");
    } else {
      Transition(*e, "failed", std::string(killed.message()));
    }
    stopped = e->info;
  }
  DeliverEvents();
  return stopped;
}

void InstanceSupervisor::StopAll() {
  std::vector<std::string> ids;
  {
    gswarm::MutexLock lock(&mu_);
    for (const auto& [id, e] : entries_) {
      if (!Ended(e->info.state())) ids.push_back(id);
    }
  }
  std::vector<std::thread> stoppers;
  for (const std::string& id : ids) {
    stoppers.emplace_back([this, id] { Stop(id, /*force=*/false).status().IgnoreError(); });
  }
  for (std::thread& t : stoppers) t.join();
}

std::vector<v1::Instance> InstanceSupervisor::List() const {
  gswarm::MutexLock lock(&mu_);
  std::vector<v1::Instance> out;
  for (const auto& [id, e] : entries_) out.push_back(e->info);
  std::sort(out.begin(), out.end(),
            [](const v1::Instance& a, const v1::Instance& b) { return a.id() < b.id(); });
  return out;
}

std::optional<v1::Instance> InstanceSupervisor::Get(const std::string& id) const {
  gswarm::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second->info;
}

std::optional<v1::Instance> InstanceSupervisor::SetGpuMemory(const std::string& id,
                                                             uint64_t bytes) {
  gswarm::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second->info.gpu_memory_bytes() == bytes) return std::nullopt;
  it->second->info.set_gpu_memory_bytes(bytes);
  return it->second->info;
}

std::optional<v1::Instance> InstanceSupervisor::SetRamMemory(const std::string& id,
                                                             uint64_t bytes) {
  gswarm::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  const uint64_t before = it->second->info.ram_bytes();
  const uint64_t moved = bytes > before ? bytes - before : before - bytes;
  const uint64_t noise = std::max<uint64_t>(before / 20, uint64_t{16} << 20);
  if (moved == 0 || ((before != 0) == (bytes != 0) && moved <= noise)) return std::nullopt;
  it->second->info.set_ram_bytes(bytes);
  return it->second->info;
}

std::vector<v1::Instance> InstanceSupervisor::Adopt() {
  std::vector<std::string> paths;
  if (DIR* dir = ::opendir(options_.state_dir.c_str())) {
    while (dirent* d = ::readdir(dir)) {
      const std::string name = d->d_name;
      if (name[0] != '.' && absl::EndsWith(name, ".json")) {
        paths.push_back(absl::StrCat(options_.state_dir, "/", name));
      }
    }
    ::closedir(dir);
  }
  std::sort(paths.begin(), paths.end());
  std::vector<v1::Instance> adopted;
  for (const std::string& path : paths) {
    if (std::optional<v1::Instance> instance = AdoptRecord(path)) adopted.push_back(*instance);
  }
  KillUnrecordedEngines();
  DeliverEvents();
  return adopted;
}

void InstanceSupervisor::KillUnrecordedEngines() {
  // An engine is ours when its environment names one of our records; it is an orphan when no
  // entry holds its process group (the agent died between spawning it and recording it).
  const std::string marker = absl::StrCat(kOwnerVariable, "=", options_.state_dir, "/");
  std::set<pid_t> owned;
  {
    gswarm::MutexLock lock(&mu_);
    for (const auto& [id, e] : entries_) {
      if (e->proc != nullptr) owned.insert(e->proc->pgid());
    }
  }
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return;
  std::vector<pid_t> pids;
  while (dirent* d = ::readdir(dir)) {
    pid_t pid = 0;
    if (absl::SimpleAtoi(d->d_name, &pid) && pid > 0 && pid != ::getpid()) pids.push_back(pid);
  }
  ::closedir(dir);
  for (pid_t pid : pids) {
    absl::StatusOr<std::string> environ = common::ReadFile(absl::StrCat("/proc/", pid, "/environ"));
    if (!environ.ok()) continue;  // gone, or another user's
    // The environment is NUL-separated: the marker starts the block or follows a NUL.
    if (!absl::StartsWith(*environ, marker) &&
        environ->find(absl::StrCat(absl::string_view("\0", 1), marker)) == std::string::npos) {
      continue;
    }
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
    if (!stat.ok() || owned.contains(stat->pgrp)) continue;
    spdlog::warn(
        "pid {} (group {}) is an engine of this node that no record owns (the agent "
        "stopped while starting it): killing its group",
        pid, stat->pgrp);
    absl::StatusOr<ProcStat> leader = ReadProcStat(stat->pgrp);
    absl::Status killed =
        ProcessGroup::Attach(stat->pgrp, stat->pgrp, leader.ok() ? leader->start_ticks : 0)
            ->Terminate(absl::ZeroDuration(), /*force=*/true);
    if (!killed.ok()) spdlog::warn("pid {}: {}", pid, killed.message());
    owned.insert(stat->pgrp);
  }
}

std::optional<v1::Instance> InstanceSupervisor::AdoptRecord(const std::string& path) {
  absl::StatusOr<std::string> text = common::ReadFile(path);
  absl::StatusOr<InstanceRecord> record =
      text.ok() ? ParseInstanceRecord(*text) : absl::StatusOr<InstanceRecord>(text.status());
  if (!record.ok()) {
    spdlog::warn("instances: dropping {}: {}", path, record.status().message());
    ::unlink(path.c_str());
    return std::nullopt;
  }
  const InstanceSpec& spec = record->spec;
  {
    gswarm::MutexLock lock(&mu_);
    auto it = entries_.find(spec.id);
    if (it != entries_.end() && !Ended(it->second->info.state())) return std::nullopt;
  }
  std::shared_ptr<ProcessGroup> proc =
      ProcessGroup::Attach(record->pid, record->pgid, record->start_ticks);
  if (proc->Exited()) {
    // Whatever the leader left in its group is an orphan now: nobody would ever stop it. (A pid
    // that names another process now is left alone: Gone() knows our group has emptied.)
    absl::Status killed = proc->Terminate(absl::ZeroDuration(), /*force=*/true);
    RunStopCommand(spec, "its process is gone");  // a container may outlive its client
    spdlog::info("instance={} model={}: pid {} {}; record dropped{}{}", spec.id, spec.model_name,
                 record->pid, ReadProcStat(record->pid).ok() ? "is another process now" : "is gone",
                 killed.ok() ? "" : "; ", killed.message());
    RemoveRecord(spec.id);
    return std::nullopt;
  }
  std::string answer;
  const bool healthy = Healthy(spec, absl::Seconds(2), &answer);

  auto e = NewEntry(spec);
  v1::Instance& info = e->info;
  info.set_restarts(record->restarts);
  info.set_load_time_ms(record->load_time_ms);
  gswarm::MutexLock lock(&mu_);
  SetProcess(*e, std::move(proc), record->started_at);
  std::shared_ptr<Entry>& slot = entries_[spec.id];
  if (slot != nullptr && slot->watcher.joinable()) finished_.push_back(std::move(slot->watcher));
  slot = e;
  // One still loading gets what is left of its ready_timeout; one that slept sleeps on.
  const bool asleep = healthy && record->sleep_level > 0 && !spec.sleep.empty();
  if (asleep) info.set_sleep_level(record->sleep_level);
  Transition(*e,
             asleep    ? "sleeping"
             : healthy ? "ready"
                       : "starting",
             healthy ? "adopted after an agent restart"
                     : absl::StrCat("adopted while loading (", answer, ")"));
  e->watcher = std::thread(&InstanceSupervisor::Watch, this, e, healthy);
  return e->info;
}

void InstanceSupervisor::SetProcess(Entry& e, std::shared_ptr<ProcessGroup> proc,
                                    absl::Time start) {
  e.info.set_pid(proc->pid());
  e.proc = std::move(proc);
  e.attempt_start = start;
  e.ready_deadline = start + e.spec.ready_timeout;
  *e.info.mutable_started_at() = common::ToTimestamp(start);
}

void InstanceSupervisor::WriteRecord(Entry& e) {
  InstanceRecord record;
  {
    gswarm::MutexLock lock(&mu_);
    record.spec = e.spec;
    record.pid = e.proc->pid();
    record.pgid = e.proc->pgid();
    record.start_ticks = e.proc->start_ticks();
    record.started_at = e.attempt_start;
    record.load_time_ms = e.info.load_time_ms();
    record.restarts = e.info.restarts();
    record.sleep_level = e.info.state() == "sleeping" ? e.info.sleep_level() : 0;
  }
  absl::Status written =
      common::WriteFileAtomically(RecordPath(e.spec.id), InstanceRecordToJson(record), 0600);
  if (!written.ok()) {
    // The instance runs on; only a later agent could not adopt it.
    spdlog::warn("instance={}: cannot save its record: {}", e.spec.id, written.message());
  }
}

void InstanceSupervisor::RemoveRecord(const std::string& id) const {
  ::unlink(RecordPath(id).c_str());
}

void InstanceSupervisor::Transition(Entry& e, const std::string& state, const std::string& reason) {
  const std::string from = e.info.state();
  e.info.set_state(state);
  e.info.set_state_reason(reason);
  if (state != "sleeping") e.info.set_sleep_level(0);
  generation_ = std::max<uint64_t>(generation_ + 1, absl::ToUnixMicros(absl::Now()));
  e.info.set_generation(generation_);
  e.done = Ended(state);
  // The log line keeps the reason's first line; the engine's log lines that follow it are in
  // the reason reported, and in the log named here.
  absl::string_view first(reason);
  first = first.substr(0, first.find('\n'));
  std::string why(first);
  if (absl::ConsumeSuffix(&first, "; last log lines:")) {
    why = absl::StrCat(first, "; see ", LogPath(e.spec.id));
  }
  std::string detail;
  if (from.empty()) {
    detail = absl::StrCat(" (pid ", e.info.pid(), ", port ", e.info.port(), ", ",
                          e.spec.gpu_device.empty() ? "inherited GPUs" : e.spec.gpu_device,
                          why.empty() ? "" : ", ", why, ")");
  } else if (state == "ready" && reason.empty()) {
    detail = absl::StrFormat(" (load %.1f s)", static_cast<double>(e.info.load_time_ms()) / 1e3);
  } else if (!why.empty()) {
    detail = absl::StrCat(" (", why, ")");
  }
  auto level = state == "failed" ? spdlog::level::warn : spdlog::level::info;
  spdlog::log(level, "instance={} model={}: {}{}{}", e.info.id(), e.info.model_name(),
              from.empty() ? "" : from + " -> ", state, detail);
  events_.push_back(e.info);
}

void InstanceSupervisor::DeliverEvents() {
  {
    gswarm::MutexLock lock(&mu_);
    if (delivering_ || events_.empty()) return;
    delivering_ = true;
  }
  for (;;) {
    v1::Instance event;
    {
      gswarm::MutexLock lock(&mu_);
      if (events_.empty()) {
        delivering_ = false;
        return;
      }
      event = std::move(events_.front());
      events_.pop_front();
    }
    if (options_.on_change) options_.on_change(event);
  }
}

}  // namespace gswarm::client
