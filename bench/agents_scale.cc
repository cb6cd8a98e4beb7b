// agents_scale: how many agents one GSwarm host can carry.
//
// One process simulates N agents, each a gswarm.v1.AgentLink/Connect bidi stream on gRPC's
// callback client API: no thread per agent, one write in flight per stream, a few hundred
// streams per channel. Each agent sends Hello, waits for Welcome, then heartbeats every interval;
// the host acks every heartbeat and the round trip is timed. Around a steady-state window the
// host's CPU and RSS are read from /proc, and the host's own public API is asked how many nodes
// it has online, so a host that accepts streams but never registers them does not pass.
//
// Rounds run for each N in --counts and stop at the first N whose connection setup fails or whose
// heartbeat p99 exceeds --rtt-limit-ms. See bench/README.md.

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "bench/proc_stats.h"
#include "bench/sim_agent.h"
#include "gswarm/v1/api.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace gswarm::bench {
namespace {

namespace v1 = ::gswarm::v1;

struct Flags {
  std::string target = "127.0.0.1:8101";
  int host_pid = 0;  // 0: no CPU/RSS columns
  std::vector<int> counts = {100, 1000, 5000, 10000, 20000, 40000};
  int interval_ms = 2000;
  double window_s = 10;
  double settle_s = 2;  // after the last Welcome, before the window opens
  double connect_timeout_s = 60;
  int streams_per_channel = 100;  // gRPC servers commonly cap concurrent streams per connection
  double rtt_limit_ms = 1000;
  std::string token;
  bool json = false;
  // The host's HTTP address (http://host:port): after each window, GET /metrics `scrapes` times.
  std::string metrics_url;
  int scrapes = 5;
};

// ---- the public API ---------------------------------------------------------------------------

// The host's gswarm.v1.GSwarm calls the benchmark needs. Not thread-safe: the main thread's.
class HostApi {
 public:
  explicit HostApi(const Flags& flags) : flags_(flags) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);  // ListNodes for 10k nodes is several MiB
    args.SetInt("gswarm.channel_index", -1);
    stub_ = v1::GSwarm::NewStub(
        grpc::CreateCustomChannel(flags.target, grpc::InsecureChannelCredentials(), args));
  }

  absl::StatusOr<v1::HealthResponse> Health() {
    grpc::ClientContext context;
    Prepare(&context, absl::Seconds(10));
    v1::HealthResponse response;
    grpc::Status status = stub_->Health(&context, v1::HealthRequest(), &response);
    if (!status.ok()) return ToStatus("Health", status);
    return response;
  }

  // Online nodes whose id starts with "sim-".
  absl::StatusOr<int> CountSimNodesOnline() {
    grpc::ClientContext context;
    Prepare(&context, absl::Seconds(30));
    v1::ListNodesRequest request;
    request.set_online_only(true);
    v1::ListNodesResponse response;
    grpc::Status status = stub_->ListNodes(&context, request, &response);
    if (!status.ok()) return ToStatus("ListNodes", status);
    int count = 0;
    for (const v1::NodeInfo& node : response.nodes()) {
      if (node.node_id().rfind("sim-", 0) == 0 && node.state() == "online") ++count;
    }
    return count;
  }

  // Waits until the host reports `online` nodes or fewer; returns how long it took.
  absl::StatusOr<double> AwaitOnlineAtMost(uint32_t online, absl::Duration timeout) {
    Clock::time_point start = Clock::now();
    absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      absl::StatusOr<v1::HealthResponse> health = Health();
      if (!health.ok()) return health.status();
      if (health->nodes_online() <= online) return MsBetween(start, Clock::now()) / 1000;
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("host still reports ", health->nodes_online(), " nodes online after ",
                         absl::FormatDuration(timeout), " (expected <= ", online, ")"));
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

 private:
  void Prepare(grpc::ClientContext* context, absl::Duration timeout) const {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    if (!flags_.token.empty()) {
      context->AddMetadata("authorization", absl::StrCat("Bearer ", flags_.token));
    }
  }
  absl::Status ToStatus(absl::string_view rpc, const grpc::Status& status) const {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat(rpc, " on ", flags_.target, ": ", status.error_message()));
  }

  const Flags& flags_;
  std::unique_ptr<v1::GSwarm::Stub> stub_;
};

