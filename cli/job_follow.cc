#include "cli/job_follow.h"

#include <unistd.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace gswarm::cli {
namespace {

// One line that redraws itself on a terminal; on a pipe, a line every few seconds.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), tty_(isatty(2) == 1) {}

  void Draw(const v1::Job& job) {
    if (job.kind() == "serve" || job.kind() == "stop") return Spin(job);
    const absl::Time now = absl::Now();
    // Until the file list is known there is nothing worth a line in a log.
    if (!tty_ && (job.bytes_total() == 0 || now - last_ < absl::Seconds(5))) return;
    last_ = now;
    const double fraction = job.bytes_total() == 0 ? 0
                                                   : static_cast<double>(job.bytes_done()) /
                                                         static_cast<double>(job.bytes_total());
    constexpr int kWidth = 28;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar = std::string(filled, '=') + (filled < kWidth ? ">" : "") +
                      std::string(std::max(0, kWidth - filled - 1), ' ');
    std::string eta = "-";
    if (job.rate_bytes_per_s() > 0 && job.bytes_total() > job.bytes_done()) {
      eta = HumanDuration(static_cast<double>(job.bytes_total() - job.bytes_done()) /
                          job.rate_bytes_per_s());
    }
    std::string line =
        absl::StrFormat("%s [%s] %3.0f%%  %s / %s  %s/s  ETA %s  files %d/%d", label_, bar,
                        fraction * 100, HumanBytes(job.bytes_done()), HumanBytes(job.bytes_total()),
                        HumanBytes(static_cast<uint64_t>(job.rate_bytes_per_s())), eta,
                        job.files_done(), job.files_total());
    Show(line);
  }

  // Engines report no bytes while they load: a spinner and the time so far.
  void Spin(const v1::Job& job) {
    static constexpr const char* kFrames[] = {"|", "/", "-", "\\"};
    const absl::Time now = absl::Now();
    if (started_ == absl::InfinitePast()) started_ = now;
    if (!tty_ && now - last_ < absl::Seconds(5)) return;
    last_ = now;
    std::string line = absl::StrFormat(
        "%s %s %s %s", label_, job.kind() == "serve" ? "starting" : "stopping",
        kFrames[frame_++ % 4], HumanDuration(absl::ToDoubleSeconds(now - started_)));
    Show(line);
  }

  void Done() {
    if (tty_ && drawn_) std::cerr << "\n";
  }

 private:
  // On a terminal, overwrites the current line; on a pipe, appends one.
  void Show(const std::string& line) {
    std::cerr << (tty_ ? "\r\033[K" : "") << line << (tty_ ? "" : "\n") << std::flush;
    drawn_ = true;
  }

  const std::string label_;
  const bool tty_;
  bool drawn_ = false;
  absl::Time last_ = absl::InfinitePast();
  absl::Time started_ = absl::InfinitePast();
  int frame_ = 0;
};

}  // namespace

int FollowJob(ApiClient& api, const v1::Job& started, const std::string& label, bool json,
              v1::Job* final) {
  grpc::ClientContext context;
  api.Prepare(&context, std::chrono::seconds(0));
  v1::GetJobRequest watch;
  watch.set_job_id(started.id());
  auto reader = api.stub().WatchJob(&context, watch);
  ProgressBar bar(label);
  v1::Job job = started;
  for (v1::Job update; reader->Read(&update);) {
    job = update;
    if (!json) bar.Draw(job);
  }
  bar.Done();
  *final = job;
  if (absl::Status s = api.Explain(reader->Finish()); !s.ok()) {
    return PrintError(
        absl::StrCat(s.message(), " (job ", job.id(), " may still be running: see `gswarm jobs`)"));
  }
  if (json) PrintJson(job);
  if (job.state() != "succeeded") {
    return PrintError(absl::StrCat(job.kind(), " of ", label, " ", job.state(), ": ", job.message(),
                                   " (job ", job.id(), ")"));
  }
  return 0;
}

int ReportStarted(const v1::Job& job, bool json) {
  if (json) {
    PrintJson(job);
  } else {
    std::cout << "started " << job.kind() << " " << job.id() << " on node " << job.node_id()
              << "; follow it with `gswarm jobs`\n";
  }
  return 0;
}

}  // namespace gswarm::cli
