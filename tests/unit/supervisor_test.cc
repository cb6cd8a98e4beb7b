// The instance supervisor against real processes: tests/support/fake_engine.py (an
// OpenAI-compatible engine), and a small Python engine of our own for what that one does not do
// (fork a grandchild that ignores SIGTERM, print its environment, flood its log).

#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/http_client.h"
#include "client/instance_record.h"
#include "client/instance_supervisor.h"
#include "client/process.h"
#include "common/paths.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"
#include "tests/unit/supervisor_fixture.h"
#include "tests/unit/temp_dir.h"

namespace gswarm::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST_F(SupervisorTest, StartsFakeEngineServesAndStops) {
  InstanceSpec spec = FakeEngine("inst-a1");
  absl::StatusOr<v1::Instance> started = supervisor_->Start(spec);
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->state(), "starting");
  EXPECT_GT(started->pid(), 0);
  EXPECT_EQ(started->endpoint(), absl::StrCat("http://127.0.0.1:", spec.port));
  EXPECT_EQ(started->model_name(), "tiny");
  EXPECT_EQ(started->source_tier(), "disk");
  EXPECT_GT(started->started_at().seconds(), 0);
  ASSERT_TRUE(WaitState("inst-a1", "ready")) << supervisor_->Get("inst-a1")->DebugString();

  v1::Instance ready = *supervisor_->Get("inst-a1");
  EXPECT_GT(ready.load_time_ms(), 0u);
  HttpRequest request;
  request.url = ready.endpoint() + "/v1/models";
  absl::StatusOr<HttpResponse> models = SendHttpRequest(request);
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->status, 200);
  EXPECT_THAT(models->body, HasSubstr("tiny"));
  EXPECT_TRUE(Exists(dir_ + "/instances/inst-a1.json"));
  EXPECT_THAT(Slurp(supervisor_->LogPath("inst-a1")), HasSubstr("==== gswarm"));

  absl::StatusOr<v1::Instance> stopped = supervisor_->Stop("inst-a1", /*force=*/false);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), "stopped");
  EXPECT_TRUE(Reaped(ready.pid()));
  EXPECT_THAT(GroupMembers(ready.pid()), IsEmpty());
  EXPECT_FALSE(Exists(dir_ + "/instances/inst-a1.json"));
  EXPECT_THAT(States("inst-a1"), ElementsAre("starting", "ready", "stopping", "stopped"));
  // Stopping what has ended answers it as it is; an unknown id is NOT_FOUND.
  EXPECT_EQ(supervisor_->Stop("inst-a1", false)->state(), "stopped");
  EXPECT_EQ(supervisor_->Stop("inst-nope", false).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SupervisorTest, NeverReadyFailsWithLogLinesAndLeavesNoProcess) {
  InstanceSpec spec = FakeEngine("inst-b1", {"--never-ready"});
  spec.ready_timeout = absl::Seconds(2);
  absl::StatusOr<v1::Instance> started = supervisor_->Start(spec);
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitState("inst-b1", "failed", absl::Seconds(15)));
  v1::Instance failed = *supervisor_->Get("inst-b1");
  EXPECT_THAT(failed.state_reason(), HasSubstr("not ready after 2s"));
  EXPECT_THAT(failed.state_reason(), HasSubstr("HTTP 503"));
  EXPECT_THAT(failed.state_reason(), HasSubstr("listening on"));  // a line of the engine's log
  EXPECT_TRUE(Reaped(started->pid()));
  EXPECT_THAT(GroupMembers(started->pid()), IsEmpty());
  EXPECT_FALSE(Exists(dir_ + "/instances/inst-b1.json"));
}

TEST_F(SupervisorTest, CrashesRestartWithBackoffThenFail) {
  InstanceSpec spec = FakeEngine("inst-c1", {"--crash-after", "0.3", "--exit-code", "3"});
  absl::StatusOr<v1::Instance> started = supervisor_->Start(spec);
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitState("inst-c1", "failed", absl::Seconds(30)));
  v1::Instance failed = *supervisor_->Get("inst-c1");
  EXPECT_EQ(failed.restarts(), 2u);
  EXPECT_THAT(failed.state_reason(), HasSubstr("exit code 3 after 2 restarts"));
  EXPECT_THAT(failed.state_reason(), HasSubstr("last log lines:"));
  std::set<int32_t> pids;
  std::vector<uint32_t> restarts;
  for (const v1::Instance& i : Events()) {
    pids.insert(i.pid());
    if (i.state() == "starting") restarts.push_back(i.restarts());
  }
  EXPECT_THAT(restarts, ElementsAre(0u, 1u, 2u));
  EXPECT_EQ(pids.size(), 3u);
  for (int32_t pid : pids) EXPECT_TRUE(Reaped(pid)) << pid;
  EXPECT_FALSE(Exists(dir_ + "/instances/inst-c1.json"));
}

