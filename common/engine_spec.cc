#include "common/engine_spec.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/text.h"

namespace gswarm::common {
namespace {

constexpr char kFieldPayload[] = "gswarm/engine-spec-field";

// An INVALID_ARGUMENT about `field` of engine `name`.
absl::Status SpecError(absl::string_view name, absl::string_view field, absl::string_view problem) {
  absl::Status status =
      absl::InvalidArgumentError(absl::StrCat("engine ", Quote(name), ": ", problem));
  status.SetPayload(kFieldPayload, absl::Cord(field));
  return status;
}

// The value of placeholder `name`, or nullopt when there is no such placeholder.
std::optional<std::string> Lookup(absl::string_view name, const EngineVars& vars) {
  if (name == "model_path") return vars.model_path;
  if (name == "model_file") return vars.model_file;
  if (name == "model_name") return vars.model_name;
  if (name == "host") return vars.host;
  if (name == "port") return absl::StrCat(vars.port);
  if (name == "gpu") return vars.gpu;
  if (name == "gpu_memory_utilization") return absl::StrCat(vars.gpu_memory_utilization);
  if (name == "max_concurrent_requests") return absl::StrCat(vars.max_concurrent_requests);
  if (name == "sleep_level") return absl::StrCat(vars.sleep_level);
  if (name == "instance_id") return vars.instance_id;
  return std::nullopt;
}

std::string KnownList() {
  std::vector<std::string> names;
  for (const std::string& name : EnginePlaceholders())
    names.push_back(absl::StrCat("{", name, "}"));
  return absl::StrJoin(names, ", ");
}

// Expands template `text` into *out with `vars` (rendering) or checks it (vars == nullptr, out
// may be null). `where` names the text in messages: "command", "env NAME"; `field` is the
// EngineSpec field for EngineSpecErrorField.
absl::Status Expand(const EngineSpec& spec, absl::string_view field, absl::string_view where,
                    absl::string_view text, const EngineVars* vars, std::string* out) {
  std::string scratch;
  if (out == nullptr) out = &scratch;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
      out->push_back(c);
      i += 2;
      continue;
    }
    if (c == '}') {
      return SpecError(spec.name, field,
                       absl::StrCat("unmatched '}' in ", where, " ", Quote(text),
                                    " (write }} for a literal brace)"));
    }
    if (c != '{') {
      out->push_back(c);
      ++i;
      continue;
    }
    const size_t close = text.find('}', i + 1);
    if (close == absl::string_view::npos) {
      return SpecError(spec.name, field,
                       absl::StrCat("unmatched '{' in ", where, " ", Quote(text),
                                    " (write {{ for a literal brace)"));
    }
    const absl::string_view name = text.substr(i + 1, close - i - 1);
    EngineVars none;
    std::optional<std::string> value = Lookup(name, vars != nullptr ? *vars : none);
    if (!value) {
      return SpecError(spec.name, field,
                       absl::StrCat("unknown placeholder {", name, "} in ", where, " (known: ",
                                    KnownList(), "; write {{ and }} for literal braces)"));
    }
    if (vars != nullptr && value->empty() && name != "gpu") {
      absl::Status status = absl::FailedPreconditionError(absl::StrCat(
          "engine ", Quote(spec.name), ": ", where, " uses {", name, "}, which is empty here",
          name == "model_file" ? " (this engine loads a single weights file, such as a .gguf, and "
                                 "the model has none)"
                               : ""));
      status.SetPayload(kFieldPayload, absl::Cord(field));
      return status;
    }
    out->append(*value);
    i = close + 1;
  }
  return absl::OkStatus();
}

std::optional<std::string> SearchPath(absl::string_view program, absl::string_view search_path) {
  for (absl::string_view dir : absl::StrSplit(search_path, ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", program);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return std::nullopt;
}

std::string Absolute(const std::string& path) {
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  return ec ? path : absolute.string();
}

}  // namespace

const std::vector<std::string>& EnginePlaceholders() {
  static const std::vector<std::string>* const kNames =
      new std::vector<std::string>{"model_path",
                                   "model_file",
                                   "model_name",
                                   "host",
                                   "port",
                                   "gpu",
                                   "gpu_memory_utilization",
                                   "max_concurrent_requests",
                                   "sleep_level",
                                   "instance_id"};
  return *kNames;
}

namespace {

const std::vector<std::string>& Calls(const EngineSpec& spec, absl::string_view which) {
  if (which == "sleep") return spec.sleep;
  if (which == "wake") return spec.wake;
  return spec.reload;
}

// "METHOD /path [BODY]" -> its parts; `text` is a template or a rendered call.
absl::StatusOr<EngineCall> ParseCall(const EngineSpec& spec, absl::string_view which,
                                     absl::string_view text) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  std::vector<absl::string_view> parts = absl::StrSplit(trimmed, absl::MaxSplits(' ', 2));
  EngineCall call;
  call.method = std::string(parts[0]);
  if (parts.size() >= 2) call.path = std::string(parts[1]);
  if (parts.size() == 3) call.body = std::string(absl::StripAsciiWhitespace(parts[2]));
  if (call.method != "GET" && call.method != "POST" && call.method != "PUT" &&
      call.method != "DELETE") {
    return SpecError(spec.name, which,
                     absl::StrCat(which, " call ", Quote(text),
                                  " must start with GET, POST, PUT or DELETE (e.g. \"POST "
                                  "/sleep?level={sleep_level}\")"));
  }
  if (call.path.empty() || call.path.front() != '/') {
    return SpecError(spec.name, which,
                     absl::StrCat(which, " call ", Quote(text),
                                  ": the path after the method must start with '/'"));
  }
  return call;
}

}  // namespace

