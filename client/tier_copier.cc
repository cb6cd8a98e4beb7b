#include "client/tier_copier.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "client/tier_copy_plan.h"
#include "common/fd.h"
#include "common/mutex.h"
#include "common/paths.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace fs = std::filesystem;
namespace {

using tier_copy::FileJob;
using tier_copy::PlanJobs;
using tier_copy::RecordDigests;

// The kernel paths move this much per call at least: few syscalls, and still a cancel check
// every few tens of milliseconds.
constexpr size_t kMinKernelChunk = 64 << 20;
// The read/write path hashes and writes its buffer in slices this big, so that each slice is
// still in the CPU cache when write() copies it out after the hash has read it.
constexpr size_t kSlice = 1 << 20;

// The mapped path maps the source this much at a time, and asks the kernel to read the next
// window ahead while this one is hashed and written.
constexpr size_t kMapWindow = 64 << 20;

constexpr const char* kMethodNames[] = {"copy_file_range", "sendfile", "read/write", "mmap+write"};

using common::UniqueFd;

// Methods the kernel refused, per (source device, target device): later files skip them.
struct RefusedMethods {
  gswarm::Mutex mu;
  std::set<std::tuple<dev_t, dev_t, int>> pairs ABSL_GUARDED_BY(mu);
};

RefusedMethods& Refused() {
  static RefusedMethods* const refused = new RefusedMethods;  // never destroyed
  return *refused;
}

bool WasRefused(dev_t src, dev_t dst, CopyMethod method) {
  RefusedMethods& refused = Refused();
  gswarm::MutexLock lock(&refused.mu);
  return refused.pairs.count({src, dst, static_cast<int>(method)}) > 0;
}

void RememberRefused(dev_t src, dev_t dst, CopyMethod method, int err) {
  RefusedMethods& refused = Refused();
  gswarm::MutexLock lock(&refused.mu);
  if (refused.pairs.insert({src, dst, static_cast<int>(method)}).second) {
    spdlog::info("copy: {} refused between devices {:#x} -> {:#x} ({}), falling back",
                 kMethodNames[static_cast<int>(method)], src, dst, std::strerror(err));
  }
}

bool IsRefusal(int err) {
  return err == EXDEV || err == EINVAL || err == ENOSYS || err == EOPNOTSUPP;
}

absl::Status FsyncPath(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  if (::fsync(fd.get()) != 0)
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", path));
  return absl::OkStatus();
}

// State the workers share with the calling thread.
struct Run {
  std::vector<FileJob>& jobs;  // each worker writes only the jobs it took
  const std::string& staging_dir;
  const std::string& target_dir;
  const CopyOptions& options;
  const std::atomic<bool>* cancel;

  std::atomic<uint64_t> bytes_done{0};
  std::atomic<uint32_t> files_done{0};
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> by_method[4] = {0, 0, 0, 0};
  std::atomic<uint32_t> by_xxh3{0};
  std::atomic<uint32_t> by_sha256{0};

  gswarm::Mutex mu;
  absl::Status error ABSL_GUARDED_BY(mu);
  int running ABSL_GUARDED_BY(mu) = 0;

  bool ShouldStop() const {
    return stop.load(std::memory_order_relaxed) ||
           (cancel != nullptr && cancel->load(std::memory_order_relaxed));
  }
  absl::Status Stopped() const { return absl::CancelledError("copy cancelled"); }

  void Fail(absl::Status status) {
    gswarm::MutexLock lock(&mu);
    if (error.ok()) error = std::move(status);
    stop = true;
  }

