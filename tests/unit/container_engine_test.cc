// Engines in containers: the supervisor runs `docker run` in the foreground (the container's log
// is the instance's), stops the container by name with the engine's stop command, and leaves no
// container behind when the `docker run` client died with the agent. Docker itself is
// tests/support/fake_docker.py (a docker CLI whose containers are the fake engine), put first on
// PATH, so this runs without a Docker daemon.

#include <signal.h>
#include <sys/wait.h>

#include "absl/strings/str_cat.h"
#include "client/http_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/supervisor_fixture.h"

namespace gswarm::client {
namespace {

using ::testing::HasSubstr;

class ContainerEngineTest : public SupervisorTest {
 protected:
  void SetUp() override {
    SupervisorTest::SetUp();
    bin_ = dir_ + "/bin";
    state_ = dir_ + "/docker-state";
    const std::string support = fs::path(kFakeEngine).parent_path().string();
    auto installer = testing::Subprocess::Start(
        {kPython, "-B", "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import fake_docker; "
         "fake_docker.install(sys.argv[2], state=sys.argv[3])",
         support, bin_, state_});
    ASSERT_TRUE(installer.ok()) << installer.status();
    ASSERT_TRUE(testing::WaitFor([&] { return (*installer)->Exited(); }, absl::Seconds(30)));
    ASSERT_EQ((*installer)->status(), 0);
  }

  void TearDown() override {
    if (supervisor_ != nullptr) supervisor_->StopAll();
    // Whatever a failed test left running in the fake docker goes too.
    const std::string support = fs::path(kFakeEngine).parent_path().string();
    auto cleanup = testing::Subprocess::Start(
        {kPython, "-B", "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import fake_docker; "
         "import os; os.path.isdir(sys.argv[2]) and fake_docker.cleanup(sys.argv[2])",
         support, state_});
    if (cleanup.ok()) testing::WaitFor([&] { return (*cleanup)->Exited(); }, absl::Seconds(30));
    SupervisorTest::TearDown();
  }

  // An instance as the nim preset renders it, run by the fake docker on PATH.
  InstanceSpec Container(const std::string& id) {
    InstanceSpec spec;
    spec.id = id;
    spec.model_name = "tiny";
    spec.engine = "nim";
    spec.port = Port();
    const std::string name = "gswarm-" + id;
    // By path: the supervisor finds a bare "docker" on its own PATH, where a real one may be.
    const std::string docker = bin_ + "/docker";
    spec.argv = {docker,
                 "run",
                 "--rm",
                 "--name",
                 name,
                 "-p",
                 absl::StrCat("127.0.0.1:", spec.port, ":8000"),
                 "-v",
                 model_root_ + "/tiny:/opt/models/model:ro",
                 "-e",
                 "NIM_SERVED_MODEL_NAME=tiny",
                 "nvcr.io/nim/nvidia/llm-nim:latest"};
    spec.stop_argv = {docker, "stop", name};
    spec.health_path = "/v1/health/ready";
    spec.ready_timeout = absl::Seconds(30);
    return spec;
  }

  // The fake docker's record of container `name` (empty when there is none).
  nlohmann::json State(const std::string& name) {
    absl::StatusOr<std::string> text = common::ReadFile(absl::StrCat(state_, "/", name, ".json"));
    if (!text.ok()) return nlohmann::json::object();
    return nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  }

  std::string bin_;
  std::string state_;
};

TEST_F(ContainerEngineTest, RunsStopsByNameAndLogsTheContainer) {
  InstanceSpec spec = Container("inst-c1");
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  ASSERT_TRUE(WaitState("inst-c1", "ready")) << Slurp(supervisor_->LogPath("inst-c1"));
  const nlohmann::json running = State("gswarm-inst-c1");
  ASSERT_EQ(running.value("status", ""), "running") << running.dump();
  const pid_t engine = running.value("pid", 0);
  ASSERT_GT(engine, 0);

  absl::StatusOr<v1::Instance> stopped = supervisor_->Stop("inst-c1", /*force=*/false);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->state(), "stopped");
  // `docker stop` ended the container (--rm removed its record), and with it the client.
  EXPECT_TRUE(State("gswarm-inst-c1").empty());
  EXPECT_TRUE(testing::WaitFor([&] { return NotRunning(engine); }, absl::Seconds(10)));
  const std::string log = Slurp(supervisor_->LogPath("inst-c1"));
  EXPECT_THAT(log, HasSubstr("gswarm-inst-c1"));  // the stop command's own output, appended
}

TEST_F(ContainerEngineTest, AContainerWhoseClientDiedIsStoppedOnAdoption) {
  InstanceSpec spec = Container("inst-c2");
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  ASSERT_TRUE(WaitState("inst-c2", "ready"));
  const pid_t client = supervisor_->Get("inst-c2")->pid();
  const pid_t engine = State("gswarm-inst-c2").value("pid", 0);
  ASSERT_GT(engine, 0);

  // The agent goes without cleaning up, and the `docker run` client dies with it; the container
  // (here: the engine in its own session) runs on.
  supervisor_.reset();
  ASSERT_EQ(::kill(client, SIGKILL), 0);
  // Reaped, as init reaps it once its agent is gone (here the test process is its parent).
  ASSERT_TRUE(testing::WaitFor([&] { return ::waitpid(client, nullptr, WNOHANG) == client; },
                               absl::Seconds(10)));
  ASSERT_FALSE(NotRunning(engine));

  // The next agent finds the record's process gone and stops the container by name: no orphan.
  supervisor_ = std::make_unique<InstanceSupervisor>(MakeOptions());
  EXPECT_TRUE(supervisor_->Adopt().empty());
  EXPECT_TRUE(testing::WaitFor([&] { return NotRunning(engine); }, absl::Seconds(15)));
}

}  // namespace
}  // namespace gswarm::client
