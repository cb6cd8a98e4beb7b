#include "client/process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/fd.h"
#include "common/paths.h"
#include "common/status.h"

extern char** environ;

namespace gswarm::client {
namespace {

// Closes a file descriptor at scope exit.

// Polls `done` every 10 ms until it holds (true) or `timeout` passes (false).
template <typename F>
bool PollUntil(F done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (done()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// Whether the process has a thread that has not exited. Its stat says 'Z' as soon as its main
// thread exits, while other threads may run on (and hold memory, ports, GPUs).
bool Running(pid_t pid, const ProcStat& stat) {
  if (stat.state != 'Z' && stat.state != 'X') return true;
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = ::opendir(tasks.c_str());
  if (dir == nullptr) return false;
  bool running = false;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    char state = '?';
    if (FILE* f = std::fopen(absl::StrCat(tasks, "/", e->d_name, "/stat").c_str(), "re")) {
      // "tid (comm) S ...": the state follows the last ')'.
      char buf[512];
      size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
      std::fclose(f);
      absl::string_view text(buf, n);
      size_t paren = text.rfind(')');
      if (paren != absl::string_view::npos && paren + 2 < text.size()) state = text[paren + 2];
    }
    if (state != 'Z' && state != 'X' && state != '?') {
      running = true;
      break;
    }
  }
  ::closedir(dir);
  return running;
}

// Whether binding the wildcard address of `family` on `port` fails with EADDRINUSE.
bool BindFails(int family, int port) {
  common::UniqueFd s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (s.get() < 0) return false;
  int one = 1;
  // TIME_WAIT leftovers do not block a listener that sets SO_REUSEADDR (engines do).
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(port));
    rc = ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    // IPv4 listeners were checked with AF_INET; this one looks at IPv6 listeners only.
    ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    rc = ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  return rc != 0 && errno == EADDRINUSE;
}

// The first port of the range the kernel hands out to outgoing connections (32768 by default).
int FirstEphemeralPort() {
  const absl::StatusOr<std::string> range =
      common::ReadFile("/proc/sys/net/ipv4/ip_local_port_range");
  std::vector<absl::string_view> parts =
      absl::StrSplit(range.value_or(""), absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
  int first = 0;
  return !parts.empty() && absl::SimpleAtoi(parts[0], &first) ? first : 32768;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessGroup>> ProcessGroup::Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("no program to run");
  ASSIGN_OR_RETURN(const std::string program, ResolveExecutable(options.argv[0]));

  // The environment: ours, then the caller's additions. GSwarm's own tokens (GSWARM_TOKEN,
  // GSWARM_*_AUTH_TOKEN: how systemd and Kubernetes hand the agent its token) stay here: an engine
  // and whatever it runs have no business with the cluster's credentials.
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq == nullptr) continue;
    std::string name(*e, static_cast<size_t>(eq - *e));
    if (absl::StartsWith(name, "GSWARM_") && absl::StrContains(name, "TOKEN")) continue;
    env.emplace(std::move(name), eq + 1);
  }
  for (const auto& [k, v] : options.env) env[k] = v;
  std::vector<std::string> env_strings;
  env_strings.reserve(env.size());
  for (const auto& [k, v] : env) env_strings.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = options.argv;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const std::string log = options.log_path.empty() ? "/dev/null" : options.log_path;
  common::UniqueFd log_fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (log_fd.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open log ", log));

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, log_fd.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, log_fd.get(), STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  // Nothing of the agent's (sockets, the database, other engines' logs) leaks into the engine.
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own group (pgid = pid), so that a stop reaches everything the engine starts. The agent
  // may block or ignore signals (SIGTERM for sigwait, SIGPIPE); the engine starts clean.
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, program.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return absl::ErrnoToStatus(rc, absl::StrCat("cannot start ", program));
  // A child that already exited is a zombie until reaped, so its stat is still there.
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  return std::unique_ptr<ProcessGroup>(
      new ProcessGroup(pid, pid, stat.ok() ? stat->start_ticks : 0, /*child=*/true));
}

std::unique_ptr<ProcessGroup> ProcessGroup::Attach(pid_t pid, pid_t pgid, uint64_t start_ticks) {
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(pid, pgid, start_ticks, false));
}

bool ProcessGroup::Exited() {
  gswarm::MutexLock lock(&mu_);
  if (exited_) return true;
  if (!child_) {
    // Not started by us: the pid is ours only while it names the same process (start time).
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid_);
    if (!stat.ok() || stat->start_ticks != start_ticks_) {
      exited_ = true;
    } else if (!Running(pid_, *stat)) {
      // It may still be ours (this process adopted an engine it started itself): reap it, unless
      // the kernel is not done with it yet.
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) wait_status_ = status;
      exited_ = r != 0;
    }
    return exited_;
  }
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    exited_ = true;
    wait_status_ = status;
  } else if (r < 0) {
    exited_ = true;  // ECHILD: reaped elsewhere; the status is lost
  }
  return exited_;
}