TEST_F(SupervisorTest, StopKillsTheWholeGroupIncludingAGrandchild) {
  InstanceSpec spec = Script("inst-d1", {"grandchild"});
  absl::StatusOr<v1::Instance> started = supervisor_->Start(spec);
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitState("inst-d1", "ready"));
  const std::string log = supervisor_->LogPath("inst-d1");
  ASSERT_TRUE(testing::WaitFor([&] { return absl::StrContains(Slurp(log), "grandchild="); },
                               absl::Seconds(10)));
  const std::string text = Slurp(log);
  const size_t at = text.find("grandchild=") + 11;
  int grandchild = 0;
  ASSERT_TRUE(absl::SimpleAtoi(text.substr(at, text.find('\n', at) - at), &grandchild));
  ASSERT_EQ(ReadProcStat(grandchild)->pgrp, started->pid());

  // The grandchild ignores SIGTERM: only the SIGKILL after stop_grace (1 s) ends it.
  const absl::Time t0 = absl::Now();
  absl::StatusOr<v1::Instance> stopped = supervisor_->Stop("inst-d1", /*force=*/false);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), "stopped");
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(900));
  EXPECT_THAT(GroupMembers(started->pid()), IsEmpty());
  EXPECT_TRUE(NotRunning(grandchild));
  EXPECT_TRUE(Reaped(started->pid()));
}

TEST_F(SupervisorTest, ForceStopKillsAtOnce) {
  InstanceSupervisor::Options options = MakeOptions();
  options.stop_grace = absl::Seconds(30);
  supervisor_ = std::make_unique<InstanceSupervisor>(options);
  absl::StatusOr<v1::Instance> started = supervisor_->Start(Script("inst-e1", {"ignore-term"}));
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitState("inst-e1", "ready"));
  const absl::Time t0 = absl::Now();
  absl::StatusOr<v1::Instance> stopped = supervisor_->Stop("inst-e1", /*force=*/true);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), "stopped");
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  EXPECT_TRUE(Reaped(started->pid()));
  EXPECT_THAT(GroupMembers(started->pid()), IsEmpty());
}

TEST(FreeTcpPortTest, PicksABindablePortBelowTheOutgoingConnectionsRange) {
  const std::string range = Slurp("/proc/sys/net/ipv4/ip_local_port_range");
  int first = 0;
  ASSERT_TRUE(absl::SimpleAtoi(range.substr(0, range.find_first_of(" \t")), &first)) << range;
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<int> port = FreeTcpPort();
    ASSERT_TRUE(port.ok()) << port.status();
    if (first - 10000 >= 1000) {
      EXPECT_GE(*port, 10000);
      EXPECT_LT(*port, first);
    }
    EXPECT_FALSE(TcpPortInUse(*port));
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(*port));
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << *port;
    EXPECT_EQ(::listen(fd, 1), 0);
    EXPECT_TRUE(TcpPortInUse(*port));
    ::close(fd);
  }
}

