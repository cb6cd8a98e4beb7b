#include "client/log_tail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

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

// The last `lines` lines of `text` that have text, less those containing `skip` (when not
// empty), trimmed and joined by '\n'. `partial_first`: the text starts mid-line, so its first line
// is left out.
std::string QuoteLines(absl::string_view text, bool partial_first, int lines,
                       absl::string_view skip) {
  std::vector<absl::string_view> all = absl::StrSplit(text, '\n');
  const size_t first = partial_first ? 1 : 0;
  std::vector<absl::string_view> kept;
  for (size_t i = all.size(); i > first && static_cast<int>(kept.size()) < lines; --i) {
    absl::string_view line = absl::StripTrailingAsciiWhitespace(all[i - 1]);
    if (line.empty() || (!skip.empty() && absl::StrContains(line, skip))) continue;
    kept.push_back(line);
  }
  std::reverse(kept.begin(), kept.end());
  return absl::StrJoin(kept, "\n");
}

}  // namespace

absl::StatusOr<LogTail> TailFile(const std::string& path, int lines, const TailOptions& options) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no log at ", path));
    return absl::UnavailableError(absl::StrCat("opening ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  fstat(fd, &st);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t start = size > options.window_bytes ? size - options.window_bytes : 0;
  std::string text = ReadRange(fd, start, static_cast<size_t>(size - start));
  close(fd);
  if (options.quote) return LogTail{QuoteLines(text, start > 0, lines, options.skip), size};
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
