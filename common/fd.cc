#include "common/fd.h"

#include <fcntl.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace gswarm::common {

absl::Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open directory ", dir));
  if (::fsync(fd.get()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync directory ", dir));
  }
  return absl::OkStatus();
}

void StartWriteback(int fd, uint64_t offset, uint64_t length) {
  ::sync_file_range(fd, static_cast<off64_t>(offset), static_cast<off64_t>(length),
                    SYNC_FILE_RANGE_WRITE);
}

}  // namespace gswarm::common