TEST_F(SupervisorTest, PortInUseIsAnErrorBeforeAnythingStarts) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  InstanceSpec spec = Script("inst-f1");
  spec.port = ntohs(addr.sin_port);
  EXPECT_TRUE(InstanceSupervisor::PortInUse(spec.port));
  absl::StatusOr<v1::Instance> started = supervisor_->Start(spec);
  ::close(fd);
  EXPECT_EQ(started.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(started.status().message(),
              HasSubstr(absl::StrCat("port ", spec.port,
                                     " is in use on this node (pick another or omit it)")));
  EXPECT_FALSE(supervisor_->Get("inst-f1").has_value());
  EXPECT_FALSE(Exists(supervisor_->LogPath("inst-f1")));
  EXPECT_THAT(Events(), IsEmpty());

  // An instance of ours that has not bound its port yet holds it too.
  InstanceSpec slow = FakeEngine("inst-f2", {"--startup-delay", "5"});
  ASSERT_TRUE(supervisor_->Start(slow).ok());
  InstanceSpec clash = Script("inst-f3");
  clash.port = slow.port;
  EXPECT_EQ(supervisor_->Start(clash).status().code(), absl::StatusCode::kFailedPrecondition);
  // So does an id in use.
  EXPECT_EQ(supervisor_->Start(FakeEngine("inst-f2")).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(SupervisorTest, BadSpecsAreRefusedBeforeAnythingStarts) {
  InstanceSpec spec = Script("inst-g1");
  spec.argv[0] = "/nonexistent/engine";
  EXPECT_EQ(supervisor_->Start(spec).status().code(), absl::StatusCode::kNotFound);
  spec = Script("../escape");
  EXPECT_EQ(supervisor_->Start(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = Script("inst-g2");
  spec.gpu_device = "tpu0";
  EXPECT_EQ(supervisor_->Start(spec).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(supervisor_->List(), IsEmpty());
}

TEST_F(SupervisorTest, CudaVisibleDevicesAndEnvironmentReachTheEngine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"gpu1", "'1'"}, {"gpu0,gpu2", "'0,2'"}, {"cpu", "''"}};
  for (size_t i = 0; i < cases.size(); ++i) {
    InstanceSpec spec = Script(absl::StrCat("inst-h", i));
    spec.gpu_device = cases[i].first;
    spec.env["GSWARM_TEST_MARK"] = "mark-42";
    ASSERT_TRUE(supervisor_->Start(spec).ok());
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string id = absl::StrCat("inst-h", i);
    ASSERT_TRUE(WaitState(id, "ready"));
    EXPECT_EQ(supervisor_->Get(id)->gpu_device(), cases[i].first);
    const std::string log = Slurp(supervisor_->LogPath(id));
    EXPECT_THAT(log, HasSubstr("CUDA_VISIBLE_DEVICES=" + cases[i].second)) << id;
    EXPECT_THAT(log, HasSubstr("GSWARM_TEST_MARK='mark-42'"));
  }
  EXPECT_EQ(*CudaVisibleDevices("gpu3"), "3");
  EXPECT_EQ(*CudaVisibleDevices("gpu1, gpu2"), "1,2");
  EXPECT_EQ(*CudaVisibleDevices("cpu"), "");
  EXPECT_FALSE(CudaVisibleDevices("gpu").ok());
  EXPECT_FALSE(CudaVisibleDevices("gpu-1").ok());
  supervisor_->StopAll();
  for (const v1::Instance& i : supervisor_->List()) {
    EXPECT_EQ(i.state(), "stopped");
    EXPECT_TRUE(Reaped(i.pid()));
  }
}

TEST_F(SupervisorTest, LogIsWrittenAndCapped) {
  InstanceSupervisor::Options options = MakeOptions();
  options.max_log_bytes = 64 << 10;
  supervisor_ = std::make_unique<InstanceSupervisor>(options);
  ASSERT_TRUE(supervisor_->Start(Script("inst-i1", {"spam"})).ok());
  ASSERT_TRUE(WaitState("inst-i1", "ready"));
  const std::string log = supervisor_->LogPath("inst-i1");
  // The engine wrote ~380 KiB; the supervisor keeps at most 64 KiB in the log and the older
  // part in .1.
  ASSERT_TRUE(testing::WaitFor([&] { return Exists(log + ".1"); }, absl::Seconds(10)));
  EXPECT_TRUE(
      testing::WaitFor([&] { return SizeOf(log) <= options.max_log_bytes; }, absl::Seconds(10)))
      << SizeOf(log);
  EXPECT_LE(SizeOf(log + ".1"), 2 * options.max_log_bytes);
  EXPECT_GT(SizeOf(log + ".1"), 0u);
  EXPECT_THAT(Slurp(log + ".1"), HasSubstr("spam line"));
  // Where the log's head is cut out in place, the last lines are never lost; elsewhere those
  // written between a copy and its truncate may be (see CapLogFile).
  if (CanCollapseFiles(dir_)) {
    EXPECT_TRUE(testing::WaitFor(
        [&] { return absl::StrContains(Slurp(log + ".1") + Slurp(log), "spam done"); },
        absl::Seconds(10)));
  }
}

TEST(CapLogFileTest, NothingIsLostWhileTheWriterAppends) {
  testing::TempDir dir(fs::temp_directory_path().string());
  ASSERT_FALSE(dir.path().empty());
  if (!CanCollapseFiles(dir.path())) {
    GTEST_SKIP() << dir.path() << " cannot cut a file's head out in place (tmpfs?)";
  }
  const std::string log = dir.path() + "/engine.log";
  constexpr uint64_t kMax = 64 << 10;
  constexpr int kLines = 20000;
  auto line = [](int i) { return absl::StrCat("line ", 100000 + i, " ", std::string(40, 'x')); };
  std::atomic<bool> done{false};
  std::thread writer([&] {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    for (int i = 0; fd >= 0 && i < kLines; ++i) {
      const std::string text = line(i) + "\n";
      if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) break;
    }
    if (fd >= 0) ::close(fd);
    done = true;
  });
  int rotations = 0;
  while (!done) rotations += CapLogFile(log, kMax) ? 1 : 0;
  writer.join();
  rotations += CapLogFile(log, kMax) ? 1 : 0;
  EXPECT_GT(rotations, 1);
  EXPECT_LE(SizeOf(log), kMax);
  EXPECT_LE(SizeOf(log + ".1"), kMax);

  // .1 then the log: one run of lines without a gap, ending with the last line written.
  const std::string text = Slurp(log + ".1") + Slurp(log);
  ASSERT_GE(text.size(), kMax);
  const std::vector<std::string> lines =
      absl::StrSplit(text.substr(text.find('\n') + 1), '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  int first = 0;
  ASSERT_TRUE(absl::SimpleAtoi(lines[0].substr(5, 6), &first)) << lines[0];
  first -= 100000;
  for (size_t i = 0; i < lines.size(); ++i) {
    ASSERT_EQ(lines[i], line(first + static_cast<int>(i)))
        << "line " << i << " of " << lines.size();
  }
  EXPECT_EQ(first + static_cast<int>(lines.size()), kLines);
}

TEST_F(SupervisorTest, AdoptsALiveInstanceAfterAnAgentRestart) {
  InstanceSpec spec = FakeEngine("inst-j1");
  absl::StatusOr<v1::Instance> started = supervisor_->Start(spec);
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitState("inst-j1", "ready"));
  supervisor_.reset();  // the agent goes away without cleanup; the engine keeps running
  ASSERT_FALSE(NotRunning(started->pid()));

  supervisor_ = std::make_unique<InstanceSupervisor>(MakeOptions());
  std::vector<v1::Instance> adopted = supervisor_->Adopt();
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].id(), "inst-j1");
  EXPECT_EQ(adopted[0].state(), "ready");
  EXPECT_EQ(adopted[0].pid(), started->pid());
  EXPECT_EQ(adopted[0].port(), static_cast<uint32_t>(spec.port));
  EXPECT_EQ(adopted[0].endpoint(), started->endpoint());
  EXPECT_GT(adopted[0].load_time_ms(), 0u);
  // Adopting twice does not duplicate it.
  EXPECT_THAT(supervisor_->Adopt(), IsEmpty());
  EXPECT_EQ(supervisor_->List().size(), 1u);

  absl::StatusOr<v1::Instance> stopped = supervisor_->Stop("inst-j1", false);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), "stopped");
  EXPECT_TRUE(Reaped(started->pid()));
  EXPECT_THAT(GroupMembers(started->pid()), IsEmpty());
}

