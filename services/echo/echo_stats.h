// EchoStats: the live counters an echo server reports through Stats.
//
// Each Echo/EchoStream/Collect/Chat call is counted active while it runs
// and, when it finishes, exactly once as completed, canceled or
// deadline-exceeded; each worker thread is counted active while it runs.
// So when the server is idle both active counts are 0. WaitUntil lets
// in-process tests and the demo wait for a state (e.g. "all workers
// stopped") without sleeping or polling.
//
// Thread-safety: all methods are safe from any thread (one std::mutex; a
// condition variable is notified on every change).
#ifndef REQCTX_SERVICES_ECHO_ECHO_STATS_H_
#define REQCTX_SERVICES_ECHO_ECHO_STATS_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx::echo {

class EchoStats {
 public:
  struct Snapshot {
    int64_t active_requests = 0;
    int64_t active_workers = 0;
    int64_t completed_total = 0;
    int64_t canceled_total = 0;
    int64_t deadline_exceeded_total = 0;
    // Calls that reached the handler (counted by RequestStarted), however
    // they ended; last, so positional initializers of the fields above still
    // compile. Once the server is idle it equals finished_total().
    int64_t started_total = 0;

    int64_t finished_total() const {
      return completed_total + canceled_total + deadline_exceeded_total;
    }
  };

  void RequestStarted();
  // Counts a finished call by why it ended: the call Context's error first
  // (it says what really happened), then the returned status; anything else
  // (OK, or an error such as UNAVAILABLE from the next hop) is "completed".
  void RequestFinished(const Context& ctx, const absl::Status& result);
  // Counts a finished call by `why`'s code alone (a stream's handler: the
  // stream's status when it was cut, whose Context says only "canceled").
  void RequestEnded(const absl::Status& why);
  void WorkerStarted();
  void WorkerFinished();

  Snapshot Get() const;
  // Blocks until `done(snapshot)` holds or `timeout` passes; returns whether
  // it holds.
  bool WaitUntil(const std::function<bool(const Snapshot&)>& done,
                 absl::Duration timeout) const;

 private:
  template <typename F>
  void Update(F f);

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  Snapshot counts_;  // Guarded by mu_.
};

}  // namespace reqctx::echo

#endif  // REQCTX_SERVICES_ECHO_ECHO_STATS_H_
