#include "client/disk_space.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/units.h"

namespace gswarm::client {
namespace {

// What the high watermark keeps free: (1 - w) of the filesystem.
uint64_t Headroom(const FilesystemFigures& fs, double high_watermark) {
  const double w = std::clamp(high_watermark, 0.0, 1.0);
  return static_cast<uint64_t>(std::ceil((1.0 - w) * static_cast<double>(fs.total_bytes)));
}

uint64_t Room(const FilesystemFigures& fs, uint64_t reserved, double high_watermark) {
  const uint64_t held = reserved + Headroom(fs, high_watermark);
  return fs.free_bytes > held ? fs.free_bytes - held : 0;
}

}  // namespace

DiskSpace::Reservation::~Reservation() {
  gswarm::MutexLock lock(&space_->mu_);
  space_->Release(device_, promised_ - released_);
}

void DiskSpace::Reservation::Landed(uint64_t written) {
  gswarm::MutexLock lock(&space_->mu_);
  const uint64_t target = std::min(written, promised_);
  if (target <= released_) return;
  space_->Release(device_, target - released_);
  released_ = target;
}

DiskSpace::DiskSpace(StatFn stat) : stat_(stat ? std::move(stat) : StatFn(&StatFilesystem)) {}

absl::StatusOr<dev_t> DiskSpace::DeviceOf(const std::string& path) {
  std::filesystem::path p(path);
  struct stat st;
  while (::stat(p.c_str(), &st) != 0) {
    if (errno != ENOENT || !p.has_parent_path() || p.parent_path() == p) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
    }
    p = p.parent_path();
  }
  return st.st_dev;
}

absl::StatusOr<std::unique_ptr<DiskSpace::Reservation>> DiskSpace::Reserve(
    const DiskPlace& place, uint64_t bytes, const std::string& what) {
  ASSIGN_OR_RETURN(dev_t device, DeviceOf(place.root));
  ASSIGN_OR_RETURN(FilesystemFigures fs, stat_(place.root));
  gswarm::MutexLock lock(&mu_);
  uint64_t& reserved = reserved_[device];
  const uint64_t room = Room(fs, reserved, place.high_watermark);
  if (bytes > room) {
    const uint64_t headroom = Headroom(fs, place.high_watermark);
    const uint64_t usable = fs.free_bytes > headroom ? fs.free_bytes - headroom : 0;
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough disk space for ", what, " in location ", place.name, " (", place.root,
        "): needs ", common::FormatBytes(bytes), ", ", common::FormatBytes(usable),
        " free below its ", std::lround(place.high_watermark * 100), "% high watermark",
        reserved > 0 ? absl::StrCat(" (", common::FormatBytes(std::min(reserved, usable)),
                                    " of it promised to other downloads and copies)")
                     : "",
        "; free some space (gswarm rm) or pick another location"));
  }
  reserved += bytes;
  return std::unique_ptr<Reservation>(new Reservation(this, device, bytes));
}

void DiskSpace::Release(dev_t device, uint64_t bytes) {
  auto it = reserved_.find(device);
  if (it == reserved_.end()) return;
  it->second -= std::min(it->second, bytes);
  if (it->second == 0) reserved_.erase(it);
}

v1::DiskLocation DiskSpace::Measure(const DiskPlace& place) const {
  v1::DiskLocation out;
  out.set_name(place.name);
  out.set_path(place.root);
  out.set_high_watermark(place.high_watermark);
  absl::StatusOr<FilesystemFigures> fs = stat_(place.root);
  absl::StatusOr<dev_t> device = DeviceOf(place.root);
  if (!fs.ok() || !device.ok()) return out;
  uint64_t reserved = 0;
  {
    gswarm::MutexLock lock(&mu_);
    if (auto it = reserved_.find(*device); it != reserved_.end()) reserved = it->second;
  }
  out.set_total_bytes(fs->total_bytes);
  out.set_free_bytes(fs->free_bytes);
  out.set_reserved_bytes(reserved);
  out.set_room_bytes(Room(*fs, reserved, place.high_watermark));
  return out;
}

}  // namespace gswarm::client