// ---- a round ----------------------------------------------------------------------------------

struct RoundResult {
  int agents = 0;
  int channels = 0;
  int welcomed = 0;
  int failed = 0;
  bool connected_all = false;
  double connect_s = 0;
  double hello_p50_ms = 0, hello_p99_ms = 0;
  std::optional<double> host_cpu_pct;
  std::optional<double> host_rss_mib;
  std::optional<double> rss_per_agent_kib;
  double bench_cpu_pct = 0;
  int hb_expected = 0;  // N x window / interval
  int hb_sent = 0, hb_acked = 0, hb_unacked = 0;
  bool load_short = false;  // the generator sent under 90% of hb_expected
  double rtt_p50_ms = 0, rtt_p99_ms = 0, rtt_max_ms = 0;
  std::optional<int> health_online;
  std::optional<int> listed_online;
  std::optional<double> release_s;  // until the host reported 0 online after disconnect
  // GET /metrics with N agents: wall time per scrape, the host's CPU per scrape (less its
  // steady-state rate over the same time), the exposition's size.
  std::optional<double> scrape_p50_ms;
  std::optional<double> scrape_cpu_ms;
  std::optional<double> scrape_kib;
  std::string verdict = "ok";
  std::string note;
};

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(q * (values.size() - 1) + 0.5);
  return values[std::min(rank, values.size() - 1)];
}

void Log(const Flags& flags, const std::string& line) {
  (flags.json ? std::cerr : std::cout) << line << std::endl;
}

// GET /metrics `flags.scrapes` times, one after another.
void MeasureScrapes(const Flags& flags, RoundResult* result) {
  httplib::Client client(flags.metrics_url);
  client.set_read_timeout(60);
  httplib::Headers headers;
  if (!flags.token.empty()) headers.emplace("Authorization", "Bearer " + flags.token);
  std::optional<uint64_t> ticks_before;
  if (flags.host_pid > 0) {
    if (auto ticks = ReadCpuTicks(flags.host_pid); ticks.ok()) ticks_before = *ticks;
  }
  std::vector<double> wall_ms;
  size_t bytes = 0;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < flags.scrapes; ++i) {
    const Clock::time_point t0 = Clock::now();
    httplib::Result r = client.Get("/metrics", headers);
    if (!r || r->status != 200) {
      result->note = absl::StrCat("GET /metrics failed: ", r ? absl::StrCat("HTTP ", r->status)
                                                             : httplib::to_string(r.error()));
      return;
    }
    wall_ms.push_back(MsBetween(t0, Clock::now()));
    bytes = r->body.size();
  }
  const double elapsed_s = MsBetween(start, Clock::now()) / 1000;
  result->scrape_p50_ms = Percentile(wall_ms, 0.50);
  result->scrape_kib = bytes / 1024.0;
  if (ticks_before && result->host_cpu_pct) {
    absl::StatusOr<uint64_t> ticks = ReadCpuTicks(flags.host_pid);
    if (ticks.ok()) {
      const double cpu_s = static_cast<double>(*ticks - *ticks_before) / sysconf(_SC_CLK_TCK);
      const double background_s = *result->host_cpu_pct / 100 * elapsed_s;
      result->scrape_cpu_ms = std::max(0.0, cpu_s - background_s) / flags.scrapes * 1000;
    }
  }
}

