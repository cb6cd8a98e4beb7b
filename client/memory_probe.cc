#include "client/memory_probe.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/paths.h"
#include "common/status.h"
#include "common/units.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

// "MemTotal:       16305524 kB" -> bytes.
bool ParseKilobytesLine(absl::string_view line, absl::string_view key, uint64_t* bytes) {
  if (!absl::ConsumePrefix(&line, key)) return false;
  line = absl::StripLeadingAsciiWhitespace(line);
  absl::ConsumeSuffix(&line, "kB");
  uint64_t kib = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &kib)) return false;
  *bytes = kib * 1024;
  return true;
}

}  // namespace

absl::StatusOr<MeminfoFigures> ParseMeminfo(absl::string_view text) {
  MeminfoFigures figures;
  bool have_total = false, have_available = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    have_total |= ParseKilobytesLine(line, "MemTotal:", &figures.total_bytes);
    have_available |= ParseKilobytesLine(line, "MemAvailable:", &figures.available_bytes);
  }
  if (!have_total || !have_available) {
    return absl::DataLossError(
        "meminfo lacks MemTotal or MemAvailable (Linux 3.14 or newer needed)");
  }
  return figures;
}

absl::StatusOr<FilesystemFigures> StatFilesystem(const std::string& path) {
  std::filesystem::path probe(path);
  std::error_code ec;
  while (!probe.empty() && !std::filesystem::exists(probe, ec) && probe != probe.root_path()) {
    probe = probe.parent_path();
  }
  struct statvfs vfs {};
  if (statvfs(probe.empty() ? "/" : probe.c_str(), &vfs) != 0) {
    return absl::UnavailableError(
        absl::StrCat("statvfs ", probe.string(), ": ", std::strerror(errno)));
  }
  return FilesystemFigures{static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize,
                           static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize};
}

uint64_t CpuMemoryBudget(uint64_t configured, uint64_t dram_total, uint64_t dram_tier_budget) {
  if (configured != 0) return configured;
  const uint64_t headroom = std::max<uint64_t>(dram_total / 10, common::kGiB);
  const uint64_t reserved = dram_tier_budget + headroom;
  return dram_total > reserved ? dram_total - reserved : 0;
}

std::map<uint32_t, uint64_t> RssByProcessGroup(const std::set<uint32_t>& groups,
                                               const std::string& proc) {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  std::map<uint32_t, uint64_t> rss;
  if (groups.empty()) return rss;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(proc, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string pid = it->path().filename().string();
    if (pid.empty() || !absl::ascii_isdigit(static_cast<unsigned char>(pid[0]))) continue;
    // stat: "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so the
    // fields are counted from the last ')'.
    absl::StatusOr<std::string> stat = common::ReadFile(absl::StrCat(proc, "/", pid, "/stat"));
    if (!stat.ok()) continue;  // it exited meanwhile
    const size_t paren = stat->rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(absl::string_view(*stat).substr(paren + 1), ' ', absl::SkipEmpty());
    uint32_t group = 0;
    if (fields.size() < 3 || !absl::SimpleAtoi(fields[2], &group) || !groups.contains(group)) {
      continue;
    }
    absl::StatusOr<std::string> statm = common::ReadFile(absl::StrCat(proc, "/", pid, "/statm"));
    if (!statm.ok()) continue;
    std::vector<absl::string_view> pages = absl::StrSplit(*statm, ' ', absl::SkipEmpty());
    uint64_t resident = 0;
    if (pages.size() >= 2 && absl::SimpleAtoi(pages[1], &resident)) {
      rss[group] += resident * page;
    }
  }
  return rss;
}

uint64_t DirectoryBytes(const std::string& path) {
  std::error_code ec;
  uint64_t total = 0;
  std::filesystem::recursive_directory_iterator it(path, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    // A file that vanishes mid-walk is skipped: its error must neither end the walk nor add
    // file_size's error value (uintmax_t(-1)).
    std::error_code entry_ec;
    if (!it->is_regular_file(entry_ec) || it->is_symlink(entry_ec)) continue;
    const uint64_t size = it->file_size(entry_ec);
    if (!entry_ec) total += size;
  }
  return total;
}

MemoryProbe::MemoryProbe(Options options, std::unique_ptr<GpuProbe> gpus)
    : options_(std::move(options)), gpus_(std::move(gpus)) {}

v1::MemoryUsage MemoryProbe::Sample() {
  // Say once per process what cannot be read: a heartbeat every two seconds would flood the log.
  static std::atomic<bool> warned_meminfo{false}, warned_disk{false};
  v1::MemoryUsage usage;

  absl::StatusOr<std::string> meminfo_text = common::ReadFile(options_.meminfo_path);
  absl::StatusOr<MeminfoFigures> meminfo =
      meminfo_text.ok() ? ParseMeminfo(*meminfo_text) : meminfo_text.status();
  if (meminfo.ok()) {
    usage.set_dram_total_bytes(meminfo->total_bytes);
    usage.set_dram_available_bytes(meminfo->available_bytes);
  } else if (!warned_meminfo.exchange(true)) {
    spdlog::warn("cannot read DRAM figures: {}", meminfo.status().message());
  }

  usage.set_disk_path(options_.model_cache_dir);
  absl::StatusOr<FilesystemFigures> disk = StatFilesystem(options_.model_cache_dir);
  if (disk.ok()) {
    usage.set_disk_total_bytes(disk->total_bytes);
    usage.set_disk_free_bytes(disk->free_bytes);
  } else if (!warned_disk.exchange(true)) {
    spdlog::warn("cannot read disk figures: {}", disk.status().message());
  }

  usage.set_dram_tier_path(options_.dram_tier_dir);
  usage.set_dram_tier_used_bytes(DirectoryBytes(options_.dram_tier_dir));
  usage.set_dram_tier_budget_bytes(options_.dram_tier_budget_bytes);

  for (v1::GpuInfo& gpu : gpus_->Sample()) {
    gpu.set_memory_budget_bytes(static_cast<uint64_t>(
        static_cast<double>(gpu.memory_total_bytes()) * options_.gpu_memory_fraction));
    *usage.add_gpus() = std::move(gpu);
  }
  return usage;
}

}  // namespace gswarm::client
