#pragma once

// Hashes the bytes a download appends to its .part file: SHA-256 (the slow digest) on a thread
// of its own, so that it overlaps receiving and writing instead of running between them, and
// XXH3-128 (fast) on the caller's thread as the bytes are fed, which also starts their disk
// writeback: the SHA-256 thread, the limit on a machine without SHA instructions, does nothing
// else. The hash state is saved beside the partial file (<part>.hash) every kCheckpointBytes, so
// that a download resumed after a crash re-reads at most the bytes since the last checkpoint, not
// the whole partial file.
//
// The checkpoint is written after the bytes it covers were written to the .part (the caller
// appends before it feeds), so its offset never runs ahead of the file after a process crash;
// after a power loss it may (the .part was not fsync'd), which the final digest check catches
// and answers by fetching the file again. The checkpoint is an optimisation: anything wrong with
// it (torn, another library version, longer than the file) means re-reading the whole prefix.
//
// Thread safety: Feed, Reset, Resume and Finish from one thread (the fetching one); the SHA-256
// thread is internal.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "client/sha256.h"
#include "common/mutex.h"

namespace gswarm::client {

struct StreamDigests {
  std::string sha256;    // empty when not computed
  std::string xxh3_128;  // always computed
};

class StreamHasher {
 public:
  static constexpr uint64_t kCheckpointBytes = 64ull << 20;

  // `sha256`: compute SHA-256 too (Hub downloads), on a thread started here; XXH3-128 always
  // (a peer's download: no thread). `checkpoint_path` empty: no checkpoints.
  StreamHasher(bool sha256, std::string checkpoint_path);
  ~StreamHasher();
  StreamHasher(const StreamHasher&) = delete;
  StreamHasher& operator=(const StreamHasher&) = delete;

  // Seeds the hashes with the first `size` bytes of the partial file at `part_path` (from its
  // checkpoint where one is valid). Returns the bytes it had to read from the file.
  absl::StatusOr<uint64_t> Resume(const std::string& part_path, uint64_t size);
  // The bytes that follow. Copies them for the SHA-256 thread; blocks while it is far behind.
  void Feed(const char* data, size_t n);
  // Back to zero bytes (the .part was truncated); removes the checkpoint.
  void Reset();
  // Waits for the SHA-256 thread; the digests of everything fed. Ends the stream: Reset before
  // feeding again.
  StreamDigests Finish();
  // Removes the checkpoint (the .part became the file, or is gone).
  void Discard();
  // From now on, Feed also starts the disk writeback of `fd` (the .part, where the bytes were
  // written before they were fed) every kBlockBytes, so that the fsync at the end finds little
  // left to write: receiving, hashing and writing to disk overlap.
  void WriteBehind(int fd) {
    write_behind_fd_ = fd;
    written_behind_ = fed_;
  }

  uint64_t bytes() const { return fed_; }

 private:
  static constexpr size_t kBlockBytes = 4 << 20;
  static constexpr size_t kMaxQueued = 4;

  void HashLoop();
  void HashBlock(const std::vector<char>& block);
  // The XXH3 state reached a checkpoint boundary (fed_): saved now without SHA-256, else handed
  // to the SHA-256 thread, which saves both once it gets there.
  void AtCheckpoint();
  void SaveCheckpoint(uint64_t offset, std::string_view sha256_state, std::string_view xxh3_state);
  void Queue(const char* data, size_t n);  // copies into blocks for the SHA-256 thread
  void Flush();                            // hands the block being filled to the SHA-256 thread
  void Drain();    // waits until the SHA-256 thread has hashed everything handed to it
  void Restart();  // Drain, then both states and every offset back to zero
  void SetOffset(uint64_t offset);  // the states cover `offset` bytes

  const bool with_sha256_;
  const std::string checkpoint_path_;

  // The caller's thread only.
  Xxh3 xxh3_;
  uint64_t fed_ = 0;
  uint64_t next_snapshot_ = kCheckpointBytes;
  int write_behind_fd_ = -1;
  uint64_t written_behind_ = 0;
  std::vector<char> filling_;

  gswarm::Mutex mu_;
  std::deque<std::vector<char>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<char>> spare_ ABSL_GUARDED_BY(mu_);
  // XXH3 states at checkpoint offsets the SHA-256 thread has not reached yet.
  std::deque<std::pair<uint64_t, std::string>> xxh3_snapshots_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool quit_ ABSL_GUARDED_BY(mu_) = false;

  // Touched by the SHA-256 thread only while it is busy, and by the caller only after Drain.
  Sha256 sha256_;
  uint64_t hashed_ = 0;
  uint64_t next_checkpoint_ = kCheckpointBytes;

  std::thread thread_;
};

}  // namespace gswarm::client