// The steady-state window: host CPU and RSS around it, heartbeat RTT inside it, and the host's
// own count of online nodes at its end.
void MeasureSteadyState(const Flags& flags, std::optional<uint64_t> baseline_rss_kib,
                        AgentRound* round, const std::vector<std::unique_ptr<SimAgent>>& agents,
                        HostApi* api, RoundResult* result) {
  const int n = result->agents;
  absl::SleepFor(absl::Seconds(flags.settle_s));
  Clock::time_point window_start = Clock::now();
  auto window =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(flags.window_s));
  round->SetWindow(window_start, window_start + window);
  std::optional<uint64_t> ticks_before;
  if (flags.host_pid > 0) {
    if (auto ticks = ReadCpuTicks(flags.host_pid); ticks.ok()) ticks_before = *ticks;
  }
  double self_before = SelfCpuSeconds();
  std::this_thread::sleep_until(window_start + window);
  double window_s = MsBetween(window_start, Clock::now()) / 1000;
  result->bench_cpu_pct = (SelfCpuSeconds() - self_before) / window_s * 100;
  if (flags.host_pid > 0) {
    absl::StatusOr<uint64_t> ticks = ReadCpuTicks(flags.host_pid);
    if (ticks.ok() && ticks_before) {
      result->host_cpu_pct =
          static_cast<double>(*ticks - *ticks_before) / sysconf(_SC_CLK_TCK) / window_s * 100;
    }
    absl::StatusOr<uint64_t> rss = ReadRssKib(flags.host_pid);
    if (rss.ok()) {
      result->host_rss_mib = *rss / 1024.0;
      if (baseline_rss_kib) {
        result->rss_per_agent_kib =
            (static_cast<double>(*rss) - static_cast<double>(*baseline_rss_kib)) / n;
      }
    }
    if (!ticks.ok() || !rss.ok()) result->note = "host process gone during the window";
  }
  // Acks for heartbeats sent at the very end of the window get the full limit to arrive.
  absl::SleepFor(absl::Milliseconds(flags.rtt_limit_ms));
  if (!flags.metrics_url.empty()) MeasureScrapes(flags, result);

  std::vector<double> rtt;
  for (auto& agent : agents) {
    AgentSamples samples = agent->TakeSamples();
    result->hb_sent += samples.sent;
    result->hb_unacked += samples.unacked;
    rtt.insert(rtt.end(), samples.rtt_ms.begin(), samples.rtt_ms.end());
  }
  result->hb_expected = static_cast<int>(n * flags.window_s * 1000 / flags.interval_ms);
  result->load_short = result->hb_sent < 0.9 * result->hb_expected;
  result->hb_acked = static_cast<int>(rtt.size());
  result->rtt_max_ms = rtt.empty() ? 0 : *std::max_element(rtt.begin(), rtt.end());
  // Unacked heartbeats are slower than the limit: they count in the percentiles as such.
  std::vector<double> with_lost = rtt;
  with_lost.insert(with_lost.end(), result->hb_sent - result->hb_acked,
                   std::numeric_limits<double>::infinity());
  result->rtt_p50_ms = Percentile(with_lost, 0.50);
  result->rtt_p99_ms = Percentile(with_lost, 0.99);

  if (absl::StatusOr<v1::HealthResponse> health = api->Health(); health.ok()) {
    result->health_online = static_cast<int>(health->nodes_online());
  } else {
    result->note = std::string(health.status().message());
  }
  if (absl::StatusOr<int> listed = api->CountSimNodesOnline(); listed.ok()) {
    result->listed_online = *listed;
  } else if (result->note.empty()) {
    result->note = std::string(listed.status().message());
  }
}

