#pragma once

// Reading an instance's log from its end, and following it as it grows (`gswarm logs -f`).

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace gswarm::client {

struct LogTail {
  std::string text;     // the last lines asked for
  uint64_t end_offset;  // where the file ended when read: follow from here
};

struct TailOptions {
  // Read at most the file's last `window_bytes`.
  uint64_t window_bytes = 4 << 20;
  // false: the lines as the file has them, blank ones and line ends included (`gswarm logs`).
  // true: a tail to quote in a message: only lines with text, trimmed of trailing whitespace and
  // joined by '\n' with none at the end, leaving out those that contain `skip` (when not empty)
  // and the partial first line of a window that starts mid-file.
  bool quote = false;
  std::string skip;
};

// The last `lines` lines of the file at `path`, shaped by `options`. NOT_FOUND when there is no
// such file.
absl::StatusOr<LogTail> TailFile(const std::string& path, int lines,
                                 const TailOptions& options = {});

// What the file gained since `*offset` (at most `max_bytes`), advancing `*offset`. A file that
// shrank (it was rotated) is read again from its start.
std::string ReadGrowth(const std::string& path, uint64_t* offset, size_t max_bytes = 1 << 20);

}  // namespace gswarm::client