  // A write-side errno as a status: a full disk names the target.
  absl::Status WriteError(int err, const FileJob& job, const char* what) const {
    if (err == ENOSPC || err == EDQUOT) {
      return absl::ResourceExhaustedError(absl::StrCat("target ", target_dir,
                                                       " is out of space writing ", job.rel, " (",
                                                       std::strerror(err), ")"));
    }
    return absl::ErrnoToStatus(
        err, absl::StrCat(what, " ", job.rel, " from ", job.src, " to ", staging_dir));
  }
};

// Asks the kernel to start reading the next chunk while this one is copied: sendfile's own
// readahead, a pipe-sized step at a time, left a cold source at about half of cp's speed (see
// bench/README.md, tier_copy). On a warm source it costs a page cache lookup.
void ReadAhead(int fd, uint64_t from, size_t len) {
  ::posix_fadvise(fd, static_cast<off_t>(from), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
}

// Moves bytes [*off, job.size) with copy_file_range or sendfile. Returns OK when done, and sets
// `*refused` (with the status OK) when the kernel will not do it for these files.
absl::Status KernelCopy(Run& run, const FileJob& job, CopyMethod method, int in, int out,
                        uint64_t* off, int* refused) {
  const size_t chunk = std::max(kMinKernelChunk, run.options.block_bytes);
  if (method == CopyMethod::kSendfile && ::lseek(out, static_cast<off_t>(*off), SEEK_SET) < 0) {
    return run.WriteError(errno, job, "cannot seek in");
  }
  while (*off < job.size) {
    if (run.ShouldStop()) return run.Stopped();
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, job.size - *off));
    ReadAhead(in, *off + want, chunk);
    ssize_t n;
    if (method == CopyMethod::kCopyFileRange) {
      loff_t in_off = static_cast<loff_t>(*off), out_off = static_cast<loff_t>(*off);
      n = ::copy_file_range(in, &in_off, out, &out_off, want, 0);
    } else {
      off_t in_off = static_cast<off_t>(*off);
      n = ::sendfile(out, in, &in_off, want);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (IsRefusal(errno)) {
        *refused = errno;
        return absl::OkStatus();
      }
      return run.WriteError(errno, job, "cannot copy");
    }
    if (n == 0) {
      // Some filesystems report 0 instead of refusing; after the first chunk it means the source
      // got shorter.
      if (*off == 0) {
        *refused = EOPNOTSUPP;
        return absl::OkStatus();
      }
      break;
    }
    *off += static_cast<uint64_t>(n);
    run.bytes_done.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

// A source file truncated while it is mapped raises SIGBUS at the next access to a page past its
// new end. The mapped path's reads run under this guard: the handler jumps back out of the access
// and the copy fails naming the file, instead of the agent dying. A SIGBUS anywhere else gets the
// default action (the process dies with a core, as before).
thread_local sigjmp_buf* t_sigbus_jump = nullptr;

void OnSigbus(int sig, siginfo_t*, void*) {
  if (t_sigbus_jump != nullptr) siglongjmp(*t_sigbus_jump, 1);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void InstallSigbusGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action = {};
    action.sa_sigaction = &OnSigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, nullptr);
  });
}

// Feeds `len` mapped bytes to the hashers; false when the mapping went away under them (SIGBUS).
// Nothing here may own resources: a SIGBUS jumps over these frames.
bool HashMapped(const char* data, size_t len, Xxh3* xxh3, Sha256* sha256) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 0) != 0) {
    t_sigbus_jump = nullptr;
    return false;
  }
  t_sigbus_jump = &jump;
  if (xxh3 != nullptr) xxh3->Update(data, len);
  if (sha256 != nullptr) sha256->Update(data, len);
  t_sigbus_jump = nullptr;
  return true;
}

struct Unmap {
  size_t len;
  void operator()(void* p) const { ::munmap(p, len); }
};

// Maps [*off, job.size) of `in` a window at a time; each slice is hashed in place and written out
// of the same mapping while it is still in the CPU cache.
absl::Status MappedCopy(Run& run, const FileJob& job, int in, int out, uint64_t* off, Xxh3* xxh3,
                        Sha256* sha256) {
  InstallSigbusGuard();
  const auto truncated = [&job](uint64_t at) {
    return absl::DataLossError(absl::StrCat("source file ", job.src, " was truncated at byte ", at,
                                            " while it was copied (changed during the copy?)"));
  };
  while (*off < job.size) {
    if (run.ShouldStop()) return run.Stopped();
    const size_t window = static_cast<size_t>(std::min<uint64_t>(kMapWindow, job.size - *off));
    ReadAhead(in, *off + window, kMapWindow);
    void* mapped =
        ::mmap(nullptr, window, PROT_READ, MAP_SHARED | MAP_POPULATE, in, static_cast<off_t>(*off));
    if (mapped == MAP_FAILED) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot map ", job.src));
    }
    std::unique_ptr<void, Unmap> unmap(mapped, Unmap{window});
    const char* base = static_cast<const char*>(mapped);
    for (size_t slice = 0; slice < window; slice += kSlice) {
      const size_t len = std::min(kSlice, window - slice);
      if (!HashMapped(base + slice, len, xxh3, sha256)) return truncated(*off + slice);
      for (size_t written = 0; written < len;) {
        ssize_t n = ::pwrite(out, base + slice + written, len - written,
                             static_cast<off_t>(*off + slice + written));
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EFAULT) return truncated(*off + slice + written);
          return run.WriteError(errno, job, "cannot write");
        }
        written += static_cast<size_t>(n);
      }
      run.bytes_done.fetch_add(len, std::memory_order_relaxed);
    }
    *off += window;
  }
  return absl::OkStatus();
}

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