TEST_F(SupervisorTest, AdoptsAnInstanceStillLoadingAsStarting) {
  absl::StatusOr<v1::Instance> started =
      supervisor_->Start(FakeEngine("inst-l1", {"--startup-delay", "1.5"}));
  ASSERT_TRUE(started.ok()) << started.status();
  supervisor_.reset();

  supervisor_ = std::make_unique<InstanceSupervisor>(MakeOptions());
  std::vector<v1::Instance> adopted = supervisor_->Adopt();
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].state(), "starting");
  EXPECT_EQ(adopted[0].pid(), started->pid());
  EXPECT_TRUE(WaitState("inst-l1", "ready"));
}

TEST_F(SupervisorTest, AdoptDropsRecordsOfDeadOrRecycledPids) {
  ASSERT_TRUE(common::MakeDirs(dir_ + "/instances").ok());
  // A pid that is gone.
  auto done = testing::Subprocess::Start({"/bin/true"});
  ASSERT_TRUE(done.ok());
  const pid_t dead = (*done)->pid();
  ASSERT_TRUE(testing::WaitFor([&] { return (*done)->Exited(); }, absl::Seconds(10)));
  InstanceRecord record;
  record.spec = Script("inst-k1");
  record.pid = record.pgid = dead;
  record.start_ticks = 1;
  record.started_at = absl::Now();
  ASSERT_TRUE(
      common::WriteFileAtomically(dir_ + "/instances/inst-k1.json", InstanceRecordToJson(record))
          .ok());
  // A live pid whose start time says it is another process now: dropped and left alone.
  auto other = testing::Subprocess::Start({"/bin/sleep", "30"});
  ASSERT_TRUE(other.ok());
  record.spec = Script("inst-k2");
  record.pid = record.pgid = (*other)->pid();
  record.start_ticks = ReadProcStat((*other)->pid())->start_ticks + 1;
  ASSERT_TRUE(
      common::WriteFileAtomically(dir_ + "/instances/inst-k2.json", InstanceRecordToJson(record))
          .ok());
  std::ofstream(dir_ + "/instances/inst-k3.json") << "{not json";

  EXPECT_THAT(supervisor_->Adopt(), IsEmpty());
  EXPECT_FALSE(Exists(dir_ + "/instances/inst-k1.json"));
  EXPECT_FALSE(Exists(dir_ + "/instances/inst-k2.json"));
  EXPECT_FALSE(Exists(dir_ + "/instances/inst-k3.json"));
  EXPECT_FALSE((*other)->Exited());
  EXPECT_THAT(supervisor_->List(), IsEmpty());
}

