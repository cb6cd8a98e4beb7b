#include "cli/tier_commands.h"

#include <iostream>

#include "cli/job_follow.h"

namespace gswarm::cli {

TierCommands::TierCommands(CLI::App& app) {
  copy_ = app.add_subcommand(
      "copy",
      "Copy a model between tiers (disk, dram) or nodes, staged and verified.\n"
      "  gswarm copy llama --from disk --to dram --pin      # stage in RAM for fast starts\n"
      "  gswarm copy llama --from dram --to disk --move     # save back, free the RAM\n"
      "  gswarm copy llama --from-node gpu-1 --to-node gpu-2  # over the nodes' data ports");
  copy_->add_option("name", name_, "Model name")->required();
  copy_->add_option("--from", from_, "Source tier: disk or dram (default disk)");
  copy_->add_option("--to", to_, "Target tier: disk or dram (default dram)");
  copy_->add_option("--node", node_, "The node (same-node copies; default: one holding it)");
  copy_->add_option("--from-node", from_node_, "Source node of a cross-node copy");
  copy_->add_option("--to-node", to_node_, "Target node of a cross-node copy");
  copy_->add_flag("--move", move_, "Remove the source copy once the target is whole");
  copy_->add_flag("--evict", evict_lru_,
                  "Make DRAM room by evicting least-recently-used unpinned models");
  copy_->add_flag("--pin", pin_, "Never evict the new DRAM copy");
  copy_->add_flag("--detach", detach_, "Return once the job started");

  evict_ = app.add_subcommand("evict", "Remove a model from DRAM (its disk copy stays)");
  evict_->add_option("name", name_, "Model name")->required();
  evict_->add_option("--node", node_, "Only this node's DRAM");
  evict_->add_flag("--force", force_, "Even while an instance serves from it");
}

bool TierCommands::Parsed() const { return copy_->parsed() || evict_->parsed(); }

int TierCommands::Run(ApiClient& api, bool json) {
  return copy_->parsed() ? Copy(api, json) : Evict(api, json);
}

int TierCommands::Copy(ApiClient& api, bool json) {
  v1::CopyRequest request;
  request.set_model_name(name_);
  request.set_source_device(from_);
  request.set_target_device(to_);
  request.set_node(node_);
  request.set_source_node(from_node_);
  request.set_target_node(to_node_);
  request.set_keep_source(!move_);
  request.set_evict(evict_lru_);
  request.set_pin(pin_);
  v1::JobResponse started;
  if (absl::Status s = api.Call(&v1::GSwarm::Stub::Copy, request, &started); !s.ok()) {
    return PrintError(s.message());
  }
  if (detach_) return ReportStarted(started.job(), json);
  v1::Job job;
  if (int code = FollowJob(api, started.job(), name_, json, &job); code != 0) return code;
  if (!json) {
    std::cout << name_ << ": " << (move_ ? "moved" : "copied") << " to " << job.node_id() << "/"
              << job.replica().tier() << " at " << job.replica().path() << " ("
              << HumanBytes(job.replica().size_bytes())
              << (job.replica().pinned() ? ", pinned" : "") << ")\n";
    if (!job.message().empty()) std::cout << job.message() << "\n";
  }
  return 0;
}

int TierCommands::Evict(ApiClient& api, bool json) {
  v1::EvictDramRequest request;
  request.set_model_name(name_);
  request.set_node(node_);
  request.set_force(force_);
  int exit_code = 0;
  std::optional<v1::EvictDramResponse> evicted =
      Fetch<v1::EvictDramResponse>(api, &v1::GSwarm::Stub::EvictDram, request, json, &exit_code);
  if (!evicted.has_value()) return exit_code;
  for (const v1::Replica& r : evicted->evicted()) {
    std::cout << "evicted " << name_ << " from " << r.node_id() << " DRAM ("
              << HumanBytes(r.size_bytes()) << " freed)\n";
  }
  return 0;
}

}  // namespace gswarm::cli
