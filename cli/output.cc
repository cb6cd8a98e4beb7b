#include "cli/output.h"

#include <algorithm>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/proto_json.h"

namespace gswarm::cli {

std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrFormat("%d B", bytes);
  if (value >= 100) return absl::StrFormat("%.0f %s", value, kUnits[unit]);
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string UsedOf(uint64_t used, uint64_t total) {
  if (total == 0) return "-";
  return absl::StrCat(HumanBytes(used), " / ", HumanBytes(total));
}

std::string HumanDuration(double seconds) {
  if (seconds < 10) return absl::StrFormat("%.1fs", seconds);
  auto total = static_cast<int64_t>(seconds);
  if (total < 60) return absl::StrFormat("%ds", total);
  if (total < 3600) return absl::StrFormat("%dm %ds", total / 60, total % 60);
  if (total < 86400) return absl::StrFormat("%dh %dm", total / 3600, (total % 3600) / 60);
  return absl::StrFormat("%dd %dh", total / 86400, (total % 86400) / 3600);
}

namespace {

// Seconds from now until `when` (negative once it has passed), or nullopt for an unset
// Timestamp, which the API sends for "never".
std::optional<double> SecondsFromNow(const google::protobuf::Timestamp& when) {
  if (when.seconds() == 0 && when.nanos() == 0) return std::nullopt;
  const double then = static_cast<double>(when.seconds()) + when.nanos() / 1e9;
  return then - absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
}

}  // namespace

std::string Ago(const google::protobuf::Timestamp& when) {
  const std::optional<double> until = SecondsFromNow(when);
  if (!until.has_value()) return "never";
  return HumanDuration(std::max(0.0, -*until)) + " ago";
}

std::string FromNow(const google::protobuf::Timestamp& when) {
  const std::optional<double> until = SecondsFromNow(when);
  if (!until.has_value()) return "never";
  return *until <= 0 ? "now" : "in " + HumanDuration(*until);
}

Table::Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void Table::AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

namespace {

// Columns a cell takes on a terminal: its UTF-8 code points (bars are drawn with block characters).
size_t DisplayWidth(const std::string& cell) {
  size_t width = 0;
  for (const char c : cell) width += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return width;
}

}  // namespace

std::string Table::Render() const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], DisplayWidth(row[i]));
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - DisplayWidth(row[i]) + 3, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

void PrintJson(const google::protobuf::Message& message) {
  auto json = common::ToJson(message, /*pretty=*/true);
  std::cout << (json.ok() ? *json : std::string("{}")) << std::flush;
}

}  // namespace gswarm::cli