int MaxSleepLevel(const EngineSpec& spec) {
  if (spec.sleep.empty() || spec.wake.empty()) return 0;
  return spec.reload.empty() ? 1 : 2;
}

absl::StatusOr<std::vector<EngineCall>> RenderCalls(const EngineSpec& spec, std::string_view which,
                                                    const EngineVars& vars) {
  RETURN_IF_ERROR(ValidateEngineSpec(spec));
  std::vector<EngineCall> calls;
  for (const std::string& text : Calls(spec, AV(which))) {
    std::string rendered;
    RETURN_IF_ERROR(Expand(spec, AV(which), AV(which), text, &vars, &rendered));
    ASSIGN_OR_RETURN(EngineCall call, ParseCall(spec, AV(which), rendered));
    calls.push_back(std::move(call));
  }
  return calls;
}

absl::Status ValidateEngineSpec(const EngineSpec& spec) {
  if (spec.name.empty()) return SpecError(spec.name, "", "an engine needs a name");
  if (spec.command.empty()) {
    return SpecError(spec.name, "command",
                     "the command is empty (give the program and its arguments)");
  }
  const std::string& program = spec.command.front();
  if (absl::StripAsciiWhitespace(program).empty()) {
    return SpecError(spec.name, "command", "the program (the first element of command) is empty");
  }
  if (program.find_first_of("{}") != std::string::npos) {
    return SpecError(spec.name, "command",
                     absl::StrCat("the program ", Quote(program),
                                  " (the first element of command) may not hold braces: it is "
                                  "looked up before any model is known"));
  }
  for (size_t i = 1; i < spec.command.size(); ++i) {
    RETURN_IF_ERROR(Expand(spec, "command", "command", spec.command[i], nullptr, nullptr));
  }
  if (!spec.stop_command.empty()) {
    if (absl::StripAsciiWhitespace(spec.stop_command.front()).empty() ||
        spec.stop_command.front().find_first_of("{}") != std::string::npos) {
      return SpecError(spec.name, "stop_command",
                       "the stop command's program (its first element) must be a plain name or "
                       "path, without placeholders");
    }
    for (size_t i = 1; i < spec.stop_command.size(); ++i) {
      RETURN_IF_ERROR(
          Expand(spec, "stop_command", "stop_command", spec.stop_command[i], nullptr, nullptr));
    }
  }
  if (spec.health_path.empty() || spec.health_path.front() != '/') {
    return SpecError(spec.name, "health_path",
                     absl::StrCat("health_path ", Quote(spec.health_path),
                                  " must start with '/' (e.g. \"/health\")"));
  }
  if (!(spec.ready_timeout_s > 0) || !std::isfinite(spec.ready_timeout_s)) {
    return SpecError(
        spec.name, "ready_timeout_s",
        absl::StrCat("ready_timeout_s must be a number of seconds greater than 0 (got ",
                     spec.ready_timeout_s, ")"));
  }
  if (!(spec.memory_factor >= 1 && spec.memory_factor <= 100)) {
    return SpecError(spec.name, "memory_factor",
                     absl::StrCat("memory_factor must be a number from 1 to 100: the bytes an "
                                  "instance takes per byte of weights (got ",
                                  spec.memory_factor, ")"));
  }
  for (const auto& [key, value] : spec.env) {
    const std::string field = absl::StrCat("env.", key);
    if (key.empty() || key.find_first_of(std::string("=\0", 2)) != std::string::npos) {
      return SpecError(spec.name, field,
                       absl::StrCat("env name ", Quote(key), " must be non-empty, without '='"));
    }
    RETURN_IF_ERROR(Expand(spec, field, absl::StrCat("env ", key), value, nullptr, nullptr));
  }
  for (const char* which : {"sleep", "wake", "reload"}) {
    for (const std::string& text : Calls(spec, which)) {
      RETURN_IF_ERROR(Expand(spec, which, which, text, nullptr, nullptr));
      RETURN_IF_ERROR(ParseCall(spec, which, text).status());
    }
  }
  if (spec.sleep.empty() != spec.wake.empty()) {
    return SpecError(spec.name, spec.sleep.empty() ? "wake" : "sleep",
                     "an engine that can sleep needs both sleep and wake calls");
  }
  if (!spec.reload.empty() && spec.sleep.empty()) {
    return SpecError(spec.name, "reload",
                     "reload is for waking from sleep: give sleep and wake too");
  }
  return absl::OkStatus();
}