std::string ProcessGroup::DescribeExit() {
  if (!Exited()) return "";
  gswarm::MutexLock lock(&mu_);
  return wait_status_.has_value() ? DescribeWaitStatus(*wait_status_) : "exited";
}

bool ProcessGroup::Gone() {
  if (!Exited()) return false;
  if (!child_) {
    // A recycled pid means our group had emptied (a live group keeps its id from being reused).
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid_);
    if (stat.ok() && stat->start_ticks != start_ticks_) return true;
  }
  return GroupMembers(pgid_).empty();
}

absl::Status ProcessGroup::Terminate(absl::Duration grace, bool force, absl::Duration kill_wait) {
  if (Gone()) return absl::OkStatus();
  auto gone = [this] { return Gone(); };
  if (!force) {
    ::kill(-pgid_, SIGTERM);
    if (PollUntil(gone, grace)) return absl::OkStatus();
  }
  ::kill(-pgid_, SIGKILL);
  if (PollUntil(gone, kill_wait)) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("process group ", pgid_, " still has processes after SIGKILL (pids ",
                   absl::StrJoin(GroupMembers(pgid_), ", "), "; stuck in the kernel?)"));
}

absl::StatusOr<ProcStat> ReadProcStat(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  common::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return absl::NotFoundError(absl::StrCat("no process ", pid));
  char buf[1024];
  ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return absl::NotFoundError(absl::StrCat("no process ", pid));
  absl::string_view text(buf, static_cast<size_t>(n));
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  size_t paren = text.rfind(')');
  if (paren == absl::string_view::npos) {
    return absl::InternalError(absl::StrCat("cannot parse ", path));
  }
  std::vector<absl::string_view> f =
      absl::StrSplit(text.substr(paren + 1), ' ', absl::SkipWhitespace());
  // f[0] is field 3 (state), so field N is f[N - 3]: pgrp is 5, starttime 22.
  ProcStat stat;
  int64_t pgrp = 0;
  if (f.size() < 20 || f[0].empty() || !absl::SimpleAtoi(f[2], &pgrp) ||
      !absl::SimpleAtoi(f[19], &stat.start_ticks)) {
    return absl::InternalError(absl::StrCat("cannot parse ", path));
  }
  stat.state = f[0][0];
  stat.pgrp = static_cast<pid_t>(pgrp);
  return stat;
}

std::vector<pid_t> GroupMembers(pid_t pgid) {
  std::vector<pid_t> members;
  if (pgid <= 0) return members;
  if (::kill(-pgid, 0) != 0 && errno == ESRCH) return members;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return members;
  while (dirent* e = ::readdir(dir)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid) || pid <= 0) continue;
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
    if (stat.ok() && stat->pgrp == pgid && Running(pid, *stat)) {
      members.push_back(pid);
    }
  }
  ::closedir(dir);
  return members;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::strsignal(WTERMSIG(status));
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (", name ? name : "?", ")",
                        WCOREDUMP(status) ? ", core dumped" : "");
  }
  return absl::StrCat("wait status ", status);
}

absl::StatusOr<std::string> ResolveExecutable(const std::string& program) {
  if (program.empty()) return absl::InvalidArgumentError("no program to run");
  auto executable = [](const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
  };
  if (absl::StrContains(program, '/')) {
    if (executable(program)) return program;
    return absl::NotFoundError(
        absl::StrCat("cannot execute ", program, ": ", std::strerror(errno ? errno : ENOENT)));
  }
  const char* path_env = std::getenv("PATH");
  const std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", program);
    if (executable(candidate)) return candidate;
  }
  return absl::NotFoundError(absl::StrCat("program ", program, " not found on PATH (", path, ")"));
}