RoundResult RunRound(const Flags& flags, int n, std::optional<uint64_t> baseline_rss_kib,
                     HostApi* api) {
  RoundResult result;
  result.agents = n;
  result.channels = std::max(1, (n + flags.streams_per_channel - 1) / flags.streams_per_channel);

  // On the heap: if some stream never finishes they are leaked with it (see below).
  auto round = std::make_unique<AgentRound>(n);
  auto scheduler =
      std::make_unique<HeartbeatScheduler>(std::chrono::milliseconds(flags.interval_ms));
  SimAgentOptions options{.interval_ms = flags.interval_ms, .token = flags.token};
  std::vector<std::unique_ptr<v1::AgentLink::Stub>> stubs;
  for (int i = 0; i < result.channels; ++i) {
    grpc::ChannelArguments args;
    // A distinct arg keeps each channel on its own subchannel (own TCP connection) instead of
    // sharing one from the global subchannel pool.
    args.SetInt("gswarm.channel_index", i);
    stubs.push_back(v1::AgentLink::NewStub(
        grpc::CreateCustomChannel(flags.target, grpc::InsecureChannelCredentials(), args)));
  }

  std::mt19937 rng(static_cast<uint32_t>(n));
  std::vector<std::unique_ptr<SimAgent>> agents;
  agents.reserve(n);
  Clock::time_point start = Clock::now();
  for (int i = 0; i < n; ++i) {
    agents.push_back(std::make_unique<SimAgent>(i, options, round.get(), scheduler.get()));
    agents.back()->Start(stubs[i % stubs.size()].get(), &rng);
  }
  result.connected_all = round->AwaitConnected(absl::Seconds(flags.connect_timeout_s));
  result.connect_s = MsBetween(start, Clock::now()) / 1000;
  result.welcomed = round->welcomed();
  result.failed = round->failed();
  std::vector<double> hello = round->hello_ms();
  result.hello_p50_ms = Percentile(hello, 0.50);
  result.hello_p99_ms = Percentile(hello, 0.99);
  result.connected_all = result.connected_all && result.welcomed == n;
  Log(flags, absl::StrFormat("N=%d: %d/%d welcomed in %.2f s (%d failed)%s", n, result.welcomed, n,
                             result.connect_s, result.failed,
                             round->first_error().empty() ? "" : ": " + round->first_error()));

  if (result.connected_all) {
    MeasureSteadyState(flags, baseline_rss_kib, round.get(), agents, api, &result);
  }

  scheduler->Stop();
  for (auto& agent : agents) agent->Cancel();
  bool finished = round->AwaitFinished(absl::Seconds(30));
  if (!finished) result.note = "some streams did not finish within 30 s of cancel";
  absl::StatusOr<double> release = api->AwaitOnlineAtMost(0, absl::Seconds(30));
  if (release.ok()) {
    result.release_s = *release;
  } else if (result.note.empty()) {
    result.note = std::string(release.status().message());
  }

  if (!result.connected_all) {
    result.verdict = "connect-failed";
    if (result.note.empty()) {
      result.note =
          result.failed > 0
              ? absl::StrCat(result.failed,
                             " streams failed before Welcome; first: ", round->first_error())
              : absl::StrCat(result.welcomed, "/", n, " welcomed within --connect-timeout-s ",
                             flags.connect_timeout_s);
    }
  } else if (result.rtt_p99_ms > flags.rtt_limit_ms) {
    result.verdict = "p99>limit";
  } else if (!result.health_online || *result.health_online != n || !result.listed_online ||
             *result.listed_online != n) {
    result.verdict = "online-mismatch";
  } else if (result.load_short) {
    result.verdict = "bench-saturated";
  }
  if (result.load_short && result.note.empty()) {
    result.note = absl::StrFormat(
        "sent %d of %d heartbeats due: the load generator could not keep up, so the machine, "
        "not the host, limits this N",
        result.hb_sent, result.hb_expected);
  }
  if (!finished) {
    // A reactor, and what it reports into, must outlive its OnDone: leaking them beats a
    // use-after-free when the process is about to report and exit anyway.
    for (auto& agent : agents) (void)agent.release();
    (void)round.release();
    (void)scheduler.release();
  }
  return result;
}

// ---- output -----------------------------------------------------------------------------------

std::string Fixed(const std::optional<double>& value, int precision) {
  return value ? absl::StrFormat("%.*f", precision, *value) : "-";
}
std::string Count(const std::optional<int>& value) { return value ? absl::StrCat(*value) : "-"; }

