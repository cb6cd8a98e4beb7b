#include "bench/sim_agent.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gswarm::bench {

namespace v1 = ::gswarm::v1;

// ---- AgentRound -------------------------------------------------------------------------------

void AgentRound::OnWelcome(double hello_ms) {
  gswarm::MutexLock lock(&mu_);
  ++welcomed_;
  hello_ms_.push_back(hello_ms);
}

void AgentRound::OnDone(bool was_welcomed, const grpc::Status& status) {
  gswarm::MutexLock lock(&mu_);
  ++finished_;
  if (!was_welcomed) ++failed_;
  // CANCELLED is our own teardown, not the host's doing.
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED && first_error_.empty()) {
    first_error_ = absl::StrCat("code ", status.error_code(), ": ", status.error_message());
  }
}

bool AgentRound::AwaitConnected(absl::Duration timeout) {
  gswarm::MutexLock lock(&mu_);
  auto settled = [this]()
                     ABSL_SHARED_LOCKS_REQUIRED(mu_) { return welcomed_ + failed_ >= agents_; };
  return mu_.AwaitWithTimeout(absl::Condition(&settled), timeout);
}

bool AgentRound::AwaitFinished(absl::Duration timeout) {
  gswarm::MutexLock lock(&mu_);
  auto finished = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return finished_ >= agents_; };
  return mu_.AwaitWithTimeout(absl::Condition(&finished), timeout);
}

int AgentRound::welcomed() const {
  gswarm::MutexLock lock(&mu_);
  return welcomed_;
}

int AgentRound::failed() const {
  gswarm::MutexLock lock(&mu_);
  return failed_;
}

std::string AgentRound::first_error() const {
  gswarm::MutexLock lock(&mu_);
  return first_error_;
}

std::vector<double> AgentRound::hello_ms() const {
  gswarm::MutexLock lock(&mu_);
  return hello_ms_;
}

void AgentRound::SetWindow(Clock::time_point start, Clock::time_point end) {
  window_start_.store(start.time_since_epoch().count());
  window_end_.store(end.time_since_epoch().count());
}

bool AgentRound::InWindow(Clock::time_point t) const {
  Clock::rep ticks = t.time_since_epoch().count();
  return ticks >= window_start_.load() && ticks < window_end_.load();
}

// ---- HeartbeatScheduler -----------------------------------------------------------------------

HeartbeatScheduler::HeartbeatScheduler(std::chrono::milliseconds interval)
    : interval_(interval), thread_([this] { Run(); }) {}

HeartbeatScheduler::~HeartbeatScheduler() { Stop(); }

void HeartbeatScheduler::Add(SimAgent* agent, Clock::time_point first_due) {
  gswarm::MutexLock lock(&mu_);
  heap_.push({first_due, agent});
}

