#pragma once

// Units shared by messages and wire types: bytes in GiB (the unit of the config's sizes and of
// every "needs X GiB, Y free" message), bytes for people, and absl::Time <->
// google.protobuf.Timestamp.

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"

namespace gswarm::common {

inline constexpr uint64_t kGiB = uint64_t{1} << 30;

// Bytes as GiB, for "%.1f GiB" in messages.
inline double GiB(uint64_t bytes) { return static_cast<double>(bytes) / static_cast<double>(kGiB); }

// "512 B", "1.5 KiB", "12.6 GiB": one decimal, binary units up to PiB, for log lines and errors.
std::string FormatBytes(uint64_t bytes);

inline google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(time));
}

// An unset Timestamp is the Unix epoch.
inline absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixNanos(google::protobuf::util::TimeUtil::TimestampToNanoseconds(timestamp));
}

}  // namespace gswarm::common
