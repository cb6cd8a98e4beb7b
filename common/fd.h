#pragma once

// A file descriptor with one owner, closed when the owner goes; and the directory fsync that
// makes a rename durable.
// Thread safety: a UniqueFd is a value; FsyncDir may be called from any thread.

#include <unistd.h>

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

}  // namespace gswarm::common