void HeartbeatScheduler::Stop() {
  {
    gswarm::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void HeartbeatScheduler::Run() {
  // Polls at 5 ms granularity: the RTT clock starts at the actual send, so a late wake-up only
  // shifts an agent's phase, never the measurement.
  constexpr auto kTick = std::chrono::milliseconds(5);
  std::vector<SimAgent*> due;
  for (;;) {
    due.clear();
    Clock::time_point now = Clock::now();
    {
      gswarm::MutexLock lock(&mu_);
      if (stop_) return;
      while (!heap_.empty() && heap_.top().due <= now) {
        Entry entry = heap_.top();
        heap_.pop();
        due.push_back(entry.agent);
        heap_.push({entry.due + interval_, entry.agent});
      }
    }
    // Outside mu_: a send may block briefly in gRPC and Add must not wait on it.
    for (SimAgent* agent : due) agent->SendHeartbeat();
    gswarm::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::FromChrono(kTick));
  }
}

// ---- SimAgent ---------------------------------------------------------------------------------

namespace {

constexpr uint64_t kDramBytes = 256ull << 30;

// A plausible node's memory, varying a little so heartbeats are not byte-identical.
v1::MemoryUsage Memory(uint64_t seq) {
  v1::MemoryUsage memory;
  memory.set_dram_total_bytes(kDramBytes);
  memory.set_dram_available_bytes(kDramBytes / 2 + (seq % 64) * 4096);
  memory.set_disk_path("/var/cache/gswarm/models");
  memory.set_disk_total_bytes(4ull << 40);
  memory.set_disk_free_bytes(2ull << 40);
  memory.set_dram_tier_path("/dev/shm/gswarm_models");
  memory.set_dram_tier_budget_bytes(64ull << 30);
  return memory;
}

}  // namespace

void SimAgent::Start(v1::AgentLink::Stub* stub, std::mt19937* rng) {
  // Spread first heartbeats over one interval, as in a cluster whose agents started at different
  // times; agents welcomed in the same millisecond would otherwise beat in lockstep forever.
  phase_ = std::uniform_real_distribution<double>(0, 1)(*rng);
  if (!options_.token.empty()) {
    context_.AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
  }
  stub->async()->Connect(&context_, this);
  v1::Hello* hello = write_msg_.mutable_hello();
  hello->set_node_id(absl::StrFormat("sim-%06d", index_));
  hello->set_hostname(absl::StrFormat("sim-host-%06d", index_));
  hello->set_version("agents_scale");
  hello->set_cpu_cores(32);
  hello->set_dram_total_bytes(kDramBytes);
  hello->set_heartbeat_interval_ms(options_.interval_ms);
  *hello->mutable_memory() = Memory(0);
  started_ = Clock::now();
  {
    gswarm::MutexLock lock(&mu_);
    write_in_flight_ = true;
  }
  StartWrite(&write_msg_);
  StartRead(&read_msg_);
  AddHold();
  StartCall();
}

void SimAgent::SendHeartbeat() {
  {
    gswarm::MutexLock lock(&mu_);
    if (closed_) return;
    uint64_t seq = ++seq_;
    Clock::time_point now = Clock::now();
    bool counted = round_->InWindow(now);
    if (counted) ++samples_.sent;
    outstanding_.push_back({seq, now, counted});
    if (write_in_flight_) {
      queued_.push_back(seq);
      return;
    }
    PrepareHeartbeatLocked(seq);
    write_in_flight_ = true;
  }
  StartWrite(&write_msg_);
}

AgentSamples SimAgent::TakeSamples() {
  gswarm::MutexLock lock(&mu_);
  AgentSamples out = std::exchange(samples_, AgentSamples{});
  for (const Pending& pending : outstanding_) out.unacked += pending.counted ? 1 : 0;
  return out;
}

void SimAgent::PrepareHeartbeatLocked(uint64_t seq) {
  v1::Heartbeat* heartbeat = write_msg_.mutable_heartbeat();
  heartbeat->set_seq(seq);
  *heartbeat->mutable_memory() = Memory(seq);
}

// True once: when the stream can carry no more writes and none is in flight.
bool SimAgent::ReleaseHoldLocked() {
  if (!closed_ || write_in_flight_ || hold_released_) return false;
  hold_released_ = true;
  return true;
}

void SimAgent::OnWriteDone(bool ok) {
  bool start_next = false, release = false;
  {
    gswarm::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) closed_ = true;
    if (!closed_ && !queued_.empty()) {
      PrepareHeartbeatLocked(queued_.front());
      queued_.pop_front();
      start_next = write_in_flight_ = true;
    }
    release = ReleaseHoldLocked();
  }
  if (start_next) StartWrite(&write_msg_);
  if (release) RemoveHold();
}

void SimAgent::OnReadDone(bool ok) {
  if (!ok) {
    bool release = false;
    {
      gswarm::MutexLock lock(&mu_);
      closed_ = true;
      release = ReleaseHoldLocked();
    }
    if (release) RemoveHold();
    return;
  }
  Clock::time_point now = Clock::now();
  if (read_msg_.has_welcome()) {
    bool first = false;
    {
      gswarm::MutexLock lock(&mu_);
      first = !welcomed_;
      welcomed_ = true;
    }
    if (first) {
      round_->OnWelcome(MsBetween(started_, now));
      auto phase = std::chrono::duration_cast<Clock::duration>(
          std::chrono::milliseconds(options_.interval_ms) * phase_);
      scheduler_->Add(this, now + phase);
    }
  } else if (read_msg_.has_heartbeat_ack()) {
    uint64_t seq = read_msg_.heartbeat_ack().seq();
    gswarm::MutexLock lock(&mu_);
    // One stream keeps order, so an older heartbeat still in front was never acked: the host
    // dropped it, and it stays counted as unacked.
    while (!outstanding_.empty() && outstanding_.front().seq <= seq) {
      const Pending& pending = outstanding_.front();
      if (pending.counted) {
        if (pending.seq == seq) {
          samples_.rtt_ms.push_back(MsBetween(pending.sent, now));
        } else {
          ++samples_.unacked;
        }
      }
      outstanding_.pop_front();
    }
  }
  // Commands and anything else a host may send are ignored: a simulated node has no tiers.
  StartRead(&read_msg_);
}

void SimAgent::OnDone(const grpc::Status& status) {
  bool welcomed = false;
  {
    gswarm::MutexLock lock(&mu_);
    welcomed = welcomed_;
  }
  round_->OnDone(welcomed, status);
}

}  // namespace gswarm::bench
