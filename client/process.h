#pragma once

// Engine processes: each started in its own process group with stdin from /dev/null and
// stdout+stderr appended to a log file, stopped as a whole group, and always reaped. Also the
// small /proc, port and log-file helpers the instance supervisor needs.
//
// Zombies: the group leader is our child and is reaped here (waitpid on its pid only, so that
// other children of the agent keep their exit statuses). Its own children, once orphaned, belong
// to PID 1; a PID 1 that does not reap (some containers) leaves them as zombies, which hold no
// memory, port or GPU, so "the group is gone" means "no member of the group that is not a zombie".

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mutex.h"

namespace gswarm::client {

struct SpawnOptions {
  // argv[0] is a path, or a name looked up on PATH.
  std::vector<std::string> argv;
  // Set on top of this process's environment (less GSwarm's own tokens, GSWARM_*TOKEN*).
  std::map<std::string, std::string> env;
  // stdout and stderr are appended here (created 0644); "" sends them to /dev/null.
  std::string log_path;
};

// A process group led by one process. The leader either is our child (Spawn), or was started by
// an earlier agent and adopted (Attach), in which case its exit status is unknown.
// Thread safety: thread-safe.
class ProcessGroup {
 public:
  // Starts argv in a new process group (pgid == pid) with every signal at its default and an
  // empty signal mask, and no file descriptor but 0, 1 and 2. Fails (nothing left running) when
  // the program cannot be executed or the log cannot be opened.
  static absl::StatusOr<std::unique_ptr<ProcessGroup>> Spawn(const SpawnOptions& options);
  // A running leader not started by this process. `start_ticks` (see ReadProcStat) tells it from
  // a later process that reuses the pid: such a one counts as "exited".
  static std::unique_ptr<ProcessGroup> Attach(pid_t pid, pid_t pgid, uint64_t start_ticks);

  // Does not signal anything: an agent that exits without cleanup leaves its engines running.
  ~ProcessGroup() = default;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  pid_t pid() const { return pid_; }
  pid_t pgid() const { return pgid_; }
  uint64_t start_ticks() const { return start_ticks_; }

  // True once the leader has exited (a child of ours is reaped on the way). Never blocks.
  bool Exited();
  // "exit code 3", "killed by signal 9 (Killed)", or "exited" for an attached leader; "" while
  // running.
  std::string DescribeExit();
  // True once the leader has exited and no other member of the group is left.
  bool Gone();

  // Stops the whole group: SIGTERM (SIGKILL at once when `force`), SIGKILL to whatever remains
  // after `grace`, then up to `kill_wait` more for the kernel to finish it. OK once Gone();
  // DEADLINE_EXCEEDED naming the survivors otherwise (a process stuck in uninterruptible sleep).
  absl::Status Terminate(absl::Duration grace, bool force,
                         absl::Duration kill_wait = absl::Seconds(5));

 private:
  ProcessGroup(pid_t pid, pid_t pgid, uint64_t start_ticks, bool child)
      : pid_(pid), pgid_(pgid), start_ticks_(start_ticks), child_(child) {}

  const pid_t pid_;
  const pid_t pgid_;
  const uint64_t start_ticks_;
  const bool child_;
  gswarm::Mutex mu_;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<int> wait_status_ ABSL_GUARDED_BY(mu_);
};

// Fields of /proc/<pid>/stat.
struct ProcStat {
  char state = '?';  // R, S, D, Z, ...
  pid_t pgrp = 0;
  uint64_t start_ticks = 0;  // clock ticks after boot: with the pid, names one process for good
};
// NOT_FOUND when there is no such process.
absl::StatusOr<ProcStat> ReadProcStat(pid_t pid);

// Pids of the group's members that still run, i.e. have a thread that has not exited (scans
// /proc; empty at once when the kernel knows no member at all). Zombies do not count.
std::vector<pid_t> GroupMembers(pid_t pgid);

// "exit code 3" or "killed by signal 9 (Killed)" for a waitpid status.
std::string DescribeWaitStatus(int status);

// A path with a '/' is returned as is; a name is looked up on $PATH. NOT_FOUND naming the
// program when nothing executable is found.
absl::StatusOr<std::string> ResolveExecutable(const std::string& program);

// CUDA_VISIBLE_DEVICES for a gpu_device: "gpu0" -> "0", "gpu1,gpu2" -> "1,2" (bare indices are
// accepted too), "cpu" -> "" (which hides every GPU). INVALID_ARGUMENT for anything else.
absl::StatusOr<std::string> CudaVisibleDevices(absl::string_view gpu_device);

// Whether a TCP port is taken on this node: a listener on any address (127.0.0.1, 0.0.0.0, ::)
// makes binding the wildcard address fail. Sockets in TIME_WAIT do not count.
bool TcpPortInUse(int port);
// A port free on every address of this node, picked at random below the range the kernel hands
// out to outgoing connections (ip_local_port_range), so that no connection takes it before the
// caller binds it; bind(0) where that range leaves no room below it. Another process may still
// bind it first, as with any such scheme.
absl::StatusOr<int> FreeTcpPort();

// Keeps a log that its writer appends to (O_APPEND) under `max_bytes`: once larger, its older
// part goes to <path>.1, replacing the previous one. Where the filesystem can cut a file's head
// out in place (FALLOC_FL_COLLAPSE_RANGE: ext4, XFS) nothing is lost: the whole blocks before the
// last one leave the log in one step and their last `max_bytes` are in .1, so .1 may end, and
// the log begin, mid-line. Elsewhere the log's last `max_bytes` (plus what is written during the
// copy, up to `max_bytes` more) are copied to .1 and the log is truncated to empty, as
// logrotate's copytruncate does; lines written in the instant between the end of the copy and
// the truncate are lost. Returns whether it rotated.
bool CapLogFile(const std::string& path, uint64_t max_bytes);

}  // namespace gswarm::client