// pread into a large aligned buffer, pwrite: from *off to job.size.
absl::Status ReadWriteCopy(Run& run, const FileJob& job, int in, int out, uint64_t* off,
                           std::unique_ptr<char, FreeDeleter>& buffer, size_t buffer_size) {
  while (*off < job.size) {
    if (run.ShouldStop()) return run.Stopped();
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buffer_size, job.size - *off));
    size_t got = 0;
    while (got < want) {
      ssize_t n = ::pread(in, buffer.get() + got, want - got, static_cast<off_t>(*off + got));
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", job.src));
      }
      if (n == 0) break;  // the source got shorter; caught by the size check
      got += static_cast<size_t>(n);
    }
    for (size_t slice = 0; slice < got; slice += kSlice) {
      const size_t len = std::min(kSlice, got - slice);
      const char* data = buffer.get() + slice;
      for (size_t written = 0; written < len;) {
        ssize_t n = ::pwrite(out, data + written, len - written,
                             static_cast<off_t>(*off + slice + written));
        if (n < 0) {
          if (errno == EINTR) continue;
          return run.WriteError(errno, job, "cannot write");
        }
        written += static_cast<size_t>(n);
      }
      run.bytes_done.fetch_add(len, std::memory_order_relaxed);
    }
    *off += got;
    if (got < want) break;
  }
  return absl::OkStatus();
}

