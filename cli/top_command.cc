#include "cli/top_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cli/output.h"
#include "common/mutex.h"
#include "common/proto_json.h"
#include "common/status.h"
#include "common/units.h"
#include "nlohmann/json.hpp"

namespace gswarm::cli {
namespace {

std::atomic<bool> g_quit{false};

void OnSignal(int) { g_quit = true; }

// "███████░░░ 7.0/10.0 GiB": `width` cells filled in proportion.
std::string Bar(uint64_t used, uint64_t total, int width = 10) {
  if (total == 0) return "-";
  const double share = std::min(1.0, static_cast<double>(used) / static_cast<double>(total));
  const int filled = static_cast<int>(share * width + 0.5);
  std::string bar;
  for (int i = 0; i < width; ++i) bar += i < filled ? "\u2588" : "\u2591";
  return absl::StrCat(bar, " ", HumanBytes(used), "/", HumanBytes(total));
}

struct Snapshot {
  v1::ListNodesResponse nodes;
  v1::ListInstancesResponse instances;
  v1::ListJobsResponse jobs;
};

absl::Status Take(ApiClient& api, Snapshot* snapshot) {
  RETURN_IF_ERROR(api.Call(&v1::GSwarm::Stub::ListNodes, v1::ListNodesRequest(), &snapshot->nodes,
                           std::chrono::seconds(10)));
  RETURN_IF_ERROR(api.Call(&v1::GSwarm::Stub::ListInstances, v1::ListInstancesRequest(),
                           &snapshot->instances, std::chrono::seconds(10)));
  v1::ListJobsRequest jobs;
  jobs.set_limit(12);
  return api.Call(&v1::GSwarm::Stub::ListJobs, jobs, &snapshot->jobs, std::chrono::seconds(10));
}

std::string Render(const Snapshot& s, const std::string& status) {
  std::string out =
      absl::StrCat("gswarm top  ", absl::FormatTime("%H:%M:%S", absl::Now(), absl::LocalTimeZone()),
                   "  ", s.nodes.nodes_size(), " node(s), ", s.instances.instances_size(),
                   " instance(s)  ", status, "\n\n");
  Table nodes({"node", "state", "heartbeat", "dram", "dram tier", "disk", "gpus"});
  for (const v1::NodeInfo& node : s.nodes.nodes()) {
    const v1::MemoryUsage& m = node.memory();
    std::string gpus;
    for (const v1::GpuInfo& gpu : m.gpus()) {
      absl::StrAppend(&gpus, gpus.empty() ? "" : "  ", gpu.index(), ": ",
                      Bar(gpu.memory_used_bytes(), gpu.memory_budget_bytes(), 6));
    }
    nodes.AddRow(
        {node.node_id(), node.state(), Ago(node.last_heartbeat_at()),
         Bar(m.dram_total_bytes() - std::min(m.dram_total_bytes(), m.dram_available_bytes()),
             m.dram_total_bytes()),
         Bar(m.dram_tier_used_bytes(), m.dram_tier_budget_bytes()),
         Bar(m.disk_total_bytes() - std::min(m.disk_total_bytes(), m.disk_free_bytes()),
             m.disk_total_bytes()),
         gpus.empty() ? "-" : gpus});
  }
  out += nodes.Render();
  out += "\n";
  Table instances(
      {"instance", "model", "node", "gpu", "state", "in flight", "unloads", "endpoint"});
  for (const v1::Instance& i : s.instances.instances()) {
    instances.AddRow({i.id(), i.model_name(), i.node_id(), i.gpu_device(), i.state(),
                      absl::StrCat(i.requests_in_flight()),
                      i.has_unload_at() ? FromNow(i.unload_at()) : "-", i.endpoint()});
  }
  out += s.instances.instances_size() == 0 ? "No instances.\n" : instances.Render();
  out += "\n";
  Table jobs({"job", "kind", "model", "node", "state", "progress"});
  for (const v1::Job& job : s.jobs.jobs()) {
    std::string progress = "-";
    if (job.bytes_total() > 0) {
      progress = Bar(job.bytes_done(), job.bytes_total());
      if (job.state() == "running" && job.rate_bytes_per_s() > 0) {
        absl::StrAppend(&progress, " ", HumanBytes(static_cast<uint64_t>(job.rate_bytes_per_s())),
                        "/s");
      }
    }
    jobs.AddRow({job.id(), job.kind(), job.model_name(), job.node_id(), job.state(), progress});
  }
  out += s.jobs.jobs_size() == 0 ? "No jobs.\n" : jobs.Render();
  return out;
}

// Follows the host's events in the background: each one marks the view stale. Reconnects
// (every second) while the host is away, saying so.
class EventWatch {
 public:
  explicit EventWatch(ApiClient& api) : api_(api) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~EventWatch() {
    {
      gswarm::MutexLock lock(&mu_);
      stop_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    thread_.join();
  }

  // Waits until an event arrives or `timeout` passes; true when something changed.
  bool Wait(absl::Duration timeout) {
    gswarm::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&changed_), timeout);
    return std::exchange(changed_, false);
  }
  std::string status() {
    gswarm::MutexLock lock(&mu_);
    return status_;
  }

