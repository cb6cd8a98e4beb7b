#pragma once

// Space promised on the disk tier's locations (disk_tier.h): a download or copy reserves the
// bytes it still has to write before it writes any, so that downloads running at once cannot
// together promise more than a disk holds. What one may take is
//
//   room = free - reserved - (1 - high_watermark) * total
//
// of the filesystem holding the location (locations on one filesystem share it). A reservation
// that does not fit is refused up front, saying what is needed and what is free; one that fits
// is held until the work ends (success, failure or cancel), when its bytes are on disk and
// counted by `free` instead; as the writer reports bytes landing (Landed), its promise shrinks by
// them, so they are not counted twice. Another process can still fill the disk meanwhile: the
// writers handle ENOSPC (the download's partial files are removed).
//
// Thread safety: thread-safe.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "client/disk_tier.h"
#include "client/memory_probe.h"
#include "common/mutex.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

class DiskSpace {
 public:
  // statvfs by default; tests pass their own.
  using StatFn = std::function<absl::StatusOr<FilesystemFigures>(const std::string& path)>;

  // Released (its bytes no longer promised) when destroyed.
  class Reservation {
   public:
    ~Reservation();
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;

    // `written` of the promised bytes are on disk now (a running total; it never goes back):
    // the free space counts them, the promise keeps only the rest.
    void Landed(uint64_t written);

   private:
    friend class DiskSpace;
    Reservation(DiskSpace* space, dev_t device, uint64_t bytes)
        : space_(space), device_(device), promised_(bytes) {}
    DiskSpace* space_;
    dev_t device_;
    const uint64_t promised_;
    uint64_t released_ = 0;  // under space_->mu_
  };

  explicit DiskSpace(StatFn stat = {});

  // Promises `bytes` in `place` for `what` ("download of m"). RESOURCE_EXHAUSTED when they do not
  // fit: "not enough disk space for download of m in location secondary (/mnt/x): needs 12.0
  // GiB, 8.0 GiB free below its 90% high watermark (2.0 GiB of it promised to other work)".
  absl::StatusOr<std::unique_ptr<Reservation>> Reserve(const DiskPlace& place, uint64_t bytes,
                                                       const std::string& what);

  // The location's figures now, for heartbeats and `gswarm memory`.
  v1::DiskLocation Measure(const DiskPlace& place) const;

 private:
  void Release(dev_t device, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The filesystem holding `path` (or its nearest existing parent).
  static absl::StatusOr<dev_t> DeviceOf(const std::string& path);

  const StatFn stat_;
  mutable gswarm::Mutex mu_;
  std::map<dev_t, uint64_t> reserved_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gswarm::client
