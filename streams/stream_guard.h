// StreamGuard: one streaming gRPC call bound to a Context, with a
// message-wait and an idle timeout (issue 22). The core shared by the
// sync (streams/sync.h), callback (streams/callback.h) and completion-queue
// (streams/async_cq.h) wrappers; use those. Direct use: the completion-queue API, or a shape the wrappers
// do not cover.
//
// What is bound. A guard makes the stream's Context, context(): a child of
// the call's Context (server: FromServerContext(sc); client: the Context the
// call's ClientContext was made from by NewClientContext). When context() is
// done -- the call's deadline (with a ServerPolicy default or cap, which
// gRPC itself does not know), a client cancel, a server shutdown, the
// parent's cancel, or one of the guard's timeouts below -- the guard cancels
// the gRPC call: grpc_call_cancel_with_status with Cause(context())'s code
// and message on the server side (the status FinalStatus gives the
// handler), context()'s code (CANCELLED or DEADLINE_EXCEEDED) and the
// cause's message on the client side -- on the server side the peer
// receives that status (e.g. DEADLINE_EXCEEDED
// "reqctx stream idle timeout ..."); on the client side it is followed by
// ClientContext::TryCancel (so reqctx's client interceptor sees the
// cancel). Every Read or Write waiting on the call then returns
// false, a sync Write blocked on flow control (a peer that does not read)
// included, and the handler or client gets status(), never a hang.
//
// Timeouts (StreamOptions), each off unless set:
//   * message_wait: the longest a Read may wait for its message, measured
//     from the Read's start (ReadStarted) to its end (ReadDone). Only
//     reads are timed: a handler that is slow between reads does not trip
//     it (gRPC buffers what the peer sends meanwhile; flow control then
//     stops the peer). On the client side the wait for the call's status
//     is a read too (the wrappers time it: sync Finish, the callback
//     ClientWriteReactor after its half-close, AsyncStream::Finish), so a
//     server that never answers a client-streaming call is cut.
//   * idle: the longest time with no message read or written, in either
//     direction, from the guard's creation or the last message on; a Write
//     blocked on flow control or a Read waiting counts as idle. Ended by
//     End().
// An expired timeout cancels context() with DEADLINE_EXCEEDED and a cause
// (so status() and the peer, when it is the server that cut) such as
// "reqctx stream message-wait timeout (200ms) expired: no message for 200ms
// after 3 messages received, 2 sent" or "reqctx stream idle timeout (1s)
// expired after 3 messages received, 2 sent". The timeouts count against
// the call's own deadline: whichever comes first ends the stream.
//
// Cost: no timer operation per message. With no timeout set the guard arms
// no timer at all (one AfterFunc on context(), for the cancel). With one
// set, a message costs a monotonic clock read and a relaxed atomic store;
// a single timer per stream (a deadline context and its AfterFunc) is
// armed lazily: when it fires, it checks the recorded times and, if nothing
// expired, re-arms itself for the earliest moment one could. So a stream
// re-arms at most once per timeout period however many messages pass (at
// most one timer operation per message in the worst case: one message per
// period). stats().timer_ops counts them (bench/stream_bench.cc).
//
// Metrics (metrics::Registry::Default(), method label as rpc_metrics.h's
// MethodLabel; metrics::RegisterStreamFamilies registers them up front):
//   reqctx_stream_messages_total{side,method,direction}   direction: in|out
//   reqctx_stream_duration_seconds{side,method}           histogram
//   reqctx_stream_timeouts_total{side,method,kind}        kind: message_wait|
//                                                         idle|deadline|
//                                                         cancelled
// recorded once, at End() (so per message nothing is shared between threads).
//
// Thread-safety: ReadStarted/ReadDone may be called from any thread but not
// concurrently with each other (one read at a time, as gRPC allows); the
// same for WriteStarted/WriteDone; a read and a write may overlap. Every
// other method is safe from any thread at any time.
// Lifetime: the guard must be destroyed (or End() called) before the call's
// ServerContext / ClientContext is: End() stops the guard's AfterFuncs and
// waits for one that is running, so no cancel touches the call afterwards.
// The guard cancels context() at End(), releasing what was derived from it.
// Callbacks: the guard runs none of the user's code.
#ifndef REQCTX_STREAMS_STREAM_GUARD_H_
#define REQCTX_STREAMS_STREAM_GUARD_H_

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/core.h"

namespace reqctx::streams {

struct StreamOptions {
  // Longest wait of one Read for its message; InfiniteDuration: off.
  absl::Duration message_wait = absl::InfiniteDuration();
  // Longest time with no message in either direction; InfiniteDuration: off.
  absl::Duration idle = absl::InfiniteDuration();
};

// OK, or kInvalidArgument naming the field ("message_wait", "idle") that is
// zero or negative.
absl::Status ValidateStreamOptions(const StreamOptions& options);

// Stream options per method, for a server: For(method) is the method's own
// options if Set, else the defaults. A plain value: set it up, then share it
// read-only.
class MethodStreamOptions {
 public:
  MethodStreamOptions() = default;
  // The defaults must be valid (ValidateStreamOptions); invalid ones are
  // replaced by StreamOptions{} -- call ValidateStreamOptions first.
  explicit MethodStreamOptions(StreamOptions defaults);
  // Sets `method`'s ("/pkg.Service/Method") options; ValidateStreamOptions'
  // error (nothing set) if they are invalid.
  absl::Status Set(std::string method, StreamOptions options);
  const StreamOptions& For(std::string_view method) const;
  const StreamOptions& defaults() const { return defaults_; }

