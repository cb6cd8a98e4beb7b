#include "common/paths.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/status.h"

namespace gswarm::common {
namespace {

// "<what>: <strerror>", with the status code that matches errno (NOT_FOUND for ENOENT, ...).
absl::Status ErrnoStatus(int err, absl::string_view what) { return absl::ErrnoToStatus(err, what); }

// `dir` + "/" + `name`, without doubling the slash when `dir` is "/".
std::string Join(absl::string_view dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

// Closes `fd` when it goes out of scope unless released.
// A name no other writer (thread or process) picks: pid, time and a process-wide counter.
std::string TempSuffix() {
  static std::atomic<uint64_t> counter{0};
  uint64_t mix =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(mix));
  return absl::StrCat(::getpid(), ".", buf);
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot write ", path));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

std::string HomeDir() {
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') return home;
  long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<size_t>(size) : 16384);
  struct passwd pw;
  struct passwd* result = nullptr;
  if (::getpwuid_r(::geteuid(), &pw, buf.data(), buf.size(), &result) == 0 && result != nullptr &&
      result->pw_dir != nullptr && result->pw_dir[0] != '\0') {
    return result->pw_dir;
  }
  return "/";
}

std::string ExpandUser(std::string_view path) {
  if (path == "~") return HomeDir();
  if (path.substr(0, 2) == "~/") {
    return Join(HomeDir(), absl::string_view(path.data() + 2, path.size() - 2));
  }
  return std::string(path);
}

std::string StateDir() { return Join(HomeDir(), ".cache/gswarm"); }

std::string DefaultConfigPath() { return Join(HomeDir(), ".gswarm.conf"); }

absl::Status MakeDirs(const std::string& path, unsigned mode) {
  if (path.empty()) return absl::InvalidArgumentError("cannot create a directory with no name");
  // Create every prefix that ends before a '/', then the path itself.
  for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
    std::string prefix = path.substr(0, pos);
    if (!prefix.empty() && prefix.back() != '/') {
      if (::mkdir(prefix.c_str(), static_cast<mode_t>(mode)) != 0) {
        int err = errno;
        // An existing directory is fine whatever mkdir said (EEXIST, or EROFS/EACCES on some
        // file systems).
        struct stat st;
        bool is_dir = ::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
        if (!is_dir && err == EEXIST) {
          return absl::FailedPreconditionError(absl::StrCat(
              "cannot create directory ", path, ": ", prefix, " exists and is not a directory"));
        }
        if (!is_dir) return ErrnoStatus(err, absl::StrCat("cannot create directory ", prefix));
      }
    }
    if (pos == std::string::npos) break;
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents,
                                 unsigned mode) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": not a file name"));
  }

  std::string temp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    temp = Join(dir, absl::StrCat(".", name, ".tmp.", TempSuffix()));
    // 0600 until the contents are complete; fchmod sets the final mode (umask does not apply).
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && (errno != EEXIST || attempt >= 10)) {
      return ErrnoStatus(errno, absl::StrCat("cannot write ", path, ": cannot create ", temp));
    }
  }
  common::UniqueFd closer(fd);
  auto fail = [&](absl::Status status) {
    ::close(closer.release());
    ::unlink(temp.c_str());
    return status;
  };

  if (absl::Status st = WriteAll(fd, contents, temp); !st.ok()) return fail(st);
  if (::fsync(fd) != 0) return fail(ErrnoStatus(errno, absl::StrCat("cannot fsync ", temp)));
  if (::fchmod(fd, static_cast<mode_t>(mode)) != 0) {
    return fail(ErrnoStatus(errno, absl::StrCat("cannot chmod ", temp)));
  }
  if (::close(closer.release()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return ErrnoStatus(err, absl::StrCat("cannot write ", temp));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return ErrnoStatus(err, absl::StrCat("cannot rename ", temp, " to ", path));
  }
  // Make the rename itself durable.
  return FsyncDir(dir);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open ", path));
  common::UniqueFd closer(fd);
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot read ", path));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  return data;
}

std::string Hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

std::string ModelFilesRoot(const std::string& model_dir) {
  char resolved[PATH_MAX];
  if (::realpath(model_dir.c_str(), resolved) == nullptr) return "";
  std::string root = resolved;
  // .../models--org--name/snapshots/<commit>: the repo's folder.
  const size_t last = root.rfind('/');
  const size_t parent =
      last == std::string::npos || last == 0 ? std::string::npos : root.rfind('/', last - 1);
  if (parent != std::string::npos && root.compare(parent, last - parent, "/snapshots") == 0) {
    const size_t repo = root.rfind('/', parent - 1);
    if (repo != std::string::npos && root.compare(repo + 1, 8, "models--") == 0) {
      return root.substr(0, parent);
    }
  }
  return root;
}

bool ResolvesBeneath(const std::string& path, const std::string& root) {
  if (root.empty()) return false;
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) return false;
  const std::string target = resolved;
  return target.size() > root.size() && target.compare(0, root.size(), root) == 0 &&
         (root.back() == '/' || target[root.size()] == '/');
}

absl::Status RemoveOutOfSight(const std::string& dir, const std::string& hidden_dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot remove ", dir));
  }
  RETURN_IF_ERROR(MakeDirs(hidden_dir));
  std::random_device random;
  const std::string trash = absl::StrCat(hidden_dir, "/", dir.substr(dir.rfind('/') + 1),
                                         ".removing.", absl::Hex(random()), absl::Hex(random()));
  if (::rename(dir.c_str(), trash.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();  // removed meanwhile
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot remove ", dir));
  }
  std::error_code ec;
  std::filesystem::remove_all(trash, ec);
  if (ec) return absl::InternalError(absl::StrCat("removing ", trash, ": ", ec.message()));
  return absl::OkStatus();
}

void RemoveLeftoverTrash(const std::string& hidden_dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(hidden_dir, ec)) {
    if (entry.path().filename().string().find(".removing.") == std::string::npos) continue;
    std::error_code remove_ec;
    std::filesystem::remove_all(entry.path(), remove_ec);
  }
}

}  // namespace gswarm::common
