#pragma once

// Incremental digests for hashing files while they are written: SHA-256 (the Hub's contract,
// OpenSSL) and XXH3-128 (GSwarm's fast digest inside the cluster, libxxhash). Both can save their
// state as bytes and restore it, so that a partial download resumes its hash from a checkpoint
// instead of re-reading the whole partial file.
//
// Thread safety: not thread-safe; each stream of bytes owns its hasher.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

struct SHA256state_st;
struct XXH3_state_s;

namespace gswarm::client {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  // Starts over, as if newly constructed.
  void Reset();
  void Update(const void* data, size_t size);
  // The lowercase hex digest of everything given since the last Reset. Ends the stream: call
  // Reset before the next Update.
  std::string HexDigest();

  // The state after the bytes given so far, and back: valid only for the same OpenSSL on the
  // same kind of machine (RestoreState returns false for anything else and leaves the hasher
  // reset).
  std::string SaveState() const;
  bool RestoreState(std::string_view state);

 private:
  std::unique_ptr<SHA256state_st> ctx_;
};

class Xxh3 {
 public:
  Xxh3();
  ~Xxh3();
  Xxh3(const Xxh3&) = delete;
  Xxh3& operator=(const Xxh3&) = delete;

  void Reset();
  void Update(const void* data, size_t size);
  // The 32-hex-digit XXH3-128 of everything given since the last Reset (the stream may go on).
  std::string HexDigest() const;

  // As Sha256's: the same libxxhash version only.
  std::string SaveState() const;
  bool RestoreState(std::string_view state);

 private:
  XXH3_state_s* state_;
};

// Whether `digest` is a lowercase hex XXH3-128 (32 digits).
bool IsXxh3Digest(std::string_view digest);

// Feeds the bytes [from, limit) of the file at `path` (all of it by default) into `sha256` and
// `xxh3` (either may be null), e.g. to seed the hash of a partial download that continues past
// them. Returns the bytes read.
absl::StatusOr<uint64_t> HashFileRange(const std::string& path, Sha256* sha256, Xxh3* xxh3,
                                       uint64_t from = 0, uint64_t limit = UINT64_MAX);

// The hex SHA-256 of the whole file at `path`.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);
// The hex XXH3-128 of the whole file at `path`.
absl::StatusOr<std::string> Xxh3OfFile(const std::string& path);

}  // namespace gswarm::client
