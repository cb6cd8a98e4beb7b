#include "host/metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gswarm::host::metrics {
namespace {

void Header(std::string* out, const std::string& name, const char* type, const std::string& help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

// {a="x",b="y"}, with `extra` (a rendered pair, e.g. le="0.5") last; "" when there are none.
std::string LabelSet(const std::vector<std::string>& names, const Labels& values,
                     const std::string& extra = "") {
  if (names.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, names[i], "=\"", EscapeLabel(values[i]), "\"");
  }
  if (!extra.empty()) {
    if (!names.empty()) out += ',';
    out += extra;
  }
  out += '}';
  return out;
}

}  // namespace

std::string EscapeLabel(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrFormat("%.15g", value);
}

std::vector<double> RequestBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> LoadBuckets() {
  return {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800};
}

Counter::Counter(std::string name, std::string help, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

void Counter::Add(const Labels& labels, double value) {
  gswarm::MutexLock lock(&mu_);
  values_[labels] += value;
}

void Counter::Render(std::string* out) const {
  Header(out, name_, "counter", help_);
  gswarm::MutexLock lock(&mu_);
  for (const auto& [labels, value] : values_) {
    absl::StrAppend(out, name_, LabelSet(label_names_, labels), " ", FormatValue(value), "\n");
  }
}

Histogram::Histogram(std::string name, std::string help, std::vector<std::string> label_names,
                     std::vector<double> buckets)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      buckets_(std::move(buckets)) {}

void Histogram::Observe(const Labels& labels, double value) {
  size_t bucket = 0;
  while (bucket < buckets_.size() && value > buckets_[bucket]) ++bucket;
  gswarm::MutexLock lock(&mu_);
  Series& series = series_[labels];
  if (series.counts.empty()) series.counts.assign(buckets_.size() + 1, 0);
  ++series.counts[bucket];
  ++series.count;
  series.sum += value;
}

void Histogram::Render(std::string* out) const {
  Header(out, name_, "histogram", help_);
  gswarm::MutexLock lock(&mu_);
  for (const auto& [labels, series] : series_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= buckets_.size(); ++i) {
      cumulative += series.counts[i];
      const std::string le =
          absl::StrCat("le=\"", i < buckets_.size() ? FormatValue(buckets_[i]) : "+Inf", "\"");
      absl::StrAppend(out, name_, "_bucket", LabelSet(label_names_, labels, le), " ", cumulative,
                      "\n");
    }
    const std::string set = LabelSet(label_names_, labels);
    absl::StrAppend(out, name_, "_sum", set, " ", FormatValue(series.sum), "\n");
    absl::StrAppend(out, name_, "_count", set, " ", series.count, "\n");
  }
}

void Writer::Family(const std::string& name, const std::string& type, const std::string& help) {
  Header(out_, name, type.c_str(), help);
}

void Writer::Sample(const std::string& name,
                    std::initializer_list<std::pair<const char*, std::string>> labels,
                    double value) {
  *out_ += name;
  if (labels.size() > 0) {
    *out_ += '{';
    bool first = true;
    for (const auto& [key, value_text] : labels) {
      if (!first) *out_ += ',';
      first = false;
      absl::StrAppend(out_, key, "=\"", EscapeLabel(value_text), "\"");
    }
    *out_ += '}';
  }
  absl::StrAppend(out_, " ", FormatValue(value), "\n");
}

}  // namespace gswarm::host::metrics
