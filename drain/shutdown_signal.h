// ShutdownSignal: tells reqctx's server glue when its server cancels its
// calls, so that a call ended by the shutdown says SERVER_SHUTDOWN (in
// Cause(ctx), the budget ledger, the call log and the cause label of
// reqctx_server_handled_total) instead of CLIENT_CANCEL or no cause.
//
// gRPC 1.51's Server::Shutdown(deadline) cancels the calls still running at
// `deadline`, and reports each to the glue exactly as a client cancel (it
// says nothing of why; its C++ API has no hook at shutdown). A server that
// shuts down through ShutdownServer below tells the glue first when that
// cancel begins; drain::CallTracker::CancelAll (given the same signal) does
// too. One signal per server:
//
//   auto shutdown = std::make_shared<drain::ShutdownSignal>();
//   ServerCallRules rules;
//   rules.shutdown = shutdown;               // server_interceptor.h
//   InstallServerInterceptorsWithRules(builder, rules);
//   drain::CallTracker calls(shutdown);      // if the server uses one
//   ...
//   drain::ShutdownServer(*server, *shutdown, absl::Now() + grace);
//
// What the glue then does (internal/server_call.h): a call gRPC reports
// closed before its status at or after the time the signal names (the
// shutdown's deadline, or CancelAll's moment) ends its Context with
// SERVER_SHUTDOWN; a call whose handler answers CANCELLED or UNAVAILABLE
// after that time with its Context not yet done (CallTracker ended only
// the tracked child) has its Context ended with SERVER_SHUTDOWN as its
// status goes out. A client cancel before that time stays CLIENT_CANCEL;
// one within the last kShutdownSlack before it, or after it, is counted as
// the shutdown's (gRPC cancels everything then anyway).
//
// Thread-safety: every method may be called from any thread at once.
// Memory ordering: Canceling() reads one atomic (relaxed: a time, not a
// hand-over of other data). Lifetime: ServerCallRules shares the signal, so
// it outlives the glue's use of it.
#ifndef REQCTX_DRAIN_SHUTDOWN_SIGNAL_H_
#define REQCTX_DRAIN_SHUTDOWN_SIGNAL_H_

#include <atomic>
#include <cstdint>
#include <limits>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace reqctx::drain {

// How long before the signalled time a cancel already counts as the
// shutdown's: gRPC compares its deadline on its own clocks, converted from
// the wall clock the deadline is given on.
inline constexpr absl::Duration kShutdownSlack = absl::Milliseconds(10);

class ShutdownSignal {
 public:
  ShutdownSignal() = default;
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // The server's calls still running at `deadline` (wall clock) will be
  // canceled by the shutdown: what to call just before
  // grpc::Server::Shutdown(deadline). An earlier time already signalled
  // stays.
  void CancelsAt(absl::Time deadline);
  // The server cancels its calls now (CancelsAt(absl::Now())).
  void CancelsNow() { CancelsAt(absl::Now()); }
  // True if a cancel seen at `now` (wall clock) is the shutdown's: a time
  // was signalled and `now` is at most kShutdownSlack before it.
  bool Canceling(absl::Time now) const;

 private:
  // Unix nanoseconds of the signalled time; max: none.
  std::atomic<int64_t> cancel_at_ns_{std::numeric_limits<int64_t>::max()};
};

// Shuts `server` down as grpc::Server::Shutdown(deadline) does (new calls
// refused at once, calls still running at `deadline` canceled; returns when
// they are over), having told `signal` first (CancelsAt(deadline)).
void ShutdownServer(grpc::Server& server, ShutdownSignal& signal,
                    absl::Time deadline);

}  // namespace reqctx::drain

#endif  // REQCTX_DRAIN_SHUTDOWN_SIGNAL_H_