 private:
  void Loop() {
    while (true) {
      grpc::ClientContext context;
      {
        gswarm::MutexLock lock(&mu_);
        if (stop_) return;
        context_ = &context;
      }
      api_.Prepare(&context, std::chrono::seconds(0));
      v1::WatchEventsRequest request;  // from now on, followed
      auto reader = api_.stub().WatchEvents(&context, request);
      for (v1::Event event; reader->Read(&event);) {
        gswarm::MutexLock lock(&mu_);
        changed_ = true;
        status_.clear();
      }
      const absl::Status end = api_.Explain(reader->Finish());
      gswarm::MutexLock lock(&mu_);
      context_ = nullptr;
      if (stop_) return;
      status_ = absl::StrCat("(host unreachable, retrying: ", end.message(), ")");
      changed_ = true;
      mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Seconds(1));
    }
  }

  ApiClient& api_;
  gswarm::Mutex mu_;
  bool changed_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::string status_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
};

}  // namespace

TopCommand::TopCommand(CLI::App& app) {
  top_ = app.add_subcommand(
      "top", "A live view of the cluster: nodes and their tiers, instances, jobs (q: Ctrl-C)");
  top_->add_flag("--once", once_, "Print one view and exit (with --json: the data as JSON)");
  top_->add_option("--refresh", refresh_s_,
                   "Redraw at least this often, seconds (memory changes without events)")
      ->capture_default_str()
      ->check(CLI::Range(0.2, 3600.0));
  top_->footer(
      "The view is redrawn as soon as an event says something changed.\n"
      "Examples:\n"
      "  gswarm top                 live, until Ctrl-C\n"
      "  gswarm top --once --json   nodes, instances and jobs as one JSON object");
}

bool TopCommand::Parsed() const { return top_->parsed(); }

int TopCommand::Run(ApiClient& api, bool json) {
  if (once_ || json) {
    Snapshot snapshot;
    if (absl::Status s = Take(api, &snapshot); !s.ok()) return PrintError(s.message());
    if (!json) {
      std::cout << Render(snapshot, "") << std::flush;
      return 0;
    }
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, message] :
         {std::pair<const char*, const google::protobuf::Message*>{"nodes", &snapshot.nodes},
          {"instances", &snapshot.instances},
          {"jobs", &snapshot.jobs}}) {
      absl::StatusOr<std::string> text = common::ToJson(*message);
      out[key] = text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  if (tty) std::cout << "\x1b[?1049h\x1b[?25l";  // the alternate screen, no cursor
  EventWatch events(api);
  while (!g_quit) {
    Snapshot snapshot;
    const absl::Status taken = Take(api, &snapshot);
    const std::string frame = taken.ok()
                                  ? Render(snapshot, events.status())
                                  : absl::StrCat("gswarm top  ", taken.message(), "\n(retrying)\n");
    std::cout << (tty ? "\x1b[H\x1b[2J" : "\n") << frame << std::flush;
    // Redraw on a change (at most 4 times a second), else every --refresh seconds.
    const absl::Time next = absl::Now() + absl::Seconds(refresh_s_);
    while (!g_quit && absl::Now() < next) {
      if (events.Wait(absl::Milliseconds(250))) break;
    }
  }
  if (tty) std::cout << "\x1b[?25h\x1b[?1049l" << std::flush;
  return 0;
}

}  // namespace gswarm::cli