void PrintTable(std::ostream& out, const std::vector<RoundResult>& results) {
  out << absl::StrFormat("%7s %5s %9s %8s %8s %9s %10s %8s %8s %13s %7s %7s %8s %8s %s\n", "agents",
                         "chans", "connect_s", "hello99", "host_cpu", "host_rss", "rss/agent",
                         "rtt_p50", "rtt_p99", "acked/sent", "online", "bench", "scrape", "scr_cpu",
                         "result");
  out << absl::StrFormat("%7s %5s %9s %8s %8s %9s %10s %8s %8s %13s %7s %7s %8s %8s\n", "", "", "s",
                         "ms", "%core", "MiB", "KiB", "ms", "ms", "", "host", "%core", "ms", "ms");
  for (const RoundResult& r : results) {
    bool measured = r.connected_all;
    out << absl::StrFormat(
        "%7d %5d %9.2f %8.1f %8s %9s %10s %8s %8s %13s %7s %7s %8s %8s %s%s\n", r.agents,
        r.channels, r.connect_s, r.hello_p99_ms, Fixed(r.host_cpu_pct, 1), Fixed(r.host_rss_mib, 1),
        Fixed(r.rss_per_agent_kib, 1), measured ? Fixed(r.rtt_p50_ms, 2) : "-",
        measured ? Fixed(r.rtt_p99_ms, 2) : "-",
        measured ? absl::StrCat(r.hb_acked, "/", r.hb_sent) : "-", Count(r.health_online),
        measured ? Fixed(r.bench_cpu_pct, 0) : "-", Fixed(r.scrape_p50_ms, 1),
        Fixed(r.scrape_cpu_ms, 1), r.verdict, r.note.empty() ? "" : " (" + r.note + ")");
  }
}

nlohmann::json ToJson(const Flags& flags, std::optional<uint64_t> baseline_rss_kib,
                      const std::vector<RoundResult>& results, const std::string& stopped) {
  auto opt = [](const auto& value) -> nlohmann::json {
    return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
  };
  // JSON has no infinity: an unacked p99 is reported as null with the verdict saying why.
  auto finite = [](double value) -> nlohmann::json {
    return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
  };
  nlohmann::json rounds = nlohmann::json::array();
  for (const RoundResult& r : results) {
    rounds.push_back({{"agents", r.agents},
                      {"channels", r.channels},
                      {"welcomed", r.welcomed},
                      {"failed", r.failed},
                      {"connect_s", r.connect_s},
                      {"hello_p50_ms", r.hello_p50_ms},
                      {"hello_p99_ms", r.hello_p99_ms},
                      {"host_cpu_pct", opt(r.host_cpu_pct)},
                      {"host_rss_mib", opt(r.host_rss_mib)},
                      {"rss_per_agent_kib", opt(r.rss_per_agent_kib)},
                      {"bench_cpu_pct", r.bench_cpu_pct},
                      {"heartbeats_expected", r.hb_expected},
                      {"heartbeats_sent", r.hb_sent},
                      {"heartbeats_acked", r.hb_acked},
                      {"heartbeats_unacked", r.hb_unacked},
                      {"rtt_p50_ms", finite(r.rtt_p50_ms)},
                      {"rtt_p99_ms", finite(r.rtt_p99_ms)},
                      {"rtt_max_ms", r.rtt_max_ms},
                      {"nodes_online_health", opt(r.health_online)},
                      {"nodes_online_listed", opt(r.listed_online)},
                      {"release_s", opt(r.release_s)},
                      {"scrape_p50_ms", opt(r.scrape_p50_ms)},
                      {"scrape_cpu_ms", opt(r.scrape_cpu_ms)},
                      {"scrape_kib", opt(r.scrape_kib)},
                      {"verdict", r.verdict},
                      {"note", r.note}});
  }
  return {{"target", flags.target},
          {"host_pid", flags.host_pid},
          {"interval_ms", flags.interval_ms},
          {"window_s", flags.window_s},
          {"settle_s", flags.settle_s},
          {"streams_per_channel", flags.streams_per_channel},
          {"rtt_limit_ms", flags.rtt_limit_ms},
          {"baseline_rss_kib", opt(baseline_rss_kib)},
          {"cpus", std::thread::hardware_concurrency()},
          {"rounds", rounds},
          {"stopped", stopped}};
}

