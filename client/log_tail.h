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

// The last `lines` lines of the file at `path`, reading at most its last 4 MiB. NOT_FOUND when
// there is no such file.
absl::StatusOr<LogTail> TailFile(const std::string& path, int lines);

// What the file gained since `*offset` (at most `max_bytes`), advancing `*offset`. A file that
// shrank (it was rotated) is read again from its start.
std::string ReadGrowth(const std::string& path, uint64_t* offset, size_t max_bytes = 1 << 20);

}  // namespace gswarm::client
