#pragma once

// A fixed set of threads running queued tasks, with a bounded queue: the place where gRPC
// callbacks hand off work that may block (disk, SQLite, waiting on agents).
//
// Thread safety: thread-safe. Tasks run in submission order per thread, in no order overall;
// a pool of one thread is a serial executor (events keep their order).

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "common/mutex.h"

namespace gswarm::common {

class WorkerPool {
 public:
  // `name` appears in log lines; `max_queued` tasks may wait before Submit refuses.
  WorkerPool(std::string name, size_t threads, size_t max_queued);
  // Runs every task already queued, then joins.
  ~WorkerPool();

  // RESOURCE_EXHAUSTED when the queue is full or the pool is shutting down; the task is not run.
  absl::Status Submit(std::function<void()> task);

  // Refuses new tasks, runs every task already queued, then joins. Idempotent; the destructor
  // does the same.
  void Stop();

 private:
  void Loop();

  const std::string name_;
  const size_t max_queued_;
  gswarm::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace gswarm::common
