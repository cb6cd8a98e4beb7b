#include "common/bounded_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gswarm::common {

absl::StatusOr<ReadOnlyFile> ReadOnlyFile::Open(const std::string& path) {
  // O_NONBLOCK: a FIFO that has the name of a model file must not block the open; it is then
  // refused as not a regular file. Reads from regular files ignore the flag.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  ReadOnlyFile file(fd, 0, path);
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  }
  file.size_ = static_cast<uint64_t>(st.st_size);
  return file;
}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), size_(other.size_), path_(std::move(other.path_)) {}

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    path_ = std::move(other.path_);
  }
  return *this;
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status ReadOnlyFile::ReadAt(uint64_t offset, size_t n, char* out) const {
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path_));
    }
    if (got == 0) {
      return absl::DataLossError(absl::StrCat(path_, ": file ended at byte ", offset + done,
                                              " while reading ", n, " bytes at offset ", offset,
                                              " (did it change while being read?)"));
    }
    done += static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadOnlyFile::ReadAll(uint64_t max_bytes) const {
  if (size_ > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", size_, " bytes is larger than the ",
                                                   max_bytes, " bytes this reader accepts"));
  }
  std::string data(static_cast<size_t>(size_), '\0');
  if (absl::Status st = ReadAt(0, data.size(), data.data()); !st.ok()) return st;
  return data;
}

namespace {

using json = nlohmann::json;

// A SAX handler that builds the same DOM as nlohmann's parser but fails at `limits`. Only the
// innermost open container is ever appended to, so the pointers to the open ones stay valid.
class BoundedDomBuilder {
 public:
  BoundedDomBuilder(json* root, const JsonLimits& limits) : root_(root), limits_(limits) {}

  bool null() { return Add(nullptr) != nullptr; }
  bool boolean(bool value) { return Add(value) != nullptr; }
  bool number_integer(json::number_integer_t value) { return Add(value) != nullptr; }
  bool number_unsigned(json::number_unsigned_t value) { return Add(value) != nullptr; }
  bool number_float(json::number_float_t value, const json::string_t& /*text*/) {
    return Add(value) != nullptr;
  }
  bool string(json::string_t& value) { return Add(std::move(value)) != nullptr; }
  bool binary(json::binary_t& /*value*/) {
    error_ = "binary values are not JSON";
    return false;
  }
  bool start_object(std::size_t /*size*/) { return Open(json::object()); }
  bool key(json::string_t& key) {
    key_ = std::move(key);
    return true;
  }
  bool end_object() { return Close(); }
  bool start_array(std::size_t /*size*/) { return Open(json::array()); }
  bool end_array() { return Close(); }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, ..." without the bracketed id.
    absl::string_view what = e.what();
    if (size_t end = what.find("] "); !what.empty() && what[0] == '[' && end != what.npos) {
      what.remove_prefix(end + 2);
    }
    error_ = std::string(what);
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  json* Add(json&& value) {
    if (++values_ > limits_.max_values) {
      error_ = absl::StrCat("more than ", limits_.max_values, " values");
      return nullptr;
    }
    if (open_.empty()) {
      *root_ = std::move(value);
      return root_;
    }
    json& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(value);
    return &slot;
  }

  bool Open(json&& container) {
    if (open_.size() >= static_cast<size_t>(limits_.max_depth)) {
      error_ = absl::StrCat("nested deeper than ", limits_.max_depth, " levels");
      return false;
    }
    json* added = Add(std::move(container));
    if (added == nullptr) return false;
    open_.push_back(added);
    return true;
  }

  bool Close() {
    open_.pop_back();
    return true;
  }

  json* root_;
  JsonLimits limits_;
  std::vector<json*> open_;
  std::string key_;
  uint64_t values_ = 0;
  std::string error_;
};

}  // namespace

absl::StatusOr<json> ParseJsonBounded(absl::string_view text, absl::string_view what,
                                      const JsonLimits& limits) {
  json root;
  BoundedDomBuilder builder(&root, limits);
  try {
    if (json::sax_parse(text.data(), text.data() + text.size(), &builder)) return root;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": invalid JSON: ", e.what()));
  }
  const std::string& error = builder.error().empty() ? "parse failed" : builder.error();
  return absl::InvalidArgumentError(absl::StrCat(what, ": invalid JSON: ", error));
}

}  // namespace gswarm::common
