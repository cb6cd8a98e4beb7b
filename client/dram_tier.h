#pragma once

// The DRAM tier of one node: model directories on a tmpfs (default /dev/shm/gswarm_models, one
// root per agent) under a byte budget. A model is <root>/<name>/; copies are staged under
// <root>/.staging/ and renamed into place whole (see tier_copier.h), so every directory under
// <root> whose name does not start with '.' is a complete model.
//
// Per-model state lives in the model's own <dir>/.gswarm/ so it survives an agent restart (tmpfs
// outlives the process): `pinned` (a marker file: never evicted) and `last_used` (its mtime is
// the last use). A model's loaded time is its directory's ctime, set when the copy was renamed
// into place.
//
// Thread safety: thread-safe. There is no in-memory state: the filesystem is the state, and
// removals rename the model out of sight before deleting it, so a concurrent Scan never sees a
// half-removed model. Callers serialize copies into the tier with PlanRoom (see there).

#include <atomic>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gswarm/v1/common.pb.h"

namespace gswarm::client {

class DramTier {
 public:
  struct Options {
    // The tier's directory, on a tmpfs; created by the first copy into it.
    std::string root = "/dev/shm/gswarm_models";
    // Most bytes the tier may hold (dram_cache_size / storage_devices.dram.max_size_gb).
    uint64_t budget_bytes = 0;
  };

  explicit DramTier(Options options);

  // Every complete model under root as a ready "dram" replica: name, path, size (bytes of its
  // files outside .gswarm/), commit and source from its manifest when it has one, metadata, pinned,
  // last_used_at, loaded_at.
  std::vector<v1::Replica> Scan() const;

  // Bytes of every file under root, models and copies in flight (staging) alike.
  uint64_t UsedBytes() const;
  uint64_t budget_bytes() const { return budget_bytes_.load(); }
  // A new budget (the host's cluster default, for a node without its own): copies from now on
  // are checked against it; models already in the tier stay.
  void set_budget_bytes(uint64_t bytes) { budget_bytes_.store(bytes); }
  const std::string& root() const { return options_.root; }

  // <root>/<name>
  std::string ModelDir(const std::string& name) const;
  // <root>/.staging/<name>.<random>: a fresh name on every call, for one copy.
  std::string StagingDir(const std::string& name) const;

  // Pins (never evicted) or unpins a model. NOT_FOUND when it is not in the tier.
  absl::Status SetPinned(const std::string& name, bool pinned);
  // Records a use of the model now (an instance started from it). NOT_FOUND when not here.
  absl::Status Touch(const std::string& name);

  // Room for `needed` more bytes for model `name`. Free room is min(budget - UsedBytes(), free
  // space of the tmpfs). Returns:
  //   - an empty list when it fits now;
  //   - with `evict`, the models to Remove first, least recently used first, never pinned ones,
  //     ones in `in_use` (models serving instances) or `name` itself;
  //   - RESOURCE_EXHAUSTED otherwise: 'model "x": DRAM budget 16.0 GiB has 3.2 GiB free, model
  //     needs 12.6 GiB (free space with DELETE /memory/dram/{name} or pass evict=true)', or, when
  //     evicting every candidate would not be enough, how much that frees and which models are
  //     pinned or in use.
  // Removes nothing itself. Two copies planned at once may both count the same free bytes: the
  // caller plans and starts one copy into the tier at a time (bytes of a copy in flight count
  // as used, so a plan made while another copy runs is short by what that copy has left).
  absl::StatusOr<std::vector<std::string>> PlanRoom(const std::string& name, uint64_t needed,
                                                    bool evict,
                                                    const std::set<std::string>& in_use) const;

  // Removes a model. OK when it is not here. INVALID_ARGUMENT for a name that is not a plain
  // directory name.
  absl::Status Remove(const std::string& name);

  // Removes every model and every staging directory (cleanup_on_shutdown). REQUIRES: no copy
  // into the tier in flight.
  absl::Status Clear();

  // Removes staging directories left by copies that crashed. Call on agent start, before any
  // copy into the tier.
  absl::Status RemoveStaleStaging();

 private:
  const Options options_;
  std::atomic<uint64_t> budget_bytes_{options_.budget_bytes};
};

}  // namespace gswarm::client
