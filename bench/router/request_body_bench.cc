// What reading a request costs the router, by body size: RequestBody (one pass, no document)
// against the obvious baseline, nlohmann::json's parse of the body (and, for a request that
// names the "default" alias or carries keep_alive, its dump back to text).
//
//   build/bench/request_body_bench [--benchmark_filter=...]
//
// Bodies are OpenAI chat requests whose one user message holds `size` bytes of prose.

#include <string>

#include "benchmark/benchmark.h"
#include "host/request_body.h"
#include "nlohmann/json.hpp"

namespace {

using gswarm::host::RequestBody;
using json = nlohmann::json;

std::string ChatBody(int64_t size) {
  std::string prose;
  const std::string sentence = "The quick brown fox jumps over the lazy dog, \"twice\". ";
  while (static_cast<int64_t>(prose.size()) < size) prose += sentence;
  prose.resize(size);
  return json{{"model", "default"},
              {"messages",
               {{{"role", "system"}, {"content", "You are helpful."}},
                {{"role", "user"}, {"content", prose}}}},
              {"max_tokens", 256},
              {"temperature", 0.7},
              {"stream", true},
              {"keep_alive", "5m"}}
      .dump();
}

void BM_RequestBodyRead(benchmark::State& state) {
  const std::string body = ChatBody(state.range(0));
  for (auto _ : state) {
    absl::StatusOr<RequestBody> parsed = RequestBody::Parse(body);
    benchmark::DoNotOptimize(parsed);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
}

void BM_NlohmannRead(benchmark::State& state) {
  const std::string body = ChatBody(state.range(0));
  for (auto _ : state) {
    json parsed = json::parse(body, nullptr, false);
    benchmark::DoNotOptimize(parsed);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
}

void BM_RequestBodyReadAndRewrite(benchmark::State& state) {
  const std::string body = ChatBody(state.range(0));
  for (auto _ : state) {
    absl::StatusOr<RequestBody> parsed = RequestBody::Parse(body);
    std::string out = parsed->Rewrite(body, "llama-3-8b", /*drop_keep_alive=*/true);
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
}

void BM_NlohmannReadAndRewrite(benchmark::State& state) {
  const std::string body = ChatBody(state.range(0));
  for (auto _ : state) {
    json parsed = json::parse(body, nullptr, false);
    parsed.erase("keep_alive");
    parsed["model"] = "llama-3-8b";
    std::string out = parsed.dump();
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
}

constexpr int64_t kSizes[] = {64, 4 << 10, 64 << 10, 1 << 20};

void Sizes(benchmark::internal::Benchmark* b) {
  for (int64_t size : kSizes) b->Arg(size);
}

BENCHMARK(BM_RequestBodyRead)->Apply(Sizes);
BENCHMARK(BM_NlohmannRead)->Apply(Sizes);
BENCHMARK(BM_RequestBodyReadAndRewrite)->Apply(Sizes);
BENCHMARK(BM_NlohmannReadAndRewrite)->Apply(Sizes);

}  // namespace

BENCHMARK_MAIN();
