#pragma once

// A gRPC callback reactor whose call may end from several places (a job ending, a cancel, the
// host shutting down, a failed write) but must call Finish exactly once. The reactor derives
// from OnceFinished<its gRPC base> and ends the call with FinishOnce; `mu_` is the reactor's own
// lock, shared with the state it guards.
// Thread safety: FinishOnce may be called from any thread, with mu_ not held.

#include <utility>

#include "absl/functional/function_ref.h"
#include "common/mutex.h"
#include "grpcpp/grpcpp.h"

namespace gswarm::host {

template <typename Reactor>
class OnceFinished : public Reactor {
 protected:
  // Finishes the call with `status` unless it was finished already; `last` runs under mu_ just
  // before (e.g. writing the unary response, which gRPC frees once the call is done).
  void FinishOnce(
      const grpc::Status& status, absl::FunctionRef<void()> last = [] {}) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      gswarm::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
      last();
    }
    this->Finish(status);
  }

  gswarm::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace gswarm::host
