#pragma once

// Exponential backoff with jitter, for reconnect loops.
// Thread safety: not thread-safe; each loop owns its Backoff.

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace gswarm::common {

class Backoff {
 public:
  struct Options {
    // First delay, and the floor of every delay.
    absl::Duration initial = absl::Milliseconds(500);
    // Ceiling of every delay.
    absl::Duration max = absl::Seconds(30);
    // Growth per attempt.
    double multiplier = 2.0;
    // Each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter] (then clamped), so
    // that many agents cut off together do not reconnect in lockstep.
    double jitter = 0.2;
  };

  explicit Backoff(Options options, uint64_t seed = std::random_device{}());

  // The delay before the next attempt; grows with each call until Reset().
  absl::Duration Next();

  // After a success: the next delay is `initial` again.
  void Reset() { attempts_ = 0; }

  int attempts() const { return attempts_; }

 private:
  Options options_;
  int attempts_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace gswarm::common
