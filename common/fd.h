#pragma once

// A file descriptor with one owner, closed when the owner goes; the directory fsync that makes a
// rename durable; and the early writeback that keeps a big file's final fsync short.
// Thread safety: a UniqueFd is a value; the functions may be called from any thread.

#include <unistd.h>

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"

namespace gswarm::common {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }  // negative when none (a failed open)
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int release() { return std::exchange(fd_, -1); }
  // Closes the one held (if any) and holds `fd`.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// fsync of a directory, so that the renames and creations in it survive a crash. Errors name
// the directory.
absl::Status FsyncDir(const std::string& dir);

// Starts the disk write of the dirty pages of [offset, offset + length) and returns without
// waiting (sync_file_range SYNC_FILE_RANGE_WRITE). A file written at memory speed and fsynced at
// the end otherwise leaves all of its bytes to that fsync; started behind the writes, the disk
// works during the transfer. Errors are not reported here: they surface at the fsync.
void StartWriteback(int fd, uint64_t offset, uint64_t length);

}  // namespace gswarm::common
