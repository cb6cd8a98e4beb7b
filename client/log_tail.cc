#include "client/log_tail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace gswarm::client {
namespace {

// Reads [offset, offset + length) of an open file; short at the end of the file.
std::string ReadRange(int fd, uint64_t offset, size_t length) {
  std::string out(length, '\0');
  size_t got = 0;
  while (got < length) {
    const ssize_t n = pread(fd, out.data() + got, length - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

}  // namespace

absl::StatusOr<LogTail> TailFile(const std::string& path, int lines) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no log at ", path));
    return absl::UnavailableError(absl::StrCat("opening ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  fstat(fd, &st);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  constexpr uint64_t kWindow = 4 << 20;
  const uint64_t start = size > kWindow ? size - kWindow : 0;
  std::string text = ReadRange(fd, start, static_cast<size_t>(size - start));
  close(fd);
  // Keep the last `lines` lines: walk back over that many line ends (a final one excluded).
  size_t cut = text.size();
  int seen = 0;
  for (size_t i = text.size(); i > 0; --i) {
    if (text[i - 1] != '\n' || i == text.size()) continue;
    if (++seen == std::max(lines, 0)) {
      cut = i;
      break;
    }
  }
  if (seen < lines) cut = 0;
  return LogTail{text.substr(cut), size};
}

std::string ReadGrowth(const std::string& path, uint64_t* offset, size_t max_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct stat st {};
  fstat(fd, &st);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < *offset) *offset = 0;  // rotated: the new file starts over
  std::string out;
  if (size > *offset) {
    out =
        ReadRange(fd, *offset, static_cast<size_t>(std::min<uint64_t>(size - *offset, max_bytes)));
    *offset += out.size();
  }
  close(fd);
  return out;
}

}  // namespace gswarm::client
