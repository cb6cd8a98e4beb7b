#pragma once

// Reading untrusted input within bounds, for the model metadata readers: a read-only file whose
// reads never go past its end or a caller's cap, and a JSON parser that stops at a nesting depth
// and a value count (nlohmann's own DOM parser turns a few MB of "[[[[" or "[0,0,0" into
// gigabytes of nodes).

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace gswarm::common {

// A regular file opened read-only, symlinks followed. Immutable once opened: concurrent reads
// from several threads are safe (pread).
class ReadOnlyFile {
 public:
  // NOT_FOUND etc. from errno, or FAILED_PRECONDITION when `path` is not a regular file.
  static absl::StatusOr<ReadOnlyFile> Open(const std::string& path);

  ReadOnlyFile(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& other) noexcept;
  ~ReadOnlyFile();

  const std::string& path() const { return path_; }
  // The size when the file was opened.
  uint64_t size() const { return size_; }

  // Reads exactly `n` bytes at `offset` into `out`. An error naming the file when the file ends
  // first (it shrank since Open) or the read fails.
  absl::Status ReadAt(uint64_t offset, size_t n, char* out) const;

  // The whole file; INVALID_ARGUMENT naming the file when it is larger than `max_bytes`.
  absl::StatusOr<std::string> ReadAll(uint64_t max_bytes) const;

 private:
  ReadOnlyFile(int fd, uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)) {}

  int fd_ = -1;
  uint64_t size_ = 0;
  std::string path_;
};

struct JsonLimits {
  // Objects and arrays nested deeper than this are an error.
  int max_depth = 64;
  // Values of any kind (containers included) past this count are an error.
  uint64_t max_values = 1'000'000;
};

// Parses `text` as exactly one JSON value (whitespace around it allowed). Syntax errors and limits
// give INVALID_ARGUMENT starting with `what` (a file name). Duplicate keys: the last one wins.
absl::StatusOr<nlohmann::json> ParseJsonBounded(absl::string_view text, absl::string_view what,
                                                const JsonLimits& limits = {});

}  // namespace gswarm::common
