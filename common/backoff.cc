#include "common/backoff.h"

#include <algorithm>
#include <cmath>

namespace gswarm::common {

Backoff::Backoff(Options options, uint64_t seed) : options_(options), rng_(seed) {}

absl::Duration Backoff::Next() {
  const double initial_s = absl::ToDoubleSeconds(options_.initial);
  const double max_s = absl::ToDoubleSeconds(options_.max);
  // Cap the exponent so the power cannot overflow after many failed attempts.
  const double base_s =
      std::min(max_s, initial_s * std::pow(options_.multiplier, std::min(attempts_, 64)));
  std::uniform_real_distribution<double> factor(1.0 - options_.jitter, 1.0 + options_.jitter);
  const double delay_s = std::clamp(base_s * factor(rng_), initial_s, max_s);
  ++attempts_;
  return absl::Seconds(delay_s);
}

}  // namespace gswarm::common
