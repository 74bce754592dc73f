// Ending a server's in-flight calls with a cause when it shuts down.
//
// gRPC's Server::Shutdown(deadline) cancels the calls still running at the
// deadline, and reqctx's glue turns that into a canceled Context -- with no
// cause: a handler, and whatever it called on other hops, cannot tell a
// shutdown from a client that went away, and answers CANCELLED (which
// clients do not retry). CallTracker lets a server do it first, with a
// cause:
//
//   drain::CallTracker calls;                       // one per server
//   grpc::Status Handle(grpc::ServerContext* sc, ...) {
//     drain::CallTracker::Call call = calls.Track(FromServerContext(sc));
//     const Context& ctx = call.context();          // use this one
//     absl::Status s = DoWork(ctx, ...);            // outbound calls too
//     return ToGrpcStatus(drain::ShutdownStatusOr(ctx, s));
//   }
//   // On SIGTERM, once the grace is over:
//   calls.CancelAll();   // every ctx ends, Cause(ctx) = ShuttingDownError()
//
// Outbound calls made under a tracked Context are canceled with it, so the
// next hop's handler sees its own Context end (as a client cancel: a cause
// does not cross the wire).
//
// Thread-safety: every method may be called from any thread at once.
// Lifetime: a Call must not outlive its tracker; the tracker must outlive
// its Calls. Memory ordering: what a thread did before CancelAll returns
// happens-before what a handler does after it saw its Context done.
#ifndef REQCTX_DRAIN_CALL_TRACKER_H_
#define REQCTX_DRAIN_CALL_TRACKER_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "drain/shutdown_signal.h"

namespace reqctx::drain {

// UNAVAILABLE "server shutting down", marked CauseKind::kServerShutdown
// (ledger/causes.h: CauseOf() of it says SERVER_SHUTDOWN): the cause
// CancelAll gives, and the status a call it ended should answer
// (UNAVAILABLE: clients may retry it on another server).
absl::Status ShuttingDownError();
// True if `s` is ShuttingDownError() (code and message).
bool IsShuttingDown(const absl::Status& s);
// ShuttingDownError() if `s` is an error and `ctx` was ended by CancelAll
// (Cause(ctx) is ShuttingDownError()), else `s`: what a handler answers.
absl::Status ShutdownStatusOr(const Context& ctx, const absl::Status& s);

class CallTracker {
 public:
  // One tracked call: its Context (a child of the call's) stays live until
  // CancelAll, the call's own end, or this object's destruction, which
  // stops tracking it (and cancels the child, so nothing derived from it
  // outlives the handler). Move-only.
  class Call {
   public:
    Call(Call&& other) noexcept;
    Call& operator=(Call&&) = delete;
    Call(const Call&) = delete;
    ~Call();
    const Context& context() const { return ctx_; }

   private:
    friend class CallTracker;
    Call(CallTracker* tracker, uint64_t id, Context ctx)
        : tracker_(tracker), id_(id), ctx_(std::move(ctx)) {}
    CallTracker* tracker_;  // Null once moved from.
    uint64_t id_;
    Context ctx_;
  };

  CallTracker() = default;
  // With the server's shutdown signal (drain/shutdown_signal.h, also given
  // to the glue as ServerCallRules::shutdown): CancelAll tells it first, so
  // the server calls themselves -- not only the tracked Contexts -- end
  // with SERVER_SHUTDOWN in the ledger, the call log and the metric.
  explicit CallTracker(std::shared_ptr<ShutdownSignal> signal)
      : signal_(std::move(signal)) {}
  CallTracker(const CallTracker&) = delete;
  CallTracker& operator=(const CallTracker&) = delete;

  // Tracks a call whose Context is `call_ctx`. After CancelAll the returned
  // Context is done at once, with the shutdown cause.
  Call Track(const Context& call_ctx);

  // Cancels every tracked call's Context with ShuttingDownError(), and
  // every call tracked from now on (after telling the signal, if any:
  // CancelsNow()). Returns how many were in flight.
  // Idempotent (later calls return 0).
  size_t CancelAll();

  // Calls tracked now.
  size_t in_flight() const;

  // Waits until no call is tracked, or until `deadline`; true if none is.
  bool WaitIdle(absl::Time deadline);

 private:
  void Untrack(uint64_t id);

  const std::shared_ptr<ShutdownSignal> signal_;  // May be null.
  mutable std::mutex mu_;
  std::condition_variable idle_;
  absl::flat_hash_map<uint64_t, CancelCauseFunc> calls_;  // Under mu_.
  uint64_t next_id_ = 0;                                  // Under mu_.
  bool canceled_ = false;                                 // Under mu_.
};

}  // namespace reqctx::drain

#endif  // REQCTX_DRAIN_CALL_TRACKER_H_