absl::Status CopyOneFile(Run& run, FileJob& job, std::unique_ptr<char, FreeDeleter>& buffer,
                         size_t buffer_size) {
  UniqueFd in(::open(job.src.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", job.src));
  ::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  const std::string dst = absl::StrCat(run.staging_dir, "/", job.rel);
  UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (out.get() < 0) return run.WriteError(errno, job, "cannot create");
  struct stat in_st, out_st;
  if (::fstat(in.get(), &in_st) != 0 || ::fstat(out.get(), &out_st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat ", job.src));
  }

  uint64_t off = 0;
  CopyMethod used = CopyMethod::kReadWrite;
  std::unique_ptr<Xxh3> xxh3;
  std::unique_ptr<Sha256> sha256;
  if (job.verify) {
    used = CopyMethod::kMappedWrite;
    xxh3 = std::make_unique<Xxh3>();
    if (job.xxh3.empty() && !job.sha256.empty()) sha256 = std::make_unique<Sha256>();
    RETURN_IF_ERROR(MappedCopy(run, job, in.get(), out.get(), &off, xxh3.get(), sha256.get()));
  } else {
    const int first =
        static_cast<int>(run.options.first_method.value_or(CopyMethod::kCopyFileRange));
    for (int m = first; m < static_cast<int>(CopyMethod::kReadWrite); ++m) {
      const CopyMethod method = static_cast<CopyMethod>(m);
      if (WasRefused(in_st.st_dev, out_st.st_dev, method)) continue;
      int refused = 0;
      RETURN_IF_ERROR(KernelCopy(run, job, method, in.get(), out.get(), &off, &refused));
      if (refused == 0) {
        used = method;
        break;
      }
      RememberRefused(in_st.st_dev, out_st.st_dev, method, refused);
    }
  }
  if (off < job.size && !job.verify) {
    used = CopyMethod::kReadWrite;
    RETURN_IF_ERROR(ReadWriteCopy(run, job, in.get(), out.get(), &off, buffer, buffer_size));
  }
  if (off != job.size) {
    return absl::DataLossError(absl::StrCat("source file ", job.src, " ended after ", off, " of ",
                                            job.size, " bytes (changed during the copy?)"));
  }
  if (xxh3 != nullptr) {
    const std::string digest = xxh3->HexDigest();
    if (!job.xxh3.empty()) {
      if (digest != job.xxh3) {
        return absl::DataLossError(absl::StrCat("source file ", job.src, " has xxh3_128 ", digest,
                                                ", but its manifest records ", job.xxh3));
      }
      run.by_xxh3.fetch_add(1, std::memory_order_relaxed);
    } else if (sha256 != nullptr) {
      const std::string sha = sha256->HexDigest();
      if (sha != job.sha256) {
        return absl::DataLossError(absl::StrCat("source file ", job.src, " has sha256 ", sha,
                                                ", but its manifest records ", job.sha256));
      }
      run.by_sha256.fetch_add(1, std::memory_order_relaxed);
    }
    if (job.xxh3.empty()) job.computed_xxh3 = digest;
  }
  if (::fsync(out.get()) != 0) return run.WriteError(errno, job, "cannot fsync");
  if (::close(out.release()) != 0) return run.WriteError(errno, job, "cannot close");
  run.by_method[static_cast<int>(used)].fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

void Worker(Run& run) {
  // One buffer per worker, aligned for the page cache; huge pages where the kernel allows.
  constexpr size_t kAlign = 2 << 20;
  const size_t buffer_size =
      (std::max<size_t>(run.options.block_bytes, kSlice) + kAlign - 1) / kAlign * kAlign;
  std::unique_ptr<char, FreeDeleter> buffer;
  for (;;) {
    const size_t i = run.next.fetch_add(1);
    if (i >= run.jobs.size() || run.ShouldStop()) break;
    if (buffer == nullptr) {
      buffer.reset(static_cast<char*>(std::aligned_alloc(kAlign, buffer_size)));
      if (buffer == nullptr) {
        run.Fail(absl::ResourceExhaustedError("copy: cannot allocate a buffer"));
        break;
      }
      ::madvise(buffer.get(), buffer_size, MADV_HUGEPAGE);
    }
    absl::Status status = CopyOneFile(run, run.jobs[i], buffer, buffer_size);
    if (!status.ok()) {
      run.Fail(std::move(status));
      break;
    }
    run.files_done.fetch_add(1, std::memory_order_relaxed);
  }
  gswarm::MutexLock lock(&run.mu);
  --run.running;
}

// Copies into `staging_dir`, which exists and is empty; fsyncs what it wrote.
absl::Status CopyAll(Run& run, const std::function<void(const CopyProgress&)>& on_progress) {
  // .gswarm/ always: the target tier keeps its per-model bookkeeping there.
  std::set<std::string> dirs = {run.staging_dir, run.staging_dir + "/.gswarm"};
  for (const FileJob& job : run.jobs) {
    for (fs::path p = fs::path(job.rel).parent_path(); !p.empty(); p = p.parent_path()) {
      dirs.insert(absl::StrCat(run.staging_dir, "/", p.string()));
    }
  }
  for (const std::string& dir : dirs) RETURN_IF_ERROR(common::MakeDirs(dir));

  CopyProgress progress;
  progress.files_total = static_cast<uint32_t>(run.jobs.size());
  for (const FileJob& job : run.jobs) progress.bytes_total += job.size;
  if (on_progress) on_progress(progress);

  const int workers =
      static_cast<int>(std::min<size_t>(std::max(run.options.parallel_files, 1), run.jobs.size()));
  std::vector<std::thread> threads;
  {
    gswarm::MutexLock lock(&run.mu);
    run.running = workers;
  }
  for (int i = 0; i < workers; ++i) threads.emplace_back(Worker, std::ref(run));
  auto all_done = [&run]() ABSL_SHARED_LOCKS_REQUIRED(run.mu) { return run.running == 0; };
  for (bool done = false; !done;) {
    {
      gswarm::MutexLock lock(&run.mu);
      done = run.mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Milliseconds(100));
    }
    if (run.cancel != nullptr && run.cancel->load()) run.Fail(run.Stopped());
    const uint64_t bytes = run.bytes_done.load();
    const uint32_t files = run.files_done.load();
    if (on_progress && (bytes != progress.bytes_done || files != progress.files_done)) {
      progress.bytes_done = bytes;
      progress.files_done = files;
      on_progress(progress);
    }
  }
  for (std::thread& t : threads) t.join();
  {
    gswarm::MutexLock lock(&run.mu);
    RETURN_IF_ERROR(run.error);
  }
  if (run.cancel != nullptr && run.cancel->load()) return run.Stopped();
  for (const std::string& dir : dirs) RETURN_IF_ERROR(FsyncPath(dir, O_RDONLY | O_DIRECTORY));
  return absl::OkStatus();
}

absl::Status RenameIntoPlace(const std::string& staging_dir, const std::string& target_dir) {
  int rc =
      ::renameat2(AT_FDCWD, staging_dir.c_str(), AT_FDCWD, target_dir.c_str(), RENAME_NOREPLACE);
  if (rc != 0 && errno == EINVAL) {  // a filesystem without RENAME_NOREPLACE
    struct stat st;
    if (::lstat(target_dir.c_str(), &st) == 0)
      errno = EEXIST;
    else
      rc = ::rename(staging_dir.c_str(), target_dir.c_str());
  }
  if (rc == 0) return absl::OkStatus();
  if (errno == EEXIST || errno == ENOTEMPTY) {
    return absl::FailedPreconditionError(absl::StrCat("target ", target_dir, " already exists"));
  }
  if (errno == EXDEV) {
    return absl::InvalidArgumentError(absl::StrCat("staging ", staging_dir, " and target ",
                                                   target_dir, " are on different filesystems"));
  }
  return absl::ErrnoToStatus(errno,
                             absl::StrCat("cannot rename ", staging_dir, " to ", target_dir));
}

}  // namespace

absl::StatusOr<uint64_t> CopyModelDir(const std::string& source_dir, const std::string& staging_dir,
                                      const std::string& target_dir, const CopyOptions& options,
                                      std::function<void(const CopyProgress&)> on_progress,
                                      const std::atomic<bool>* cancel) {
  const absl::Time start = absl::Now();
  if (options.stats != nullptr) *options.stats = CopyStats();
  struct stat st;
  if (::lstat(target_dir.c_str(), &st) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("target ", target_dir, " already exists"));
  }
  std::vector<FileJob> jobs;
  ASSIGN_OR_RETURN(std::optional<ModelManifest> manifest,
                   PlanJobs(source_dir, options.verify, jobs));

  std::error_code ec;
  fs::remove_all(staging_dir, ec);  // a leftover from a copy that crashed
  const std::string staging_parent = fs::path(staging_dir).parent_path().string();
  const std::string target_parent = fs::path(target_dir).parent_path().string();
  RETURN_IF_ERROR(common::MakeDirs(staging_parent));
  RETURN_IF_ERROR(common::MakeDirs(target_parent));

  Run run{jobs, staging_dir, target_dir, options, cancel};
  absl::Status status = CopyAll(run, on_progress);
  uint32_t recorded = 0;
  if (status.ok() && manifest.has_value()) {
    absl::StatusOr<uint32_t> n = RecordDigests(jobs, *manifest, source_dir, staging_dir);
    status = n.status();
    if (n.ok()) recorded = *n;
  }
  if (status.ok()) status = RenameIntoPlace(staging_dir, target_dir);
  const uint32_t hashed = run.by_xxh3.load() + run.by_sha256.load();
  if (options.stats != nullptr) {
    for (int m = 0; m < 4; ++m) options.stats->files_by_method[m] = run.by_method[m].load();
    options.stats->files_hashed = hashed;
    options.stats->files_by_xxh3 = run.by_xxh3.load();
    options.stats->files_by_sha256 = run.by_sha256.load();
    options.stats->digests_recorded = recorded;
  }
  if (!status.ok()) {
    fs::remove_all(staging_dir, ec);
    if (ec) spdlog::warn("copy: cannot remove staging {}: {}", staging_dir, ec.message());
    return status;
  }
  RETURN_IF_ERROR(FsyncPath(target_parent, O_RDONLY | O_DIRECTORY));
  if (staging_parent != target_parent) {
    RETURN_IF_ERROR(FsyncPath(staging_parent, O_RDONLY | O_DIRECTORY));
  }
  const uint64_t bytes = run.bytes_done.load();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  spdlog::info(
      "copied {} -> {}: {} files, {} bytes in {:.2f} s ({:.2f} GB/s; {} verified: {} by xxh3, {} "
      "by sha256; {} xxh3 digests recorded)",
      source_dir, target_dir, jobs.size(), bytes, seconds,
      seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0, hashed, run.by_xxh3.load(),
      run.by_sha256.load(), recorded);
  return bytes;
}

}  // namespace gswarm::client
