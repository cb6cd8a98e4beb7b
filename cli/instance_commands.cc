#include "cli/instance_commands.h"

#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/job_follow.h"

namespace gswarm::cli {
namespace {

// When the router unloads the instance: "in 4m 10s" unless used again, "never" (kept), or
// "manual" for one started with `gswarm serve` (stopped only with `gswarm stop`).
std::string Unloads(const v1::Instance& instance) {
  if (instance.state() != "ready") return "-";
  if (instance.managed_by().empty()) return "manual";
  if (instance.managed_by() == "preload") return "never (preload)";
  return FromNow(instance.unload_at());
}

}  // namespace

InstanceCommands::InstanceCommands(CLI::App& app) {
  serve_ = app.add_subcommand(
      "serve",
      "Start an inference engine for a model and wait until it answers.\n"
      "  gswarm serve llama                         # best node and GPU, fastest tier, any port\n"
      "  gswarm serve llama --gpu 1 --port 8080 --from dram --engine vllm\n"
      "  gswarm serve tiny --gpu cpu -- --ctx-size 4096   # extra engine arguments after --");
  serve_->add_option("name", name_, "Model name")->required();
  serve_->add_option("--gpu", gpu_, "GPU index (0, 1, ...), gpuN, or cpu (default: most room)");
  serve_->add_option("--port", port_, "Port for the engine (default: a free one)");
  serve_->add_option("--from", from_, "Tier to load from: dram or disk (default: fastest)");
  serve_->add_option("--engine", engine_,
                     "vllm, llama-server, sglang, nim, compose or one from config");
  serve_->add_option("--node", node_, "Node to run on (default: one holding the model)");
  serve_->add_option("--id", id_, "Instance id (default: generated)");
  serve_->add_option("extra", extra_args_, "Extra engine arguments, after --");
  serve_->add_flag("--detach", detach_, "Return once the start was requested");

  ps_ = app.add_subcommand("ps", "List inference instances");
  ps_->footer(
      "REQS: requests in flight through the host's router. UNLOADS: when the router stops the\n"
      "instance if no request uses it before then (host.keep_alive_s, or a request's own\n"
      "\"keep_alive\"); \"never\" for one it keeps, \"manual\" for one started with gswarm serve.");
  ps_->add_option("--node", node_, "Only this node");
  ps_->add_flag("-a,--all", all_, "Include stopped and failed instances");

  stop_ = app.add_subcommand("stop", "Stop an instance (by id) or every instance of a model");
  stop_->add_option("target", name_, "Instance id or model name")->required();
  stop_->add_option("--node", node_, "With a model name: only this node's instances");
  stop_->add_flag("--force", force_, "SIGKILL at once instead of SIGTERM and a grace period");

  sleep_ = app.add_subcommand(
      "sleep",
      "Put an instance's engine to sleep: it frees its GPU memory and keeps running, and wakes in\n"
      "a fraction of a cold start (vllm and sglang; the router wakes it on its model's next "
      "request).\n"
      "  gswarm sleep inst-1a2b3c            # level 1: weights kept in CPU RAM\n"
      "  gswarm sleep inst-1a2b3c --level 2  # weights dropped, read again from the files on wake");
  sleep_->add_option("id", id_, "Instance id, as `gswarm ps` shows it")->required();
  sleep_->add_option("--level", level_, "1 (weights kept in CPU RAM) or 2 (dropped)")
      ->check(CLI::Range(1, 2));
  wake_ = app.add_subcommand("wake", "Wake a sleeping instance and wait until it answers again");
  wake_->add_option("id", id_, "Instance id, as `gswarm ps` shows it")->required();

  logs_ = app.add_subcommand("logs", "Print an instance's engine log (from its node)");
  logs_->add_option("id", id_, "Instance id, as `gswarm ps -a` shows it")->required();
  logs_->add_flag("-f,--follow", follow_, "Keep printing as the engine writes (Ctrl-C to stop)");
  logs_->add_option("--tail", tail_, "Lines to show first (default 100)");

  switch_ = app.add_subcommand(
      "switch", "Point the router's active model (\"default\", or requests naming none) at NAME");
  switch_->add_option("name", name_, "Model name")->required();

  plan_ = app.add_subcommand(
      "plan",
      "How many instances of a model fit on each node's GPUs and CPU RAM budget: now, on an\n"
      "empty device, and which idle instances the router would evict for one more (the same\n"
      "accounting `serve` and the router use).\n"
      "  gswarm plan qwen-0.5b                # every online node\n"
      "  gswarm plan qwen-0.5b --node jetson  # one node");
  plan_->add_option("name", name_, "Model name")->required();
  plan_->add_option("--node", node_, "Only this node");
  plan_->add_option("--engine", engine_, "The engine instances would run (default: the node's)");
  plan_->footer(
      "NEEDS: what one instance reserves (the model's size on a GPU; on the CPU, or a unified-\n"
      "memory node, that times the engine's memory_factor). FREE: the budget (GPU: total x\n"
      "client.gpu_memory_fraction; CPU: client.cpu_memory_budget) less what is held. EMPTY: how\n"
      "many fit with none of GSwarm's instances there. TO EVICT: when none fits now.");
}

bool InstanceCommands::Parsed() const {
  return serve_->parsed() || ps_->parsed() || stop_->parsed() || sleep_->parsed() ||
         wake_->parsed() || logs_->parsed() || switch_->parsed() || plan_->parsed();
}

int InstanceCommands::Run(ApiClient& api, bool json) {
  if (serve_->parsed()) return Serve(api, json);
  if (ps_->parsed()) return Ps(api, json);
  if (logs_->parsed()) return Logs(api);
  if (switch_->parsed()) return Switch(api, json);
  if (plan_->parsed()) return Plan(api, json);
  if (sleep_->parsed() || wake_->parsed()) return SleepOrWake(api, json);
  return Stop(api, json);
}

int InstanceCommands::Serve(ApiClient& api, bool json) {
  v1::ServeRequest request;
  request.set_model_name(name_);
  std::string gpu = gpu_;
  if (!gpu.empty() && gpu != "cpu" && !absl::StartsWith(gpu, "gpu")) gpu = "gpu" + gpu;
  request.set_gpu_device(gpu);
  if (port_ < 0 || port_ > 65535) return PrintError("--port must be 1-65535");
  request.set_port(static_cast<uint32_t>(port_));
  request.set_source_device(from_);
  request.set_engine(engine_);
  request.set_node(node_);
  request.set_instance_id(id_);
  for (const std::string& arg : extra_args_) request.add_extra_args(arg);
  v1::JobResponse started;
  if (absl::Status s = api.Call(&v1::GSwarm::Stub::Serve, request, &started); !s.ok()) {
    return PrintError(s.message());
  }
  if (detach_) {
    if (json) {
      PrintJson(started.job());
    } else {
      std::cout << "starting " << name_ << " on node " << started.job().node_id()
                << "; see `gswarm ps`\n";
    }
    return 0;
  }
  v1::Job job;
  if (int code = FollowJob(api, started.job(), name_, json, &job); code != 0) return code;
  if (!json) {
    const v1::Instance& instance = job.instance();
    std::cout << name_ << " ready at " << instance.endpoint() << " (instance " << instance.id()
              << ", node " << instance.node_id() << ", " << instance.gpu_device() << ", "
              << instance.engine() << ", loaded in "
              << HumanDuration(instance.load_time_ms() / 1000.0) << ")\n";
  }
  return 0;
}

int InstanceCommands::Ps(ApiClient& api, bool json) {
  v1::ListInstancesRequest request;
  request.set_node(node_);
  int exit_code = 0;
  std::optional<v1::ListInstancesResponse> list = Fetch<v1::ListInstancesResponse>(
      api, &v1::GSwarm::Stub::ListInstances, request, json, &exit_code);
  if (!list.has_value()) return exit_code;
  Table table({"ID", "MODEL", "NODE", "ENGINE", "GPU", "STATE", "ENDPOINT", "PID", "UP", "RESTARTS",
               "REQS", "UNLOADS", "REASON"});
  int shown = 0;
  for (const v1::Instance& i : list->instances()) {
    const bool active = i.state() == "starting" || i.state() == "ready" ||
                        i.state() == "sleeping" || i.state() == "stopping";
    if (!all_ && !active) continue;
    ++shown;
    const std::string state =
        i.sleep_level() > 0 ? absl::StrCat(i.state(), " (", i.sleep_level(), ")") : i.state();
    table.AddRow({i.id(), i.model_name(), i.node_id(), i.engine(), i.gpu_device(), state,
                  i.endpoint(), std::to_string(i.pid()), Ago(i.started_at()),
                  std::to_string(i.restarts()), std::to_string(i.requests_in_flight()), Unloads(i),
                  i.state() == "ready" ? "" : i.state_reason().substr(0, 60)});
  }
  if (shown == 0) {
    std::cout << "No instances running. Start one with `gswarm serve MODEL`"
              << (all_ ? "" : " (`gswarm ps -a` shows stopped ones)") << ".\n";
    return 0;
  }
  std::cout << table.Render();
  return 0;
}

int InstanceCommands::Stop(ApiClient& api, bool json) {
  v1::StopInstanceRequest request;
  // Instance ids are generated as inst-...; anything else names a model.
  if (absl::StartsWith(name_, "inst-")) {
    request.set_instance_id(name_);
  } else {
    request.set_model_name(name_);
    request.set_node(node_);
  }
  request.set_force(force_);
  int exit_code = 0;
  // The host answers once each engine has exited, which can take minutes.
  std::optional<v1::StopInstanceResponse> stopped = Fetch<v1::StopInstanceResponse>(
      api, &v1::GSwarm::Stub::StopInstance, request, json, &exit_code, std::chrono::seconds(180));
  if (!stopped.has_value()) return exit_code;
  for (const v1::Instance& i : stopped->stopped()) {
    std::cout << "stopped " << i.id() << " (" << i.model_name() << " on " << i.node_id() << ")\n";
  }
  return 0;
}

int InstanceCommands::SleepOrWake(ApiClient& api, bool json) {
  int exit_code = 0;
  std::optional<v1::Instance> instance;
  // A level-2 wake reads the weights again: minutes for a large model.
  if (sleep_->parsed()) {
    v1::SleepInstanceRequest request;
    request.set_instance_id(id_);
    request.set_level(static_cast<uint32_t>(level_));
    instance = Fetch<v1::Instance>(api, &v1::GSwarm::Stub::SleepInstance, request, json, &exit_code,
                                   std::chrono::seconds(400));
  } else {
    v1::WakeInstanceRequest request;
    request.set_instance_id(id_);
    instance = Fetch<v1::Instance>(api, &v1::GSwarm::Stub::WakeInstance, request, json, &exit_code,
                                   std::chrono::seconds(960));
  }
  if (!instance.has_value()) return exit_code;
  std::cout << instance->id() << " (" << instance->model_name() << " on " << instance->node_id()
            << ") is " << instance->state()
            << (instance->state_reason().empty() ? "" : " (" + instance->state_reason() + ")")
            << "\n";
  return 0;
}

int InstanceCommands::Logs(ApiClient& api) {
  if (tail_ < 0) return PrintError("--tail must not be negative");
  v1::GetInstanceLogsRequest request;
  request.set_instance_id(id_);
  request.set_follow(follow_);
  request.set_tail_lines(static_cast<uint32_t>(tail_));
  grpc::ClientContext context;
  api.Prepare(&context, follow_ ? std::chrono::seconds(0) : std::chrono::seconds(60));
  auto reader = api.stub().GetInstanceLogs(&context, request);
  for (v1::LogChunk chunk; reader->Read(&chunk);) std::cout << chunk.data() << std::flush;
  if (absl::Status s = api.Explain(reader->Finish()); !s.ok()) return PrintError(s.message());
  return 0;
}

int InstanceCommands::Switch(ApiClient& api, bool json) {
  v1::SwitchModelRequest request;
  request.set_model(name_);
  int exit_code = 0;
  std::optional<v1::SwitchModelResponse> switched = Fetch<v1::SwitchModelResponse>(
      api, &v1::GSwarm::Stub::SwitchModel, request, json, &exit_code);
  if (!switched.has_value()) return exit_code;
  std::cout << "active model: " << switched->active_model()
            << (switched->previous_model().empty() ? ""
                                                   : " (was " + switched->previous_model() + ")")
            << ", switched in " << switched->switch_time_us() << " us\n";
  return 0;
}

int InstanceCommands::Plan(ApiClient& api, bool json) {
  v1::GetCapacityRequest request;
  request.set_model(name_);
  request.set_node(node_);
  request.set_engine(engine_);
  int exit_code = 0;
  std::optional<v1::GetCapacityResponse> capacity = Fetch<v1::GetCapacityResponse>(
      api, &v1::GSwarm::Stub::GetCapacity, request, json, &exit_code);
  if (!capacity.has_value()) return exit_code;
  if (capacity->devices().empty()) {
    std::cout << "No online node has a GPU or a RAM budget for engines"
              << (node_.empty() ? "" : " (node " + node_ + ")") << ".\n";
    return 0;
  }
  std::cout << capacity->model_name() << ": " << HumanBytes(capacity->model_bytes())
            << " of weights";
  if (capacity->max_loaded_models() > 0) {
    std::cout << "; the router holds " << capacity->loaded_models() << " of at most "
              << capacity->max_loaded_models() << " models (host.max_loaded_models)";
  }
  std::cout << "\n";
  Table table(
      {"NODE", "DEVICE", "HAS MODEL", "NEEDS", "FREE / BUDGET", "FIT NOW", "EMPTY", "TO EVICT"});
  for (const v1::DeviceCapacity& d : capacity->devices()) {
    std::string evict = "-";
    if (d.fits_now() == 0) {
      evict = d.evict().empty() ? "" : absl::StrJoin(d.evict(), ", ");
      if (!d.evict_enough()) {
        evict = absl::StrCat(evict, evict.empty() ? "" : " ",
                             "(not enough: the rest are busy, kept or the operator's)");
      }
    }
    table.AddRow({d.node_id(), d.device(), d.holds_model() ? "yes" : "no (download first)",
                  HumanBytes(d.needed_bytes()), UsedOf(d.free_bytes(), d.budget_bytes()),
                  std::to_string(d.fits_now()), std::to_string(d.fits_empty()), evict});
  }
  std::cout << table.Render();
  return 0;
}

}  // namespace gswarm::cli
