#pragma once

// Prometheus metrics, the few kinds the host needs, rendered in the text exposition format
// (version 0.0.4): counters and histograms updated as things happen, and gauges (or counters
// kept elsewhere) written by collectors at scrape time.
//
// Thread safety: thread-safe. Updating a series takes its family's lock for a hash lookup and
// an add; rendering takes each lock once.

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "common/mutex.h"

namespace gswarm::host::metrics {

using Labels = std::vector<std::string>;  // values, in the family's label order

class Counter {
 public:
  Counter(std::string name, std::string help, std::vector<std::string> label_names);
  void Add(const Labels& labels, double value = 1);
  void Render(std::string* out) const;

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  mutable gswarm::Mutex mu_;
  absl::flat_hash_map<Labels, double> values_ ABSL_GUARDED_BY(mu_);
};

class Histogram {
 public:
  // `buckets`: upper bounds, increasing (+Inf is added).
  Histogram(std::string name, std::string help, std::vector<std::string> label_names,
            std::vector<double> buckets);
  void Observe(const Labels& labels, double value);
  void Render(std::string* out) const;

 private:
  struct Series {
    std::vector<uint64_t> counts;  // per bucket, not cumulative
    uint64_t count = 0;
    double sum = 0;
  };
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> buckets_;
  mutable gswarm::Mutex mu_;
  absl::flat_hash_map<Labels, Series> series_ ABSL_GUARDED_BY(mu_);
};

// Writes families whose values are read at scrape time.
class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  // Starts a family: its HELP and TYPE lines ("gauge" or "counter").
  void Family(const std::string& name, const std::string& type, const std::string& help);
  // One sample of the family begun last: `labels` as name/value pairs.
  void Sample(const std::string& name,
              std::initializer_list<std::pair<const char*, std::string>> labels, double value);

 private:
  std::string* out_;
};

// Milliseconds to a minute: routing, time to first byte, queue waits.
std::vector<double> RequestBuckets();
// A tenth of a second to half an hour: model loads and transfers.
std::vector<double> LoadBuckets();

// `text` as a label value: backslash, double quote and newline escaped.
std::string EscapeLabel(const std::string& text);
// A sample value: integers without a fraction, +Inf/-Inf/NaN as Prometheus spells them.
std::string FormatValue(double value);

}  // namespace gswarm::host::metrics
