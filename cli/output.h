#pragma once

// How the CLI shows things to people: sizes, durations, aligned tables, and --json.

#include <cstdint>
#include <string>
#include <vector>

#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace gswarm::cli {

// 1536 -> "1.5 KiB"; 0 -> "0 B".
std::string HumanBytes(uint64_t bytes);

// "1.5 GiB / 8.0 GiB", or "-" when `total` is 0.
std::string UsedOf(uint64_t used, uint64_t total);

// 75.2 -> "1m 15s"; 0.4 -> "0.4s".
std::string HumanDuration(double seconds);

// "3s ago", or "never" for an unset timestamp.
std::string Ago(const google::protobuf::Timestamp& when);

// "in 4m 10s" (or "now" once past), or "never" for an unset timestamp.
std::string FromNow(const google::protobuf::Timestamp& when);

// Columns padded to the widest cell; the header row in capitals.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void AddRow(std::vector<std::string> row);
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// The message as indented JSON (protobuf's mapping, snake_case names) on stdout.
void PrintJson(const google::protobuf::Message& message);

}  // namespace gswarm::cli
