#pragma once

// Copies one model directory to another place (disk -> DRAM, DRAM -> disk), fast and safely:
// files are written under a staging name, checked, fsync'd and renamed into place only when the
// whole model is there, so a crash or a cancel never leaves a directory that looks whole.
//
// Thread safety: CopyModelDir may be called from several threads at once (for different
// targets). It runs its own small set of worker threads and returns when they have all stopped.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace gswarm::client {

struct CopyProgress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint32_t files_done = 0;
  uint32_t files_total = 0;
};

// How one file's bytes move. Unverified files try the first three in this order and fall back
// to the next when the kernel refuses one (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP); a refusal is
// remembered for the process per (source device, target device), so later files go straight to
// what works. Verified files are mapped: the digest reads the source's page cache in place and
// write() copies the same pages out, one pass and one copy, no read-back.
enum class CopyMethod { kCopyFileRange = 0, kSendfile = 1, kReadWrite = 2, kMappedWrite = 3 };

// What a copy did, for logs and benchmarks.
struct CopyStats {
  uint32_t files_by_method[4] = {0, 0, 0, 0};  // indexed by CopyMethod: what copied it
  uint32_t files_hashed = 0;      // files checked against a digest their manifest records
  uint32_t files_by_xxh3 = 0;     // ... of them, by XXH3-128
  uint32_t files_by_sha256 = 0;   // ... by SHA-256 (a manifest without XXH3-128)
  uint32_t digests_recorded = 0;  // XXH3-128 digests computed on the way and added to manifests
};

struct CopyOptions {
  // Files copied at once, largest first. 1 copies one file at a time.
  int parallel_files = 4;
  // Buffer size of the read/write path (one aligned buffer per worker) and the chunk size of the
  // kernel paths (at least 64 MiB there). Cancel and progress are checked between blocks.
  size_t block_bytes = 8 << 20;
  // Check every file the source's manifest lists against its XXH3-128, or, where the manifest has
  // none yet, against its SHA-256 while computing the XXH3-128, which is then recorded in the
  // source's and the target's manifests (once per model). Those files take kMappedWrite. Off: the
  // kernel's copy paths, sizes checked only.
  bool verify = true;
  // Where each file's fallback chain starts (later methods still take over on refusal). Unset:
  // at the start. For tests and benchmarks.
  std::optional<CopyMethod> first_method;
  // When set, filled in on success and failure alike.
  CopyStats* stats = nullptr;
};

// Copies every regular file under `source_dir` (following symlinks, e.g. Hugging Face snapshots
// that link to blobs; keeping the relative layout) into `staging_dir`, checks each file's size
// (against the source's .gswarm/manifest.json where it lists the file, else against the source
// file), and its digest where `verify` (see there); fsyncs files and directories, renames
// `staging_dir` to `target_dir` and fsyncs the target's parent. From the source's .gswarm/ only
// manifest.json is copied: other bookkeeping there (pins, last use) belongs to the source's tier.
// The target always has a .gswarm/ directory, for its own tier's bookkeeping.
//
// REQUIRES: `staging_dir` and `target_dir` on the same filesystem, and nothing else using
// `staging_dir` (a leftover there from a crashed copy is removed first). Name it so that scans of
// the target tier skip it (e.g. under a directory whose name starts with '.'). Its parents are
// created.
//
// Returns the bytes copied. Errors, after which `staging_dir` is gone and `target_dir` does not
// exist: FAILED_PRECONDITION when `target_dir` already exists; NOT_FOUND when the source is not a
// directory or a file the manifest lists is missing; DATA_LOSS naming a file whose size or
// digest differs from the manifest (or that was truncated while it was read); RESOURCE_EXHAUSTED
// naming the target when its disk fills up (ENOSPC; callers check space first, this is the
// backstop); CANCELLED when `*cancel` turns true; otherwise the failing file and the errno text.
//
// `on_progress` (may be empty) is called from the calling thread only, with counts that never go
// down, at least every ~100 ms while bytes move and once at the end with bytes_done ==
// bytes_total on success. `cancel` may be null.
absl::StatusOr<uint64_t> CopyModelDir(const std::string& source_dir, const std::string& staging_dir,
                                      const std::string& target_dir, const CopyOptions& options,
                                      std::function<void(const CopyProgress&)> on_progress,
                                      const std::atomic<bool>* cancel);

}  // namespace gswarm::client
