#pragma once

// Inference engines: how to start one (an argv template), how to tell it is ready (an HTTP health
// path and a deadline), and the built-in presets for vLLM, llama.cpp's llama-server and SGLang.
//
// A template is plain text with placeholders in braces, substituted per instance:
//   {model_path}              the model's directory (for engines that load a directory)
//   {model_file}              the main weights file (for single-file engines such as llama-server)
//   {model_name}              the name clients send as "model"
//   {host} {port}             where the engine listens
//   {gpu}                     the GPU index the instance runs on
//   {gpu_memory_utilization}  share of the GPU the engine may take, e.g. 0.9
//   {max_concurrent_requests} how many requests the engine runs at once
//   {sleep_level}             in sleep calls: 1 (weights kept in CPU RAM) or 2 (dropped)
//   {instance_id}             the instance's id (names a container: gswarm-{instance_id})
// "{{" and "}}" stand for literal braces ("{{\"a\": 1}}" renders as {"a": 1}); any other brace
// that is not part of a known placeholder is an error.
//
// An engine may also sleep: free its GPU memory without exiting, and wake again in a fraction of a
// cold start (vLLM's sleep mode, SGLang's memory saver). Its `sleep`, `wake` and `reload` calls are
// HTTP requests to its own port, each "METHOD /path" or "METHOD /path BODY" (BODY sent as JSON),
// templated like the command.
//
// Thread safety: plain values and pure functions; FindExecutable reads the filesystem.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gswarm::common {

struct EngineSpec {
  // The key it is configured under (client.engines.<name>), as `--engine` names it.
  std::string name;
  // argv template; the first element is the program, looked up on $PATH unless it holds a '/'.
  // The program itself takes no placeholders (FindExecutable resolves it before any instance).
  std::vector<std::string> command;
  // Polled with GET on the engine's port until it answers 200.
  std::string health_path = "/health";
  // Seconds from start to healthy before the instance fails; vLLM can take minutes.
  double ready_timeout_s = 600;
  // Memory an instance takes per byte of weights where it draws on RAM (on the CPU or a
  // unified-memory node): weights, KV cache and runtime. The budget reserves model size x this
  // until the engine's measured RSS says more.
  double memory_factor = 1.2;
  // Extra environment for the engine; values are templates.
  std::map<std::string, std::string> env;
  // Run on stop before the engine's process group is signalled (llama-swap's cmdStop): what a
  // container engine needs, whose `docker run` is only a client of the container (e.g. ["docker",
  // "stop", "gswarm-{instance_id}"]). Also run when an agent finds the engine's process gone
  // (a container left behind) and before a restart. Empty: signals only.
  std::vector<std::string> stop_command;
  // Puts the engine to sleep, in order (both empty: the engine cannot sleep; GSwarm stops it).
  std::vector<std::string> sleep;
  // Wakes it, in order; then health_path is polled until it answers 200.
  std::vector<std::string> wake;
  // After `wake`, when it slept at level 2 and dropped its weights: reloads them from the model's
  // files (vLLM's reload_weights). Empty: the engine sleeps at level 1 only.
  std::vector<std::string> reload;

  friend bool operator==(const EngineSpec&, const EngineSpec&) = default;
};

// The values of the placeholders for one instance.
struct EngineVars {
  std::string model_path;
  std::string model_file;
  std::string model_name;
  std::string host;
  int port = 0;
  std::string gpu;
  double gpu_memory_utilization = 0.9;
  int max_concurrent_requests = 256;
  int sleep_level = 1;
  std::string instance_id;
};

// One rendered sleep/wake/reload call.
struct EngineCall {
  std::string method;  // GET, POST, PUT or DELETE
  std::string path;    // starts with '/', may hold a query
  std::string body;    // empty: none

  friend bool operator==(const EngineCall&, const EngineCall&) = default;
};

// The deepest sleep level the engine supports: 0 (it cannot sleep), 1, or 2 (it has `reload`).
int MaxSleepLevel(const EngineSpec& spec);

// The engine's `sleep`, `wake` or `reload` calls (`which`), rendered with `vars`. Errors as
// RenderCommand's.
absl::StatusOr<std::vector<EngineCall>> RenderCalls(const EngineSpec& spec, std::string_view which,
                                                    const EngineVars& vars);

// The placeholder names, in the order messages list them: {"model_path", "model_file", ...}.
const std::vector<std::string>& EnginePlaceholders();

// INVALID_ARGUMENT naming the engine and what is wrong: an unknown placeholder or stray brace in
// the command or an env value, an empty command, a placeholder in the program, a non-positive
// ready timeout, a memory factor outside [1, 100], a health path not starting with '/', an empty
// env name or one holding '=', a sleep/wake/reload call that is not "METHOD /path [BODY]", sleep
// without wake (or the reverse), reload without sleep.
//   engine "vllm": unknown placeholder {modle_path} in command (known: {model_path}, ...)
// The status carries the field it is about; see EngineSpecErrorField.
absl::Status ValidateEngineSpec(const EngineSpec& spec);

// The field a ValidateEngineSpec error is about: "command", "stop_command", "health_path",
// "ready_timeout_s", "memory_factor", "env.<NAME>", "sleep", "wake", "reload", or "" for another
// status.
std::string EngineSpecErrorField(const absl::Status& status);

// The stop command rendered like the command; empty when the engine has none.
absl::StatusOr<std::vector<std::string>> RenderStopCommand(const EngineSpec& spec,
                                                           const EngineVars& vars);

// The command with every placeholder substituted in every element (an element may hold several,
// with text around them). INVALID_ARGUMENT for a malformed template; FAILED_PRECONDITION when the
// command uses {model_path}, {model_file}, {model_name} or {host} and that value is empty.
absl::StatusOr<std::vector<std::string>> RenderCommand(const EngineSpec& spec,
                                                       const EngineVars& vars);

// spec.env with its values rendered like RenderCommand's arguments.
absl::StatusOr<std::map<std::string, std::string>> RenderEnv(const EngineSpec& spec,
                                                             const EngineVars& vars);

// The absolute path of the engine's program: command[0] itself when it holds a '/' (relative to
// the working directory), else the first executable regular file of that name on `search_path`
// (a $PATH-style list; an empty entry is the working directory). NOT_FOUND:
//   engine "vllm": "vllm" is not on PATH (install it, or set client.engines.vllm.command)
absl::StatusOr<std::string> FindExecutable(const EngineSpec& spec, std::string_view search_path);

// The same on this process's $PATH ("/usr/local/bin:/usr/bin:/bin" when it is unset).
absl::StatusOr<std::string> FindExecutable(const EngineSpec& spec);

// Splits a command line on whitespace. Double quotes group ("a b" is one argument, "" an empty
// one) and are removed; inside them \" and \\ stand for " and \. Nothing else is special: no
// single quotes, variables or globs. INVALID_ARGUMENT for an unterminated quote.
absl::StatusOr<std::vector<std::string>> SplitCommandLine(std::string_view text);

// vllm, llama-server and sglang with their real flags, keyed by name (vllm and sglang can sleep);
// and two container forms: nim (NVIDIA NIM's LLM container through `docker run`) and compose
// (a service of a Docker Compose file, named like the model).
std::map<std::string, EngineSpec> BuiltinEngines();

}  // namespace gswarm::common