TEST_F(SupervisorTest, AdoptKillsEnginesStartedButNeverRecorded) {
  // The agent died between spawning the engine and writing its record: the record is missing.
  absl::StatusOr<v1::Instance> started = supervisor_->Start(Script("inst-o1"));
  ASSERT_TRUE(started.ok()) << started.status();
  supervisor_.reset();
  ASSERT_TRUE(fs::remove(dir_ + "/instances/inst-o1.json"));
  ASSERT_FALSE(NotRunning(started->pid()));
  // Another agent's engine on the same machine (its marker names another state dir) stays.
  SpawnOptions other;
  other.argv = {"/bin/sleep", "30"};
  other.env[std::string(InstanceSupervisor::kOwnerVariable)] = "/elsewhere/instances/x.json";
  absl::StatusOr<std::unique_ptr<ProcessGroup>> stranger = ProcessGroup::Spawn(other);
  ASSERT_TRUE(stranger.ok()) << stranger.status();

  supervisor_ = std::make_unique<InstanceSupervisor>(MakeOptions());
  EXPECT_THAT(supervisor_->Adopt(), IsEmpty());
  EXPECT_TRUE(
      testing::WaitFor([&] { return GroupMembers(started->pid()).empty(); }, absl::Seconds(10)));
  EXPECT_FALSE((*stranger)->Exited());
  ASSERT_TRUE((*stranger)->Terminate(absl::ZeroDuration(), /*force=*/true).ok());
}

TEST(InstanceRecordTest, RoundTrips) {
  InstanceRecord record;
  record.spec.id = "inst-1";
  record.spec.model_name = "m";
  record.spec.argv = {"/bin/engine", "--port", "8080"};
  record.spec.env = {{"A", "1"}};
  record.spec.gpu_device = "gpu1";
  record.spec.port = 8080;
  record.spec.ready_timeout = absl::Seconds(90);
  record.pid = 42;
  record.pgid = 42;
  record.start_ticks = 12345;
  record.started_at = absl::FromUnixMillis(1700000000123);
  record.restarts = 2;
  absl::StatusOr<InstanceRecord> back = ParseInstanceRecord(InstanceRecordToJson(record));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->spec.argv, record.spec.argv);
  EXPECT_EQ(back->spec.env, record.spec.env);
  EXPECT_EQ(back->spec.ready_timeout, absl::Seconds(90));
  EXPECT_EQ(back->started_at, record.started_at);
  EXPECT_EQ(back->start_ticks, 12345u);
  EXPECT_EQ(back->restarts, 2u);
  EXPECT_FALSE(ParseInstanceRecord("{\"id\": \"x\"}").ok());
}

}  // namespace
}  // namespace gswarm::client
