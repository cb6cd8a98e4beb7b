#pragma once

// Fetches one file over HTTP(S) into "<final>.part", then fsyncs and renames it to <final> once
// it is whole and verified. An existing .part is continued with a Range request (its hash state
// comes from the checkpoint beside it, <final>.part.hash, plus the bytes after that checkpoint:
// stream_hasher.h); a server that answers 200 instead of 206 restarts the file from zero. Transient
// failures (connection refused, reset or cut, stalls, 408/429/5xx) are retried with backoff,
// resuming from the bytes already written; a checksum or size mismatch restarts the file once,
// then fails DATA_LOSS naming it. Stopping (cancel) keeps the .part for a later run.
//
// Thread safety: not thread-safe. Use one FileFetcher per worker thread: it owns a libcurl easy
// handle, reused across files so that connections are kept alive.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/hf_source.h"
#include "client/http_client.h"

namespace gswarm::client {

struct FetchTarget {
  std::string url;
  std::string display_name;          // the file's path in the model, for messages
  std::string final_path;            // the .part is final_path + ".part"
  std::optional<uint64_t> size;      // expected size, when the source says
  std::string sha256;                // expected SHA-256 (lowercase hex), when the source says
  std::vector<std::string> headers;  // extra request headers ("Authorization: Bearer ...")
  // Expected XXH3-128, from a GSwarm peer whose manifest records it: then that is what is checked
  // (at memory speed), SHA-256 is not computed, and `sha256` is carried over as the file's.
  std::string xxh3;
};

struct FetchContext {
  // Retry policy (max_attempts, delays, low_speed_time).
  const HubOptions* hub = nullptr;
  // The caller's cancel flag, and a flag set when a sibling file failed; either may be null.
  const std::atomic<bool>* cancel = nullptr;
  const std::atomic<bool>* stop = nullptr;
  // Called from the fetching thread as bytes land on disk: `on_disk` may be negative when a
  // .part is restarted; `fetched` counts bytes received from the network.
  std::function<void(int64_t on_disk, uint64_t fetched)> on_bytes;
  // The Status for an answer that is neither a success nor worth retrying (401, 404, ...).
  std::function<absl::Status(const FetchTarget&, const HttpResponse&)> http_error;
};

struct FetchedFile {
  uint64_t size = 0;
  std::string sha256;         // of the bytes on disk (computed, or carried from a peer's listing)
  std::string xxh3_128;       // of the bytes on disk, always computed
  uint64_t bytes_reread = 0;  // of an existing .part, to seed the hashes on resume
};

class FileFetcher {
 public:
  static absl::StatusOr<std::unique_ptr<FileFetcher>> Create();
  ~FileFetcher();
  FileFetcher(const FileFetcher&) = delete;
  FileFetcher& operator=(const FileFetcher&) = delete;

  // REQUIRES: final_path's directory exists; no other fetch writes the same final_path.
  // CANCELLED when `cancel` or `stop` was set (the .part is kept).
  absl::StatusOr<FetchedFile> Fetch(const FetchTarget& target, const FetchContext& context);

 private:
  explicit FileFetcher(CURL* easy) : easy_(easy) {}

  CURL* easy_;
};

}  // namespace gswarm::client
