#include "client/stream_hasher.h"

#include <fcntl.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/paths.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

// <part>.hash: magic, the offset it covers, each state with its length, then an XXH64 of all of
// that, so a torn or foreign file is recognised and ignored.
constexpr std::string_view kMagic = "gswarm-hash-checkpoint-1\n";

void PutU64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }

bool GetU64(std::string_view& in, uint64_t* v) {
  if (in.size() < 8) return false;
  std::memcpy(v, in.data(), 8);
  in.remove_prefix(8);
  return true;
}

bool GetBytes(std::string_view& in, std::string_view* bytes) {
  uint64_t len = 0;
  if (!GetU64(in, &len) || in.size() < len) return false;
  *bytes = in.substr(0, len);
  in.remove_prefix(len);
  return true;
}

// The parts of a checkpoint file; nullopt when it is torn, foreign or of another version. The
// views point into `file`.
struct Checkpoint {
  uint64_t offset = 0;
  std::string_view sha256_state;
  std::string_view xxh3_state;
};

std::optional<Checkpoint> ParseCheckpoint(std::string_view file) {
  if (file.size() < kMagic.size() + 8 || file.substr(0, kMagic.size()) != kMagic) {
    return std::nullopt;
  }
  uint64_t sum = 0;
  std::memcpy(&sum, file.data() + file.size() - 8, 8);
  if (sum != XXH64(file.data(), file.size() - 8, 0)) return std::nullopt;
  std::string_view in = file.substr(kMagic.size(), file.size() - kMagic.size() - 8);
  Checkpoint c;
  if (!GetU64(in, &c.offset) || !GetBytes(in, &c.sha256_state) || !GetBytes(in, &c.xxh3_state) ||
      !in.empty()) {
    return std::nullopt;
  }
  return c;
}

