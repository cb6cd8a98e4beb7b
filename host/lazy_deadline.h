#pragma once

// A deadline that moves on every read and write but rarely passes. Moving it is an assignment;
// the timer under it is re-armed only when it fires before the deadline (which then moved on) or
// when the deadline moves earlier than the timer. Re-arming a timer for every operation costs a
// cancelled wait (a handler run) and often a timerfd syscall: on a relayed stream that is several
// per chunk.
//
// Thread safety: none; use it on its owner's I/O thread. A pending wait holds only a weak
// reference to the owner, so it keeps nothing alive.

#include <chrono>
#include <functional>
#include <memory>

#include "absl/time/time.h"
#include "boost/asio/any_io_executor.hpp"
#include "boost/asio/steady_timer.hpp"

namespace gswarm::host::http {

class LazyDeadline {
 public:
  using Clock = std::chrono::steady_clock;

  // `expired` runs on the executor when a deadline passes (once per Set).
  LazyDeadline(const boost::asio::any_io_executor& executor, std::function<void()> expired)
      : timer_(executor), expired_(std::move(expired)) {}

  // The deadline is `after` from now. `owner` is the object this is a member of.
  void Set(absl::Duration after, const std::weak_ptr<void>& owner) {
    deadline_ = Clock::now() + absl::ToChronoNanoseconds(after);
    if (waits_ == 0 || deadline_ < timer_.expiry()) Wait(owner);
  }
  // No deadline now; the timer may fire once more, for nothing.
  void Clear() { deadline_ = Clock::time_point::max(); }
  // No deadline, and the pending wait ends now (the owner is closing).
  void Cancel() {
    Clear();
    timer_.cancel();
  }

 private:
  void Wait(const std::weak_ptr<void>& owner) {
    ++waits_;
    timer_.expires_at(deadline_);  // cancels a wait in progress
    timer_.async_wait([this, owner](const boost::system::error_code& ec) {
      const std::shared_ptr<void> alive = owner.lock();
      if (alive == nullptr) return;
      --waits_;
      if (ec || deadline_ == Clock::time_point::max()) return;
      if (Clock::now() < deadline_) {
        if (waits_ == 0) Wait(owner);  // it moved on: wait for the rest
        return;
      }
      Clear();
      expired_();
    });
  }

  boost::asio::steady_timer timer_;
  const std::function<void()> expired_;
  Clock::time_point deadline_ = Clock::time_point::max();
  int waits_ = 0;  // waits pending on timer_ (a cancelled one still runs its handler)
};

}  // namespace gswarm::host::http
