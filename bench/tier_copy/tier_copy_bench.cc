// Copies one model directory with GSwarm's tier copier (client/tier_copier.h) and prints one
// line of JSON: seconds, bytes, GB/s, CPU seconds, and how the files moved. Run by
// bench/tier_copy/run.sh, which compares it with cp and dd.
//
//   tier_copy_bench --source DIR --target DIR [--verify] [--parallel 4] [--block-mb 8]
//                   [--method auto|copy_file_range|sendfile|read_write]

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "CLI/CLI.hpp"
#include "client/tier_copier.h"
#include "spdlog/spdlog.h"

namespace {

double CpuSeconds(const timeval& t) {
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GSwarm tier copy benchmark driver"};
  std::string source, target, method = "auto";
  bool verify = false;
  int parallel = 4, block_mb = 8;
  app.add_option("--source", source, "model directory to copy")->required();
  app.add_option("--target", target, "where the copy goes (must not exist)")->required();
  app.add_flag("--verify", verify,
               "check each file against the source manifest's XXH3-128 (else SHA-256, recording "
               "the XXH3-128)");
  app.add_option("--parallel", parallel, "files copied at once");
  app.add_option("--block-mb", block_mb, "read/write buffer (MiB)");
  app.add_option("--method", method, "first copy method")
      ->check(CLI::IsMember({"auto", "copy_file_range", "sendfile", "read_write"}));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  gswarm::client::CopyStats stats;
  gswarm::client::CopyOptions options;
  options.parallel_files = parallel;
  options.block_bytes = static_cast<size_t>(block_mb) << 20;
  options.verify = verify;
  options.stats = &stats;
  if (method == "copy_file_range")
    options.first_method = gswarm::client::CopyMethod::kCopyFileRange;
  if (method == "sendfile") options.first_method = gswarm::client::CopyMethod::kSendfile;
  if (method == "read_write") options.first_method = gswarm::client::CopyMethod::kReadWrite;

  const std::filesystem::path t(target);
  const std::string staging =
      (t.parent_path() / ("." + t.filename().string() + ".staging")).string();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<uint64_t> bytes =
      gswarm::client::CopyModelDir(source, staging, target, options, {}, nullptr);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!bytes.ok()) {
    std::fprintf(stderr, "tier_copy_bench: %s\n", bytes.status().ToString().c_str());
    return 1;
  }
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "{\"seconds\": %.3f, \"bytes\": %llu, \"gb_per_s\": %.3f, \"user_s\": %.3f, \"sys_s\": "
      "%.3f, \"files_copy_file_range\": %u, \"files_sendfile\": %u, \"files_read_write\": %u, "
      "\"files_mmap_write\": %u, \"files_hashed\": %u, \"files_by_xxh3\": %u, "
      "\"files_by_sha256\": %u, \"digests_recorded\": %u}\n",
      seconds, static_cast<unsigned long long>(*bytes), static_cast<double>(*bytes) / seconds / 1e9,
      CpuSeconds(usage.ru_utime), CpuSeconds(usage.ru_stime), stats.files_by_method[0],
      stats.files_by_method[1], stats.files_by_method[2], stats.files_by_method[3],
      stats.files_hashed, stats.files_by_xxh3, stats.files_by_sha256, stats.digests_recorded);
  return 0;
}