// Written without fsync: a checkpoint is rebuilt from the data when it is lost, and an fsync per
// 64 MiB would stall the hashing thread on the disk. temp + rename keeps it whole or absent.
void WriteCheckpoint(const std::string& path, const std::string& contents) {
  const std::string temp = path + ".tmp";
  common::UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  bool ok = fd.get() >= 0;
  for (size_t done = 0; ok && done < contents.size();) {
    const ssize_t n = ::write(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && ::close(fd.release()) == 0 && ::rename(temp.c_str(), path.c_str()) == 0;
  if (!ok) {
    // A full disk, most likely: the download itself will say so; resuming re-reads more.
    spdlog::debug("cannot write the hash checkpoint {}: {}", path, std::strerror(errno));
    ::unlink(temp.c_str());
  }
}

}  // namespace

StreamHasher::StreamHasher(bool sha256, std::string checkpoint_path)
    : with_sha256_(sha256), checkpoint_path_(std::move(checkpoint_path)) {
  if (with_sha256_) {
    filling_.reserve(kBlockBytes);
    thread_ = std::thread([this] { HashLoop(); });
  }
}

StreamHasher::~StreamHasher() {
  {
    gswarm::MutexLock lock(&mu_);
    quit_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void StreamHasher::HashLoop() {
  for (;;) {
    std::vector<char> block;
    {
      gswarm::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return quit_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // quitting
      block = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    HashBlock(block);
    gswarm::MutexLock lock(&mu_);
    busy_ = false;
    block.clear();
    spare_.push_back(std::move(block));
  }
}

void StreamHasher::HashBlock(const std::vector<char>& block) {
  // In checkpoint-sized steps, so that a checkpoint lands exactly on its boundary.
  size_t done = 0;
  while (done < block.size()) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(block.size() - done, next_checkpoint_ - hashed_));
    sha256_.Update(block.data() + done, n);
    hashed_ += n;
    done += n;
    if (hashed_ < next_checkpoint_) continue;
    std::string xxh3_state;
    {
      // Fed (and snapshotted) before this block was queued.
      gswarm::MutexLock lock(&mu_);
      while (!xxh3_snapshots_.empty() && xxh3_snapshots_.front().first <= hashed_) {
        if (xxh3_snapshots_.front().first == hashed_) {
          xxh3_state = std::move(xxh3_snapshots_.front().second);
        }
        xxh3_snapshots_.pop_front();
      }
    }
    if (!xxh3_state.empty()) SaveCheckpoint(hashed_, sha256_.SaveState(), xxh3_state);
    next_checkpoint_ += kCheckpointBytes;
  }
}

void StreamHasher::AtCheckpoint() {
  if (checkpoint_path_.empty()) return;
  if (!with_sha256_) {
    SaveCheckpoint(fed_, "", xxh3_.SaveState());
    return;
  }
  gswarm::MutexLock lock(&mu_);
  xxh3_snapshots_.emplace_back(fed_, xxh3_.SaveState());
}

void StreamHasher::SaveCheckpoint(uint64_t offset, std::string_view sha256_state,
                                  std::string_view xxh3_state) {
  std::string out(kMagic);
  PutU64(out, offset);
  PutU64(out, sha256_state.size());
  out += sha256_state;
  PutU64(out, xxh3_state.size());
  out += xxh3_state;
  PutU64(out, XXH64(out.data(), out.size(), 0));
  WriteCheckpoint(checkpoint_path_, out);
}

void StreamHasher::Restart() {
  filling_.clear();
  Drain();
  {
    gswarm::MutexLock lock(&mu_);
    xxh3_snapshots_.clear();
  }
  sha256_.Reset();
  xxh3_.Reset();
  SetOffset(0);
}

void StreamHasher::SetOffset(uint64_t offset) {
  hashed_ = fed_ = written_behind_ = offset;
  next_checkpoint_ = next_snapshot_ = (offset / kCheckpointBytes + 1) * kCheckpointBytes;
}

absl::StatusOr<uint64_t> StreamHasher::Resume(const std::string& part_path, uint64_t size) {
  Restart();
  uint64_t from = 0;
  absl::StatusOr<std::string> saved =
      checkpoint_path_.empty() ? absl::NotFoundError("") : common::ReadFile(checkpoint_path_);
  if (saved.ok()) {
    const std::optional<Checkpoint> checkpoint = ParseCheckpoint(*saved);
    if (checkpoint && checkpoint->offset <= size &&
        (!with_sha256_ || sha256_.RestoreState(checkpoint->sha256_state)) &&
        xxh3_.RestoreState(checkpoint->xxh3_state)) {
      from = checkpoint->offset;
    } else {
      sha256_.Reset();
      xxh3_.Reset();
      spdlog::info("{}: hash checkpoint not usable; re-reading the {} bytes already there",
                   part_path, size);
    }
  }
  ASSIGN_OR_RETURN(uint64_t read,
                   HashFileRange(part_path, with_sha256_ ? &sha256_ : nullptr, &xxh3_, from, size));
  if (from + read != size) {
    return absl::DataLossError(absl::StrCat(part_path, " got shorter while it was read"));
  }
  SetOffset(size);
  return read;
}

void StreamHasher::Flush() {
  if (filling_.empty()) return;
  std::vector<char> next;
  {
    gswarm::MutexLock lock(&mu_);
    auto room = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return queue_.size() < kMaxQueued; };
    mu_.Await(absl::Condition(&room));
    queue_.push_back(std::move(filling_));
    if (!spare_.empty()) {
      next = std::move(spare_.back());
      spare_.pop_back();
    }
  }
  filling_ = std::move(next);
  filling_.clear();
  filling_.reserve(kBlockBytes);
}

void StreamHasher::Queue(const char* data, size_t n) {
  while (n > 0) {
    const size_t take = std::min(n, kBlockBytes - filling_.size());
    filling_.insert(filling_.end(), data, data + take);
    data += take;
    n -= take;
    if (filling_.size() == kBlockBytes) Flush();
  }
}

void StreamHasher::Feed(const char* data, size_t n) {
  while (n > 0) {
    // Up to the next checkpoint boundary at most, where the XXH3 state is snapshotted.
    const size_t take = static_cast<size_t>(std::min<uint64_t>(n, next_snapshot_ - fed_));
    xxh3_.Update(data, take);
    fed_ += take;
    // The snapshot before the bytes that reach the boundary are queued: the hashing thread may
    // get there first and would find no XXH3 state to pair with its SHA-256 one.
    if (fed_ == next_snapshot_) {
      AtCheckpoint();
      next_snapshot_ += kCheckpointBytes;
    }
    if (with_sha256_) Queue(data, take);
    data += take;
    n -= take;
  }
  if (write_behind_fd_ >= 0 && fed_ - written_behind_ >= kBlockBytes) {
    common::StartWriteback(write_behind_fd_, written_behind_, fed_ - written_behind_);
    written_behind_ = fed_;
  }
}

void StreamHasher::Drain() {
  if (!with_sha256_) return;
  Flush();
  gswarm::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return queue_.empty() && !busy_; };
  mu_.Await(absl::Condition(&idle));
}

void StreamHasher::Reset() {
  Restart();
  Discard();
}

StreamDigests StreamHasher::Finish() {
  Drain();
  StreamDigests digests;
  if (with_sha256_) digests.sha256 = sha256_.HexDigest();
  digests.xxh3_128 = xxh3_.HexDigest();
  return digests;
}

void StreamHasher::Discard() {
  if (!checkpoint_path_.empty()) ::unlink(checkpoint_path_.c_str());
}

}  // namespace gswarm::client