std::string EngineSpecErrorField(const absl::Status& status) {
  auto field = status.GetPayload(kFieldPayload);  // absl::optional in Debian's Abseil
  return field ? std::string(*field) : std::string();
}

absl::StatusOr<std::vector<std::string>> RenderCommand(const EngineSpec& spec,
                                                       const EngineVars& vars) {
  RETURN_IF_ERROR(ValidateEngineSpec(spec));
  std::vector<std::string> argv = {spec.command.front()};
  for (size_t i = 1; i < spec.command.size(); ++i) {
    std::string arg;
    RETURN_IF_ERROR(Expand(spec, "command", "command", spec.command[i], &vars, &arg));
    argv.push_back(std::move(arg));
  }
  return argv;
}

absl::StatusOr<std::vector<std::string>> RenderStopCommand(const EngineSpec& spec,
                                                           const EngineVars& vars) {
  RETURN_IF_ERROR(ValidateEngineSpec(spec));
  std::vector<std::string> argv;
  for (size_t i = 0; i < spec.stop_command.size(); ++i) {
    std::string arg;
    RETURN_IF_ERROR(
        Expand(spec, "stop_command", "stop_command", spec.stop_command[i], &vars, &arg));
    argv.push_back(std::move(arg));
  }
  return argv;
}

absl::StatusOr<std::map<std::string, std::string>> RenderEnv(const EngineSpec& spec,
                                                             const EngineVars& vars) {
  RETURN_IF_ERROR(ValidateEngineSpec(spec));
  std::map<std::string, std::string> env;
  for (const auto& [key, value] : spec.env) {
    std::string rendered;
    RETURN_IF_ERROR(Expand(spec, absl::StrCat("env.", key), absl::StrCat("env ", key), value, &vars,
                           &rendered));
    env.emplace(key, std::move(rendered));
  }
  return env;
}

absl::StatusOr<std::string> FindExecutable(const EngineSpec& spec, std::string_view search_path) {
  if (spec.command.empty() || spec.command.front().empty()) {
    return SpecError(spec.name, "command",
                     "the command is empty (give the program and its arguments)");
  }
  const std::string& program = spec.command.front();
  if (program.find('/') != std::string::npos) {
    struct stat st;
    if (stat(program.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat("engine ", Quote(spec.name), ": ", Quote(program),
                                              " does not exist (install it, or set client.engines.",
                                              spec.name, ".command)"));
    }
    if (!S_ISREG(st.st_mode) || access(program.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "engine ", Quote(spec.name), ": ", Quote(program), " is not an executable file"));
    }
    return Absolute(program);
  }
  if (std::optional<std::string> found = SearchPath(program, AV(search_path))) {
    return Absolute(*found);
  }
  return absl::NotFoundError(absl::StrCat("engine ", Quote(spec.name), ": ", Quote(program),
                                          " is not on PATH (install it, or set client.engines.",
                                          spec.name, ".command)"));
}

absl::StatusOr<std::string> FindExecutable(const EngineSpec& spec) {
  const char* path = std::getenv("PATH");
  return FindExecutable(spec, path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
}

absl::StatusOr<std::vector<std::string>> SplitCommandLine(std::string_view text_view) {
  const absl::string_view text = AV(text_view);
  std::vector<std::string> args;
  std::string current;
  bool in_word = false;  // `current` is an argument, possibly empty ("")
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        quoted = false;
      } else if (c == '\\' && i + 1 < text.size() && (text[i + 1] == '"' || text[i + 1] == '\\')) {
        current.push_back(text[++i]);
      } else {
        current.push_back(c);
      }
    } else if (c == '"') {
      quoted = true;
      in_word = true;
    } else if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      if (in_word) args.push_back(std::move(current));
      current.clear();
      in_word = false;
    } else {
      current.push_back(c);
      in_word = true;
    }
  }
  if (quoted) {
    return absl::InvalidArgumentError(
        absl::StrCat("unterminated double quote in the command line ", Quote(text)));
  }
  if (in_word) args.push_back(std::move(current));
  return args;
}

