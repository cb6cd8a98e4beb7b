#pragma once

// Fetches one big file as byte ranges from several sources at once: GSwarm peers holding the
// same commit (each serves the Hub's URL shape on its data port), and, behind them, the Hub
// itself as the fallback for ranges whose peer fails or stalls. With a single source and several
// connections it is a parallel Range download, for a network whose per-connection speed, not
// the hash, is the limit.
//
// The file is assembled at <final>.stripes (sized up front, written at offsets) with a record
// of the finished chunks beside it (<final>.stripes.done, a byte per chunk marked in place as it
// finishes), so a stopped fetch resumes with the chunks it has. Chunks are handed out one at a time
// to whichever connection is free, so a fast source takes more of them. A source that fails twice
// in a row (refused, cut, stalled for its stall_timeout, a bad answer) is dropped and its chunk
// goes back to the others; the fallback source takes chunks only once no other source is left. The
// digests are computed in file order on the calling thread, reading each chunk back from the
// page cache as soon as the chunks before it are done, so hashing overlaps the transfer; each
// chunk's disk write starts once it is hashed, so the final fsync has little left to do. The
// whole file is checked against the expected XXH3-128 (peers) or SHA-256 (the Hub) before the
// rename to <final>.
//
// Thread safety: FetchStriped may be called from several threads for different files.

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/file_fetcher.h"

namespace gswarm::client {

struct StripeSource {
  std::string name;                  // for messages: "peer http://10.0.0.2:8102", "the Hub"
  std::string url;                   // the file on this source
  std::vector<std::string> headers;  // Authorization for this source
  int connections = 1;               // ranges in flight from this source at once
  bool fallback = false;             // used only when no other source is left
  // A range slower than 1 KiB/s for this long is cut and goes to another connection.
  absl::Duration stall_timeout = absl::Seconds(60);
};

struct StripedResult {
  FetchedFile file;
  uint64_t bytes_from_fallback = 0;  // of this run
  uint64_t bytes_from_others = 0;
};

// REQUIRES: `target.size` set, `sources` not empty, final_path's directory exists.
// CANCELLED when `context.cancel` or `context.stop` is set (what is done is kept);
// UNAVAILABLE when every source failed; DATA_LOSS naming the file when the digest differs.
absl::StatusOr<StripedResult> FetchStriped(const FetchTarget& target,
                                           const std::vector<StripeSource>& sources,
                                           const FetchContext& context,
                                           uint64_t chunk_bytes = 16ull << 20);

}  // namespace gswarm::client
