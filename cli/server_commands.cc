#include "cli/server_commands.h"

#include <signal.h>
#include <sys/resource.h>

#include "absl/strings/str_cat.h"
#include "client/agent.h"
#include "client/memory_probe.h"
#include "client/nvml.h"
#include "common/auth.h"
#include "common/paths.h"
#include "common/status.h"
#include "host/host_server.h"
#include "spdlog/spdlog.h"

namespace gswarm::cli {
namespace {

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

void WaitForTerminationSignal() {
  sigset_t set = TerminationSignals();
  int signal = 0;
  sigwait(&set, &signal);
  spdlog::info("received {}, shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
}

int Fail(const absl::Status& status) {
  spdlog::error("{}", status.message());
  return 1;
}

std::unique_ptr<client::Agent> MakeAgent(client::AgentOptions options,
                                         const common::ClientConfig& config) {
  client::MemoryProbe::Options probe;
  // The tiers as the agent resolved them (its own keys, else the cluster default).
  probe.model_cache_dir = options.disk.model_cache_dir;
  probe.dram_tier_dir = options.dram.root;
  probe.dram_tier_budget_bytes = options.dram.budget_bytes;
  probe.gpu_memory_fraction = config.gpu_memory_fraction;
  if (absl::Status made = common::MakeDirs(probe.model_cache_dir); !made.ok()) {
    spdlog::warn("model cache: {}", made.message());
  }
  return std::make_unique<client::Agent>(
      std::move(options),
      std::make_unique<client::MemoryProbe>(std::move(probe), client::LoadNvmlProbe()));
}

// Each agent holds a connection open; the usual soft limit of 1024 descriptors would cap a host
// near a thousand agents, so take the hard limit.
void RaiseOpenFileLimit() {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
    spdlog::debug("open file limit raised from {} to {}", before, limit.rlim_cur);
  }
}

std::string DialAddress(const std::string& bind, int port) {
  if (bind == "0.0.0.0" || bind.empty()) return absl::StrCat("127.0.0.1:", port);
  if (bind == "::" || bind == "[::]") return absl::StrCat("[::1]:", port);
  if (bind.find(':') != std::string::npos && bind.front() != '[') {
    return absl::StrCat("[", bind, "]:", port);
  }
  return absl::StrCat(bind, ":", port);
}

}  // namespace

void BlockTerminationSignals() {
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A client that hangs up mid-response (a stream through the router, a peer's download) must
  // cost that response, not the process: httplib writes without MSG_NOSIGNAL.
  signal(SIGPIPE, SIG_IGN);
}

int RunHost(const common::Config& config) {
  RaiseOpenFileLimit();
  absl::StatusOr<std::unique_ptr<host::HostServer>> server = host::HostServer::Create(config);
  if (!server.ok()) return Fail(server.status());
  WaitForTerminationSignal();
  (*server)->Shutdown();
  return 0;
}

int RunClient(const common::Config& config) {
  absl::StatusOr<client::AgentOptions> options = client::Agent::OptionsFromConfig(config);
  if (!options.ok()) return Fail(options.status());
  std::unique_ptr<client::Agent> agent = MakeAgent(*std::move(options), config.client);
  agent->Start();
  WaitForTerminationSignal();
  agent->Stop();
  return 0;
}

int RunStart(const common::Config& config) {
  RaiseOpenFileLimit();
  absl::StatusOr<std::unique_ptr<host::HostServer>> server = host::HostServer::Create(config);
  if (!server.ok()) return Fail(server.status());
  absl::StatusOr<client::AgentOptions> options = client::Agent::OptionsFromConfig(config);
  if (!options.ok()) return Fail(options.status());
  // The embedded agent talks to this very host over loopback, with its token.
  options->host_target = DialAddress(config.host.host, (*server)->grpc_port());
  options->auth_token = (*server)->auth_token();
  std::unique_ptr<client::Agent> agent = MakeAgent(*std::move(options), config.client);
  agent->Start();
  spdlog::info(
      "gswarm start: host and local agent running; try `gswarm nodes` or "
      "curl http://localhost:{}/health",
      (*server)->http_port());
  WaitForTerminationSignal();
  agent->Stop();
  (*server)->Shutdown();
  return 0;
}

}  // namespace gswarm::cli