// A mismatch in the host's node count is reported but does not stop the ramp: the link itself
// still carries the load, and the next N shows whether the count keeps up. A saturated generator
// does: a larger N would only measure the generator.
bool StopsRamp(const RoundResult& result) {
  return result.verdict == "connect-failed" || result.verdict == "p99>limit" || result.load_short;
}

absl::Status Run(const Flags& flags) {
  HostApi api(flags);
  absl::StatusOr<v1::HealthResponse> health = api.Health();
  if (absl::IsUnimplemented(health.status())) {
    // The link can still be measured; each round's verdict will say the count went unchecked.
    Log(flags, absl::StrCat("warning: cannot verify nodes_online: ", health.status().message()));
  } else if (!health.ok()) {
    return health.status();
  } else if (health->nodes_online() != 0) {
    // Rounds check nodes_online == N, which only holds on a host with no other agents.
    return absl::FailedPreconditionError(
        absl::StrCat("host at ", flags.target, " already has ", health->nodes_online(),
                     " nodes online; run agents_scale against a host of its own"));
  }
  std::optional<uint64_t> baseline_rss_kib;
  if (flags.host_pid > 0) {
    absl::StatusOr<uint64_t> rss = ReadRssKib(flags.host_pid);
    if (!rss.ok()) return rss.status();
    baseline_rss_kib = *rss;
    Log(flags,
        absl::StrFormat("host pid %d: baseline RSS %.1f MiB", flags.host_pid, *rss / 1024.0));
  }

  std::vector<RoundResult> results;
  std::string stopped;
  for (int n : flags.counts) {
    RoundResult result = RunRound(flags, n, baseline_rss_kib, &api);
    results.push_back(result);
    if (StopsRamp(result)) {
      stopped = absl::StrCat("stopped at N=", n, ": ", result.verdict,
                             result.note.empty() ? "" : " (" + result.note + ")");
      break;
    }
  }
  if (stopped.empty()) stopped = "all counts passed";

  std::ostream& table = flags.json ? std::cerr : std::cout;
  table << "\n";
  PrintTable(table, results);
  table << stopped << "\n";
  if (flags.json) std::cout << ToJson(flags, baseline_rss_kib, results, stopped).dump(2) << "\n";
  if (results.size() == 1 && StopsRamp(results[0])) {
    return absl::UnavailableError(absl::StrCat("nothing measured: ", stopped));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gswarm::bench

int main(int argc, char** argv) {
  gswarm::bench::Flags flags;
  CLI::App app{"agents_scale: N simulated agents against one GSwarm host (see bench/README.md)"};
  app.add_option("--target", flags.target, "host gRPC address host:port")->capture_default_str();
  app.add_option("--host-pid", flags.host_pid, "host process id, for CPU and RSS (0: skip)");
  app.add_option("--counts", flags.counts, "agent counts, ascending, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--interval-ms", flags.interval_ms, "heartbeat interval")->capture_default_str();
  app.add_option("--window-s", flags.window_s, "steady-state measurement window")
      ->capture_default_str();
  app.add_option("--settle-s", flags.settle_s, "wait after the last Welcome before the window")
      ->capture_default_str();
  app.add_option("--connect-timeout-s", flags.connect_timeout_s, "deadline for all N Welcomes")
      ->capture_default_str();
  app.add_option("--streams-per-channel", flags.streams_per_channel,
                 "agents per gRPC channel (TCP connection)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--rtt-limit-ms", flags.rtt_limit_ms, "stop the ramp when p99 exceeds this")
      ->capture_default_str();
  app.add_option("--token", flags.token, "cluster token, sent as authorization: Bearer");
  app.add_flag("--json", flags.json, "JSON on stdout; progress and the table go to stderr");
  app.add_option("--metrics-url", flags.metrics_url,
                 "the host's HTTP address (http://127.0.0.1:8100): measure GET /metrics after "
                 "each window");
  app.add_option("--scrapes", flags.scrapes, "GET /metrics per round")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  absl::Status status = gswarm::bench::Run(flags);
  if (!status.ok()) {
    std::cerr << "agents_scale: " << status << "\n";
    return 1;
  }
  return 0;
}
