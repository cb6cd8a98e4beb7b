#pragma once

// The project's mutex, lock, condition variable and notification.
//
// In every normal build these are Abseil's own types (gswarm::Mutex is absl::Mutex). Under
// ThreadSanitizer (GSWARM_TSAN_SYNC, set by tests/tsan_check.sh) they are small classes over
// std::mutex and std::condition_variable instead: Debian's Abseil is not built with
// -fsanitize=thread, so TSan cannot see absl::Mutex hand memory from one thread to the next and
// would call every ABSL_GUARDED_BY field racy; pthread mutexes it does see. The TSan classes keep
// the subset of Abseil's API the code uses, with the same thread-safety annotations, so the clang
// -Wthread-safety analysis checks the same contracts in both forms.
// Thread safety: these are the synchronization primitives.

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#ifdef GSWARM_TSAN_SYNC
#include <condition_variable>
#include <mutex>
#endif

namespace gswarm {

#ifndef GSWARM_TSAN_SYNC

using Mutex = absl::Mutex;
using MutexLock = absl::MutexLock;
using CondVar = absl::CondVar;
using Notification = absl::Notification;

#else

class CondVar;

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  // Every unlock may have made some waiter's condition true: wake them to look (Abseil re-checks
  // conditions on unlock too). They are woken before the unlock: once it is done, a waiter may
  // return and destroy the mutex (a Notification on its stack).
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    if (awaiting_ > 0) changed_.notify_all();
    mu_.unlock();
  }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

  void Await(const absl::Condition& cond) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    AwaitWithDeadline(cond, absl::InfiniteFuture());
  }
  bool AwaitWithTimeout(const absl::Condition& cond, absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    return AwaitWithDeadline(cond, absl::Now() + timeout);
  }
  // True when the condition holds (possibly only at the deadline).
  bool AwaitWithDeadline(const absl::Condition& cond, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> held(mu_, std::adopt_lock);
    ++awaiting_;
    while (!cond.Eval()) {
      if (deadline == absl::InfiniteFuture()) {
        changed_.wait(held);
      } else if (changed_.wait_until(held, absl::ToChronoTime(deadline)) ==
                 std::cv_status::timeout) {
        break;
      }
    }
    --awaiting_;
    held.release();
    return cond.Eval();
  }

 private:
  friend class CondVar;
  std::mutex mu_;
  std::condition_variable changed_;
  int awaiting_ = 0;  // guarded by mu_
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    WaitWithDeadline(mu, absl::InfiniteFuture());
  }
  // True when the wait timed out (Abseil's convention).
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return WaitWithDeadline(mu, absl::Now() + timeout);
  }
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> held(mu->mu_, std::adopt_lock);
    bool timed_out = false;
    if (deadline == absl::InfiniteFuture()) {
      cv_.wait(held);
    } else {
      timed_out = cv_.wait_until(held, absl::ToChronoTime(deadline)) == std::cv_status::timeout;
    }
    held.release();
    return timed_out;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

class Notification {
 public:
  void Notify() {
    MutexLock lock(&mu_);
    notified_ = true;
  }
  bool HasBeenNotified() const {
    MutexLock lock(&mu_);
    return notified_;
  }
  void WaitForNotification() const {
    MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&notified_));
  }
  bool WaitForNotificationWithTimeout(absl::Duration timeout) const {
    MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&notified_), timeout);
  }

 private:
  mutable Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
};

#endif  // GSWARM_TSAN_SYNC

}  // namespace gswarm
