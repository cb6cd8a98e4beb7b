#include "cli/model_commands.h"

#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "cli/job_follow.h"

namespace gswarm::cli {
namespace {

std::string Short(absl::string_view commit) { return std::string(commit.substr(0, 10)); }

std::string Params(uint64_t count) {
  if (count == 0) return "-";
  if (count >= 1'000'000'000) return absl::StrFormat("%.1fB", count / 1e9);
  if (count >= 1'000'000) return absl::StrFormat("%.1fM", count / 1e6);
  return absl::StrFormat("%.1fK", count / 1e3);
}

std::string Where(const v1::Model& model) {
  std::string where;
  for (const v1::Replica& replica : model.replicas()) {
    // A disk copy outside the primary location says which one holds it: node-a/disk:secondary.
    const bool elsewhere = !replica.location().empty() && replica.location() != "primary";
    absl::StrAppend(&where, where.empty() ? "" : ", ", replica.node_id(), "/", replica.tier(),
                    elsewhere ? absl::StrCat(":", replica.location()) : "",
                    replica.in_place() ? " (in place)" : "");
  }
  return where.empty() ? "-" : where;
}

}  // namespace

std::string NameFromSource(absl::string_view source) {
  absl::string_view rest = source;
  if (absl::ConsumePrefix(&rest, "hf://")) {
    rest = rest.substr(0, rest.find('@'));
  } else if (!absl::ConsumePrefix(&rest, "file://") && !absl::ConsumePrefix(&rest, "https://") &&
             !absl::ConsumePrefix(&rest, "http://")) {
    return "";
  }
  rest = rest.substr(0, rest.find_first_of("?#"));
  while (absl::ConsumeSuffix(&rest, "/")) {
  }
  absl::string_view last = rest.substr(rest.rfind('/') + 1);
  for (absl::string_view suffix : {".gguf", ".safetensors", ".bin"}) {
    if (absl::ConsumeSuffix(&last, suffix)) break;
  }
  return std::string(last);
}

ModelCommands::ModelCommands(CLI::App& app) {
  download_ =
      app.add_subcommand("download",
                         "Download a model onto a node's disk and wait until it is verified.\n"
                         "  gswarm download hf://Qwen/Qwen2.5-0.5B-Instruct\n"
                         "  gswarm download hf://org/repo@v1.0 --name repo-v1 --node gpu-3\n"
                         "  gswarm download https://host/path/model.gguf\n"
                         "  gswarm download file:///data/models/llama --name llama");
  download_->add_option("source", source_, "hf://org/repo[@revision], https://... or file:///dir")
      ->required();
  download_->add_option("--name", name_, "Model name (default: from the source)");
  download_->add_option("--node", node_, "Node to download on (default: most free disk)");
  download_->add_option("--revision", revision_, "Branch, tag or commit (overrides @rev)");
  download_->add_option("--type", type_, "llm, diffusion, vision, audio or multimodal");
  download_->add_flag("--detach", detach_, "Return once the job started; follow it with jobs");

  ls_ = app.add_subcommand("ls", "List registered models, where they are and their state");
  ls_->add_option("--node", node_, "Only models with a copy on this node");
  ls_->add_option("--state", state_, "available, loaded or offline");
  show_ = app.add_subcommand("show", "Everything about one model: metadata, copies, files");
  show_->add_option("name", name_, "Model name")->required();
  rm_ = app.add_subcommand("rm", "Remove a model from every node (or --node) and the catalog");
  rm_->add_option("name", name_, "Model name")->required();
  rm_->add_option("--node", node_, "Only this node's copy");
  rm_->add_flag("--force", force_, "Also forget copies on offline nodes");
  discover_ = app.add_subcommand(
      "discover", "Register models already on the nodes' disks and in the Hugging Face cache");
  discover_->add_option("--node", node_, "Only this node");
  validate_ = app.add_subcommand(
      "validate",
      "Re-check a model's files in place: sizes and the XXH3-128 recorded at download (memory "
      "speed), or with --full the Hub's SHA-256");
  validate_->add_option("name", name_, "Model name")->required();
  validate_->add_option("--node", node_, "Only this node's copy");
  validate_->add_flag("--full", full_,
                      "Re-compute SHA-256 of every file, as the Hub listed it (one core's hash "
                      "speed: minutes for a large model)");
  jobs_ = app.add_subcommand("jobs", "List recent jobs (downloads, deletes, ...)");
  jobs_->add_option("--state", state_, "pending, running, succeeded, failed or cancelled");
  cancel_ = app.add_subcommand("cancel", "Cancel a running job (partial downloads are kept)");
  cancel_->add_option("job", job_id_, "Job id, as `gswarm jobs` shows it")->required();
}

bool ModelCommands::Parsed() const {
  for (const CLI::App* cmd : {download_, ls_, show_, rm_, discover_, validate_, jobs_, cancel_}) {
    if (cmd->parsed()) return true;
  }
  return false;
}

int ModelCommands::Run(ApiClient& api, bool json) {
  if (download_->parsed()) return Download(api, json);
  if (ls_->parsed()) return List(api, json);
  if (show_->parsed()) return Show(api, json);
  if (rm_->parsed()) return Remove(api, json);
  if (discover_->parsed()) return Discover(api, json);
  if (validate_->parsed()) return Validate(api, json);
  if (jobs_->parsed()) return Jobs(api, json);
  return Cancel(api, json);
}

int ModelCommands::Download(ApiClient& api, bool json) {
  v1::DownloadRequest request;
  request.set_model_name(name_.empty() ? NameFromSource(source_) : name_);
  if (request.model_name().empty()) {
    return PrintError(
        absl::StrCat("cannot tell a model name from \"", source_, "\": pass --name NAME"));
  }
  request.set_source_url(source_);
  request.set_node(node_);
  request.set_revision(revision_);
  request.set_type(type_);
  request.set_target_device("disk");
  v1::JobResponse started;
  if (absl::Status s = api.Call(&v1::GSwarm::Stub::Download, request, &started); !s.ok()) {
    return PrintError(s.message());
  }
  if (detach_) return ReportStarted(started.job(), json);

  v1::Job job;
  if (int code = FollowJob(api, started.job(), request.model_name(), json, &job); code != 0) {
    return code;
  }
  if (!json) {
    std::cout << absl::StrFormat(
        "%s: %d files, %s on node %s at %s%s\n", request.model_name(), job.files_total(),
        HumanBytes(job.bytes_total()), job.node_id(), job.replica().path(),
        job.replica().commit().empty() ? "" : " (commit " + Short(job.replica().commit()) + ")");
  }
  return 0;
}

int ModelCommands::List(ApiClient& api, bool json) {
  v1::ListModelsRequest request;
  request.set_node(node_);
  request.set_state(state_);
  int exit_code = 0;
  std::optional<v1::ListModelsResponse> models =
      Fetch<v1::ListModelsResponse>(api, &v1::GSwarm::Stub::ListModels, request, json, &exit_code);
  if (!models.has_value()) return exit_code;
  if (models->models().empty()) {
    std::cout << "No models yet. Download one with `gswarm download hf://org/repo`, or find the "
                 "ones already on disk with `gswarm discover`.\n";
    return 0;
  }
  Table table({"NAME", "STATE", "TYPE", "SIZE", "FORMAT", "PARAMS", "WHERE", "SOURCE"});
  for (const v1::Model& model : models->models()) {
    table.AddRow({model.name(), model.state(), model.type(), HumanBytes(model.size_bytes()),
                  model.metadata().format().empty() ? "-" : model.metadata().format(),
                  Params(model.metadata().parameter_count()), Where(model),
                  model.source_url().empty() ? "-" : model.source_url()});
  }
  std::cout << table.Render();
  return 0;
}

int ModelCommands::Show(ApiClient& api, bool json) {
  v1::GetModelRequest request;
  request.set_model_name(name_);
  int exit_code = 0;
  std::optional<v1::Model> model =
      Fetch<v1::Model>(api, &v1::GSwarm::Stub::GetModel, request, json, &exit_code);
  if (!model.has_value()) return exit_code;
  const v1::ModelMetadata& m = model->metadata();
  Table facts({"NAME", model->name()});
  facts.AddRow({"state", model->state()});
  facts.AddRow({"type", model->type()});
  facts.AddRow({"source", model->source_url().empty() ? "-" : model->source_url()});
  facts.AddRow({"commit", model->commit().empty() ? "-" : model->commit()});
  facts.AddRow({"size", HumanBytes(model->size_bytes())});
  facts.AddRow({"format", m.format().empty() ? "-" : m.format()});
  facts.AddRow({"architecture", m.architecture().empty() ? "-" : m.architecture()});
  facts.AddRow({"parameters", Params(m.parameter_count())});
  facts.AddRow({"dtype", m.dtype().empty() ? "-" : m.dtype()});
  facts.AddRow({"context length", m.context_length() ? std::to_string(m.context_length()) : "-"});
  facts.AddRow({"layers", m.num_layers() ? std::to_string(m.num_layers()) : "-"});
  facts.AddRow({"hidden size", m.hidden_size() ? std::to_string(m.hidden_size()) : "-"});
  facts.AddRow({"vocab size", m.vocab_size() ? std::to_string(m.vocab_size()) : "-"});
  std::cout << facts.Render() << "\n";
  if (!model->replicas().empty()) {
    Table copies({"NODE", "TIER", "LOCATION", "STATE", "SIZE", "PATH"});
    for (const v1::Replica& r : model->replicas()) {
      copies.AddRow({r.node_id(), r.tier() + (r.in_place() ? " (in place)" : ""),
                     r.location().empty() ? "-" : r.location(), r.state(),
                     HumanBytes(r.size_bytes()), r.path()});
    }
    std::cout << copies.Render() << "\n";
  }
  if (!model->files().empty()) {
    Table files({"FILE", "SIZE", "SHA256"});
    for (const v1::ModelFile& f : model->files()) {
      files.AddRow({f.path(), HumanBytes(f.size_bytes()), f.sha256().empty() ? "-" : f.sha256()});
    }
    std::cout << files.Render();
  }
  return 0;
}

int ModelCommands::Remove(ApiClient& api, bool json) {
  v1::DeleteModelRequest request;
  request.set_model_name(name_);
  request.set_node(node_);
  request.set_force(force_);
  int exit_code = 0;
  std::optional<v1::DeleteModelResponse> removed = Fetch<v1::DeleteModelResponse>(
      api, &v1::GSwarm::Stub::DeleteModel, request, json, &exit_code);
  if (!removed.has_value()) return exit_code;
  for (const v1::Replica& r : removed->removed()) {
    std::cout << "removed " << name_ << " from " << r.node_id() << "/" << r.tier()
              << (r.in_place() ? " (forgotten; the Hugging Face cache is left as it is)" : "")
              << "\n";
  }
  if (removed->removed().empty()) std::cout << "removed " << name_ << " from the catalog\n";
  return 0;
}

int ModelCommands::Discover(ApiClient& api, bool json) {
  v1::DiscoverRequest request;
  request.set_node(node_);
  int exit_code = 0;
  std::optional<v1::DiscoverResponse> found =
      Fetch<v1::DiscoverResponse>(api, &v1::GSwarm::Stub::Discover, request, json, &exit_code);
  if (!found.has_value()) return exit_code;
  for (const std::string& name : found->added()) std::cout << "added   " << name << "\n";
  for (const std::string& name : found->removed()) std::cout << "removed " << name << "\n";
  std::cout << found->models_size() << " models registered (" << found->added_size() << " new, "
            << found->removed_size() << " gone)\n";
  return 0;
}

int ModelCommands::Validate(ApiClient& api, bool json) {
  v1::ValidateModelRequest request;
  request.set_model_name(name_);
  request.set_node(node_);
  request.set_full(full_);
  v1::ValidateModelResponse result;
  if (absl::Status s =
          api.Call(&v1::GSwarm::Stub::ValidateModel, request, &result, std::chrono::seconds(3600));
      !s.ok()) {
    return PrintError(s.message());
  }
  if (json) {
    PrintJson(result);
  } else if (result.valid()) {
    std::cout << name_ << ": " << result.files_checked() << " files intact ("
              << (full_ ? "SHA-256" : "sizes and XXH3-128") << ")\n";
  } else {
    for (const v1::FileProblem& p : result.problems()) {
      std::cout << p.node_id() << ": " << (p.path().empty() ? "" : p.path() + ": ") << p.problem()
                << "\n";
    }
  }
  return result.valid() ? 0 : 1;
}

int ModelCommands::Jobs(ApiClient& api, bool json) {
  v1::ListJobsRequest request;
  request.set_state(state_);
  int exit_code = 0;
  std::optional<v1::ListJobsResponse> jobs =
      Fetch<v1::ListJobsResponse>(api, &v1::GSwarm::Stub::ListJobs, request, json, &exit_code);
  if (!jobs.has_value()) return exit_code;
  if (jobs->jobs().empty()) {
    std::cout << "No jobs yet.\n";
    return 0;
  }
  Table table({"ID", "KIND", "MODEL", "NODE", "STATE", "PROGRESS", "STARTED", "MESSAGE"});
  for (const v1::Job& job : jobs->jobs()) {
    std::string progress = "-";
    if (job.bytes_total() > 0) {
      progress = absl::StrCat(HumanBytes(job.bytes_done()), " / ", HumanBytes(job.bytes_total()));
    }
    std::string message(job.message().substr(0, job.message().find('\n')));
    if (message.size() > 60) message = message.substr(0, 57) + "...";
    table.AddRow({job.id(), job.kind(), job.model_name().empty() ? "-" : job.model_name(),
                  job.node_id(), job.state(), progress, Ago(job.created_at()), message});
  }
  std::cout << table.Render();
  return 0;
}

int ModelCommands::Cancel(ApiClient& api, bool json) {
  v1::GetJobRequest request;
  request.set_job_id(job_id_);
  int exit_code = 0;
  std::optional<v1::Job> job =
      Fetch<v1::Job>(api, &v1::GSwarm::Stub::CancelJob, request, json, &exit_code);
  if (!job.has_value()) return exit_code;
  std::cout << "asked node " << job->node_id() << " to cancel " << job->id() << " (" << job->kind()
            << " " << job->model_name() << ")\n";
  return 0;
}

}  // namespace gswarm::cli
