#pragma once

// Incremental SHA-256 over OpenSSL's EVP interface, for hashing files while they are written.
// Thread safety: not thread-safe; each stream of bytes owns its Sha256.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;

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

 private:
  EVP_MD_CTX* ctx_;
};

// Feeds the first `limit` bytes of the file at `path` (all of it by default) into `hasher`, e.g.
// to seed the hash of a partial download that continues past them. Returns the bytes read.
absl::StatusOr<uint64_t> HashFilePrefix(const std::string& path, Sha256& hasher,
                                        uint64_t limit = UINT64_MAX);

// The hex SHA-256 of the whole file at `path`.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

}  // namespace gswarm::client