std::map<std::string, EngineSpec> BuiltinEngines() {
  std::map<std::string, EngineSpec> engines;
  // `vllm serve` takes the model as its positional argument; /health answers 200 once the engine
  // has loaded. --max-num-seqs bounds the sequences in a batch.
  engines["vllm"] = EngineSpec{
      "vllm",
      {"vllm", "serve", "{model_path}", "--served-model-name", "{model_name}", "--host", "{host}",
       "--port", "{port}", "--gpu-memory-utilization", "{gpu_memory_utilization}", "--max-num-seqs",
       "{max_concurrent_requests}", "--enable-sleep-mode"},
  };
  // Sleep mode: --enable-sleep-mode, and the endpoints exist only with VLLM_SERVER_DEV_MODE=1.
  // Level 1 moves the weights to CPU RAM; level 2 drops them, and after wake_up reload_weights
  // reads them again from the model's files.
  EngineSpec& vllm = engines["vllm"];
  vllm.env["VLLM_SERVER_DEV_MODE"] = "1";
  vllm.sleep = {"POST /sleep?level={sleep_level}"};
  vllm.wake = {"POST /wake_up"};
  vllm.reload = {R"(POST /collective_rpc {{"method": "reload_weights"}})"};
  // llama.cpp's server loads one GGUF file. With an explicit --parallel, llama-server splits the
  // context evenly between the slots (256 slots would leave each a few tokens) unless the KV
  // cache is unified, so --kv-unified lets every slot use the whole context. --n-gpu-layers 999
  // offloads every layer.
  engines["llama-server"] = EngineSpec{
      "llama-server",
      {"llama-server", "--model", "{model_file}", "--alias", "{model_name}", "--host", "{host}",
       "--port", "{port}", "--parallel", "{max_concurrent_requests}", "--kv-unified",
       "--n-gpu-layers", "999"},
  };
  // SGLang's --mem-fraction-static is its share of GPU memory for weights and KV cache, the
  // nearest thing to vLLM's --gpu-memory-utilization.
  engines["sglang"] = EngineSpec{
      "sglang",
      {"python3", "-m", "sglang.launch_server", "--model-path", "{model_path}",
       "--served-model-name", "{model_name}", "--host", "{host}", "--port", "{port}",
       "--mem-fraction-static", "{gpu_memory_utilization}", "--max-running-requests",
       "{max_concurrent_requests}", "--enable-memory-saver"},
  };
  // The memory saver (--enable-memory-saver) stashes the weights in CPU RAM and frees the GPU:
  // generation is paused first and continued after.
  EngineSpec& sglang = engines["sglang"];
  sglang.sleep = {"POST /pause_generation {{}}", "POST /release_memory_occupation {{}}"};
  sglang.wake = {"POST /resume_memory_occupation {{}}", "POST /continue_generation {{}}"};
  // NVIDIA NIM's LLM container serving the model's files: OpenAI API on port 8000 inside,
  // readiness on /v1/health/ready, a container named after the instance so that a stop (and an
  // agent that finds the `docker run` client gone) can reach it by name.
  engines["nim"] = EngineSpec{
      "nim",
      {"docker", "run", "--rm", "--name", "gswarm-{instance_id}", "--gpus", "device={gpu}",
       "--shm-size", "16g", "-p", "{host}:{port}:8000", "-v", "{model_path}:/opt/models/model:ro",
       "-e", "NIM_MODEL_NAME=/opt/models/model", "-e", "NIM_SERVED_MODEL_NAME={model_name}",
       "nvcr.io/nim/nvidia/llm-nim:latest"},
      "/v1/health/ready",
      1800,
  };
  engines["nim"].stop_command = {"docker", "stop", "gswarm-{instance_id}"};
  // A Docker Compose service named like the model (seed 002 runs NIM this way). The compose file
  // is COMPOSE_FILE in the engine's env (client.engines.compose.env); it reads the port, model
  // path and GPU GSwarm chose from GSWARM_PORT, GSWARM_MODEL_PATH and GSWARM_GPU.
  EngineSpec& compose = engines["compose"] = EngineSpec{
      "compose",
      {"docker", "compose", "up", "{model_name}"},
      "/v1/health/ready",
      1800,
  };
  compose.stop_command = {"docker", "compose", "stop", "{model_name}"};
  compose.env = {{"GSWARM_PORT", "{port}"},
                 {"GSWARM_HOST", "{host}"},
                 {"GSWARM_MODEL_PATH", "{model_path}"},
                 {"GSWARM_MODEL_NAME", "{model_name}"},
                 {"GSWARM_GPU", "{gpu}"}};
  return engines;
}

}  // namespace gswarm::common
