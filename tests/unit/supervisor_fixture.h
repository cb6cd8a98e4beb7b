#pragma once

// The instance supervisor's test fixture: a supervisor in a temporary directory, the fake engine
// (tests/support/fake_engine.py) with a tiny model, and a small Python engine of our own for what
// that one does not do (fork a grandchild that ignores SIGTERM, print its environment, flood its
// log). Shared by supervisor_test.cc and instance_sleep_test.cc.

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/instance_supervisor.h"
#include "client/process.h"
#include "common/paths.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

constexpr char kPython[] = GSWARM_TEST_PYTHON;
constexpr char kFakeEngine[] = GSWARM_FAKE_ENGINE;

// argv: PORT [grandchild] [ignore-term] [spam]. Ready at once.
constexpr char kScript[] = R"py(
import http.server, os, signal, sys, time
port, flags = int(sys.argv[1]), set(sys.argv[2:])
print("CUDA_VISIBLE_DEVICES=%r" % os.environ.get("CUDA_VISIBLE_DEVICES"))
print("GSWARM_TEST_MARK=%r" % os.environ.get("GSWARM_TEST_MARK"), flush=True)
if "grandchild" in flags:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    print("grandchild=%d" % pid, flush=True)
if "ignore-term" in flags:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "spam" in flags:
    for i in range(4000):
        print("spam line %06d %s" % (i, "x" * 80))
    print("spam done", flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
)py";

inline std::string MakeTempDir(const char* prefix) {
  std::string pattern = absl::StrCat(fs::temp_directory_path().string(), "/", prefix, "XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made == nullptr ? "" : std::string(made);
}

inline bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

inline uint64_t SizeOf(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

inline std::string Slurp(const std::string& path) { return common::ReadFile(path).value_or(""); }

// Whether `dir`'s filesystem cuts a file's head out in place (ext4, XFS; not tmpfs), the case in
// which CapLogFile loses nothing.
inline bool CanCollapseFiles(const std::string& dir) {
  const std::string probe = dir + "/collapse-probe";
  const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  struct stat st;
  bool can = fd >= 0 && ::fstat(fd, &st) == 0 && st.st_blksize > 0;
  if (can) {
    const std::string block(static_cast<size_t>(st.st_blksize), 'x');
    can = ::write(fd, block.data(), block.size()) == static_cast<ssize_t>(block.size()) &&
          ::write(fd, block.data(), block.size()) == static_cast<ssize_t>(block.size()) &&
          ::fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, st.st_blksize) == 0;
  }
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return can;
}

// Gone and reaped: a zombie would still have its /proc entry.
inline bool Reaped(pid_t pid) { return !ReadProcStat(pid).ok(); }

// Gone, or a zombie of some other parent (an orphan under a PID 1 that does not reap).
inline bool NotRunning(pid_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  return !stat.ok() || stat->state == 'Z';
}

class SupervisorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_root_ = MakeTempDir("gswarm-sup-model-");
    const std::string support = fs::path(kFakeEngine).parent_path().string();
    auto writer = testing::Subprocess::Start(
        {kPython, "-B", "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import fake_engine; "
         "fake_engine.write_tiny_model(sys.argv[2])",
         support, model_root_ + "/tiny"});
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE(testing::WaitFor([&] { return (*writer)->Exited(); }, absl::Seconds(30)));
    ASSERT_EQ((*writer)->status(), 0);
  }
  static void TearDownTestSuite() { fs::remove_all(model_root_); }

  void SetUp() override {
    dir_ = MakeTempDir("gswarm-sup-");
    ASSERT_FALSE(dir_.empty());
    std::ofstream(dir_ + "/engine.py") << kScript;
    supervisor_ = std::make_unique<InstanceSupervisor>(MakeOptions());
  }

  void TearDown() override {
    if (supervisor_ != nullptr) supervisor_->StopAll();
    supervisor_.reset();
    fs::remove_all(dir_);
  }

  InstanceSupervisor::Options MakeOptions() {
    InstanceSupervisor::Options o;
    o.state_dir = dir_ + "/instances";
    o.log_dir = dir_ + "/logs";
    o.max_restarts = 2;
    o.restart_backoff = {.initial = absl::Milliseconds(50), .max = absl::Milliseconds(200)};
    o.stop_grace = absl::Seconds(1);
    o.health_interval = absl::Milliseconds(50);
    o.on_change = [this](const v1::Instance& i) {
      gswarm::MutexLock lock(&events_mu_);
      events_.push_back(i);
    };
    return o;
  }

  static int Port() {
    absl::StatusOr<int> port = InstanceSupervisor::FreePort();
    EXPECT_TRUE(port.ok()) << port.status();
    return port.value_or(0);
  }

  InstanceSpec FakeEngine(const std::string& id, std::vector<std::string> flags = {}) {
    InstanceSpec spec;
    spec.id = id;
    spec.model_name = "tiny";
    spec.engine = "fake";
    spec.port = Port();
    spec.argv = {
        kPython, "-B",     kFakeEngine, "--model", model_root_ + "/tiny",  "--served-model-name",
        "tiny",  "--host", "127.0.0.1", "--port",  absl::StrCat(spec.port)};
    spec.argv.insert(spec.argv.end(), flags.begin(), flags.end());
    spec.ready_timeout = absl::Seconds(20);
    spec.source_tier = "disk";
    return spec;
  }

  InstanceSpec Script(const std::string& id, std::vector<std::string> flags = {}) {
    InstanceSpec spec;
    spec.id = id;
    spec.model_name = "script";
    spec.engine = "script";
    spec.port = Port();
    spec.argv = {kPython, "-B", dir_ + "/engine.py", absl::StrCat(spec.port)};
    spec.argv.insert(spec.argv.end(), flags.begin(), flags.end());
    spec.ready_timeout = absl::Seconds(20);
    return spec;
  }

  bool WaitState(const std::string& id, const std::string& state,
                 absl::Duration timeout = absl::Seconds(20)) {
    return testing::WaitFor(
        [&] {
          std::optional<v1::Instance> i = supervisor_->Get(id);
          return i.has_value() && i->state() == state;
        },
        timeout);
  }

  std::vector<std::string> States(const std::string& id) {
    gswarm::MutexLock lock(&events_mu_);
    std::vector<std::string> states;
    for (const v1::Instance& i : events_) {
      if (i.id() == id) states.push_back(i.state());
    }
    return states;
  }

  std::vector<v1::Instance> Events() {
    gswarm::MutexLock lock(&events_mu_);
    return events_;
  }

  static inline std::string model_root_;
  std::string dir_;
  std::unique_ptr<InstanceSupervisor> supervisor_;
  gswarm::Mutex events_mu_;
  std::vector<v1::Instance> events_ ABSL_GUARDED_BY(events_mu_);
};

}  // namespace
}  // namespace gswarm::client
