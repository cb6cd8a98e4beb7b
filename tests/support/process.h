#pragma once

// A child process for tests: started with fork/execve, stopped with a signal and a deadline,
// always reaped. Header-only.
// Thread safety: not thread-safe; one owner per Subprocess.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

extern char** environ;

namespace gswarm::testing {

class Subprocess {
 public:
  // Runs argv[0] (a path) with `argv` and this process's environment. stdout and stderr go to
  // `log_path` (appended) when given. The child is killed if this process dies first.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const std::string& log_path = "") {
    if (argv.empty()) return absl::InvalidArgumentError("no program to run");
    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int log_fd = -1;
    if (!log_path.empty()) {
      log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (log_fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", log_path));
    }
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      int err = errno;
      if (log_fd >= 0) ::close(log_fd);
      return absl::ErrnoToStatus(err, "fork failed");
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      if (log_fd >= 0) {
        ::dup2(log_fd, STDOUT_FILENO);
        ::dup2(log_fd, STDERR_FILENO);
      }
      ::execve(args[0], args.data(), environ);
      ::_exit(127);
    }
    if (log_fd >= 0) ::close(log_fd);
    return std::unique_ptr<Subprocess>(new Subprocess(pid));
  }

  ~Subprocess() { Stop(SIGKILL, absl::Seconds(5)); }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // True once the child has exited (and is reaped); `status()` then holds its wait status.
  bool Exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      status_ = status;
      pid_ = -1;
      return true;
    }
    return false;
  }

  // Sends `sig`, waits up to `grace` for the child to exit, then SIGKILLs and reaps it.
  // Returns the wait status (see WIFEXITED and friends).
  int Stop(int sig = SIGTERM, absl::Duration grace = absl::Seconds(10)) {
    if (Exited()) return status_;
    ::kill(pid_, sig);
    absl::Time deadline = absl::Now() + grace;
    while (absl::Now() < deadline) {
      if (Exited()) return status_;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = status;
    pid_ = -1;
    return status_;
  }

  int status() const { return status_; }

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  int status_ = 0;
};

// Polls `done` every 10 ms until it returns true (true) or `timeout` passes (false).
inline bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (done()) return true;
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace gswarm::testing