 private:
  StreamOptions defaults_;
  std::map<std::string, StreamOptions, std::less<>> methods_;
};

// Which timeout (if any) ended a stream.
enum class StreamTimeout {
  kNone,
  kMessageWait,
  kIdle,
};

struct StreamStats {
  uint64_t messages_in = 0;   // Reads that returned a message.
  uint64_t messages_out = 0;  // Writes that succeeded.
  // Timer operations (arm and re-arm of the one lazy timer) so far.
  uint64_t timer_ops = 0;
  StreamTimeout timeout = StreamTimeout::kNone;
};

class StreamGuard {
 public:
  // Server side: binds the live call under `sc` (its Context from
  // FromServerContext(sc); an already-canceled one if the interceptor does
  // not know the call). `method` labels the metrics (empty: "_unknown").
  // `options` must be valid (ValidateStreamOptions); an invalid field is
  // treated as off.
  StreamGuard(grpc::ServerContextBase* sc, const StreamOptions& options,
              std::string_view method = {});
  // Server side, with the stream's Context a child of `parent`, which must
  // be FromServerContext(sc) or derived from it (e.g. a call tracked by
  // drain::CallTracker, so that its cancel -- and its cause -- cut the
  // stream as the call's own end does).
  StreamGuard(const Context& parent, grpc::ServerContextBase* sc,
              const StreamOptions& options, std::string_view method = {});
  // Client side: the stream's Context is a child of `ctx`, which should be
  // the Context `cc` was made from (NewClientContext(ctx)). The call is
  // bound with BindClientCall once started (a cancel before that uses
  // cc->TryCancel(), which gRPC applies when the call starts).
  StreamGuard(const Context& ctx, grpc::ClientContext* cc,
              const StreamOptions& options, std::string_view method = {});
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;
  // End().
  ~StreamGuard();

  // Client side, once the call exists (the stub's stream call returned, or
  // the callback stub's method was called): a later cancel carries
  // context()'s status to gRPC core. Call on the thread that started the
  // call, once. Also publishes (release; every method acquires) what that
  // thread wrote before, e.g. the rest of a reactor built around the guard.
  void BindClientCall();

  // The stream's Context: done when the call's Context is, when a timeout
  // expires, or at End(). Pass it to the work the stream's handler starts.
  const Context& context() const {
    (void)Acquire();
    return ctx_;
  }

  // A Read is about to wait (before gRPC's Read / StartRead).
  void ReadStarted();
  // The Read ended with `ok`; returns ok && the stream is still live
  // (counts the message when it returns true).
  bool ReadDone(bool ok);
  // A Write is about to be issued (before gRPC's Write / StartWrite).
  void WriteStarted();
  // The Write ended with `ok`; returns ok && the stream is still live.
  bool WriteDone(bool ok);

  // Cuts the stream now: cancels context() with `cause` (its code and
  // message, e.g. a handler's own kAborted; a non-error `cause` is taken as
  // CANCELLED), and so the call, as a timeout would. A no-op once context()
  // is done or after End().
  void Cut(absl::Status cause);
  // Server side: tells a stream that ended from a call that gRPC cancelled
  // (a handler's Read also returns false at the client's half-close).
  // Sync and callback APIs (IsCancelled() is always safe there), before
  // End(), as the wrappers do: if gRPC reports the call cancelled and
  // context() is still live, waits for the glue to end the call's Context
  // (within its bounds, see server_interceptor.h: a sync call's poll; a
  // cancel that is really the caller's deadline, at that deadline; at most
  // ~2 s) and takes its status, else Cuts with DEADLINE_EXCEEDED if the
  // call's deadline has passed (or is within 1% + 100 ms of it), else
  // CANCELLED. Completion-queue API: End() before sending the status (so
  // the release of the call's Context at its end is not taken for a cut),
  // then, once the AsyncNotifyWhenDone tag has been delivered (IsCancelled()
  // is unsafe before), call this: an uncut stream whose call was cancelled
  // then gets that status (FinalStatus, status()). A no-op on the client
  // side.
  void CheckCallCancelled();

  // True once context() is done.
  bool IsDone() const {
    (void)Acquire();
    return ctx_.IsDone();
  }
  // Whether the stream was cut: OK while live and after an End() that
  // found context() live; else Cause(context()) as it was when context()
  // became done (a timeout's DEADLINE_EXCEEDED with its message, or the
  // call's CANCELLED / DEADLINE_EXCEEDED). The release of context() by
  // End() is not a cut.
  absl::Status status() const;
  // The status a handler should send (server) or report (client) given the
  // one it has, `s`: `s` if the stream was never cut (status() OK), else
  // status() as a grpc::Status (a cut stream's call is cancelled; when the
  // server side cut it, this is what the peer was told).
  grpc::Status FinalStatus(const grpc::Status& s) const;
  StreamStats stats() const;

  // The stream is over: stops the guard's AfterFuncs (waiting for one that
  // is running), records the metrics and releases context() (canceled).
  // Idempotent; any thread, but not from inside a Read/Write.
  void End();

  // Process-wide count of live guards (created, not yet ended). For tests.
  static int64_t LiveForTesting();

 private:
  struct State;
  void Init(const Context& parent, const StreamOptions& options,
            std::string_view method, bool server);

  // Published by the constructors (release) and acquired by every method:
  // gRPC hands a reactor's callbacks to its threads through gRPC core,
  // which ThreadSanitizer cannot see; this makes the guard's construction
  // visible to it (an acquire load costs a plain load on x86).
  const State& Acquire() const {
    (void)published_.load(std::memory_order_acquire);
    return *state_;
  }
  Context ctx_;
  std::shared_ptr<State> state_;
  std::atomic<bool> published_{false};
};

}  // namespace reqctx::streams

#endif  // REQCTX_STREAMS_STREAM_GUARD_H_