absl::StatusOr<std::string> CudaVisibleDevices(absl::string_view gpu_device) {
  absl::string_view device = absl::StripAsciiWhitespace(gpu_device);
  if (device == "cpu") return std::string();
  std::vector<std::string> indices;
  for (absl::string_view part : absl::StrSplit(device, ',')) {
    part = absl::StripAsciiWhitespace(part);
    absl::ConsumePrefix(&part, "gpu");
    unsigned index = 0;
    if (part.empty() || !absl::SimpleAtoi(part, &index) || !absl::ascii_isdigit(part[0])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gpu_device \"", gpu_device, "\" is not \"cpu\", \"gpuN\" or a list like \"gpu0,gpu1\""));
    }
    indices.push_back(absl::StrCat(index));
  }
  return absl::StrJoin(indices, ",");
}

bool TcpPortInUse(int port) { return BindFails(AF_INET, port) || BindFails(AF_INET6, port); }

absl::StatusOr<int> FreeTcpPort() {
  // Below the outgoing connections' range: a port the kernel picks for bind(0) comes from that
  // range, and an outgoing connection of anyone on the node could take it before the engine
  // binds it.
  constexpr int kFirstPort = 10000;
  const int end = FirstEphemeralPort();
  if (end - kFirstPort >= 1000) {
    thread_local std::mt19937 random(std::random_device{}());
    std::uniform_int_distribution<int> pick(kFirstPort, end - 1);
    for (int i = 0; i < 64; ++i) {
      const int port = pick(random);
      if (!TcpPortInUse(port)) return port;
    }
  }
  common::UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (s.get() < 0) return absl::ErrnoToStatus(errno, "cannot create a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return absl::ErrnoToStatus(errno, "cannot find a free port");
  }
  return static_cast<int>(ntohs(a.sin_port));
}

namespace {

// Copies [from, end) of `in` to `out` at its start, and on past `end` while the writer keeps
// appending, up to `limit`. Returns whether every read and write succeeded.
bool CopyLogRange(int in, int out, off_t from, off_t end, off_t limit) {
  std::string buf(1 << 20, '\0');
  off_t at = from;
  while (at < end && at < limit) {
    const size_t want = std::min(buf.size(), static_cast<size_t>(std::min(end, limit) - at));
    const ssize_t n = ::pread(in, buf.data(), want, at);
    if (n <= 0 || ::pwrite(out, buf.data(), static_cast<size_t>(n), at - from) != n) return false;
    at += n;
    struct stat now;
    if (at == end && ::fstat(in, &now) == 0) end = now.st_size;
  }
  return true;
}

}  // namespace

bool CapLogFile(const std::string& path, uint64_t max_bytes) {
  struct stat st;
  if (max_bytes == 0 || ::stat(path.c_str(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) <= max_bytes) {
    return false;
  }
  const off_t max = static_cast<off_t>(max_bytes);
  common::UniqueFd log(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  const std::string old = path + ".1";
  common::UniqueFd out(::open(old.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (log.get() < 0 || out.get() < 0) return ::truncate(path.c_str(), 0) == 0;
  // Where the filesystem can cut a file's head out in place (ext4, XFS), nothing is lost: the
  // whole blocks before the last one go to .1 (their last max_bytes) and leave the log in one
  // step, which the writer's appends wait for. .1 may end, and the log begin, mid-line.
  const off_t block = st.st_blksize;
  if (block > 0 && max >= block) {
    const off_t cut = (st.st_size - 1) / block * block;
    if (cut > 0 && CopyLogRange(log.get(), out.get(), std::max<off_t>(0, cut - max), cut, cut) &&
        ::fallocate(log.get(), FALLOC_FL_COLLAPSE_RANGE, 0, cut) == 0) {
      return true;
    }
    if (::ftruncate(out.get(), 0) != 0) return ::truncate(path.c_str(), 0) == 0;
  }
  // Elsewhere (tmpfs, btrfs), copy and truncate as logrotate's copytruncate does: the last
  // max_bytes, then what the engine wrote during the copy (up to max_bytes more), so that only
  // the lines of the last moment before the truncate are lost. Truncate even when the copy
  // failed: the cap matters more than the old lines.
  CopyLogRange(log.get(), out.get(), st.st_size - max, st.st_size, st.st_size + max);
  return ::ftruncate(log.get(), 0) == 0;
}

}  // namespace gswarm::client
