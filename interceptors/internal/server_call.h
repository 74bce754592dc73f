// ServerCall: the Context of one incoming gRPC call and what ends it
// (internal to //interceptors).
//
// Created by the server interceptor when the call's metadata arrives, shared
// (std::shared_ptr) by that interceptor, the ServerCallRegistry (while the
// call is live) and the SyncCancelWatcher (while it watches). The Context is
// canceled, at the latest, when the call ends (End()) or when the last owner
// lets go (dropping the CancelFunc cancels), so no Context outlives its call.
//
// Deadline vs. cancel: OnCancelled() asks IncomingDeadline (the one place
// that decides) whether a cancel seen now is the caller's deadline; if so the
// Context is left to its own deadline timer, which fires within the
// encoding's rounding (see incoming_deadline.h), so every hop reports
// DEADLINE_EXCEEDED rather than a race-dependent CANCELLED.
//
// Thread-safety: every method may be called from any thread. PollCancelled
// and StopWatching exclude each other per call (watch_mu_), so once
// StopWatching returns, the watcher never touches the grpc::ServerContext
// again; this is what keeps the watcher from outliving the ServerContext.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_H_
#define REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "context/core.h"
#include "interceptors/internal/incoming_deadline.h"

namespace grpc {
class ServerContextBase;
}  // namespace grpc

namespace reqctx::internal {

class ServerCall : public std::enable_shared_from_this<ServerCall> {
 public:
  ServerCall(Context ctx, CancelFunc cancel,
             std::optional<IncomingDeadline> deadline);
  ServerCall(const ServerCall&) = delete;
  ServerCall& operator=(const ServerCall&) = delete;

  const Context& context() const { return ctx_; }

  // Starts polling `sc`, the call's context on gRPC's synchronous API (whose
  // cancellation must be polled; see sync_cancel_watcher.h), on the shared
  // SyncCancelWatcher. Only for the sync API: on the async API IsCancelled()
  // is unsafe before the AsyncNotifyWhenDone tag is delivered. Once per
  // call; a no-op after End().
  void StartWatching(const grpc::ServerContextBase* sc);
  // The first half of StartWatching: records `sc` and marks the call
  // watched; returns false (nothing to watch) if it already was or the call
  // has ended. The caller then hands shared_from_this() to a watcher.
  bool BeginWatching(const grpc::ServerContextBase* sc);

  // The call was closed or canceled before the server sent its status:
  // client cancel, deadline, server shutdown or a server-side TryCancel.
  void OnCancelled();
  // When OnCancelled first canceled the Context (the clock of MonoNowNs in
  // call_observer.h), or 0 if it never did.
  int64_t cancel_seen_ns() const { return cancel_seen_ns_.load(); }
  // The call is over (status sent, call closed, or interceptor gone): stops
  // watching and cancels (releases) the Context. Idempotent.
  void End();

  // For SyncCancelWatcher: checks IsCancelled() and acts on it. Returns
  // false once the call needs no more polling.
  bool PollCancelled();

 private:
  // After this returns, PollCancelled no longer touches the ServerContext.
  void StopWatching();

  const Context ctx_;
  const CancelFunc cancel_;
  const std::optional<IncomingDeadline> deadline_;
  std::atomic<int64_t> cancel_seen_ns_{0};

  std::mutex watch_mu_;
  const grpc::ServerContextBase* sync_context_ = nullptr;  // Guarded.
  bool watching_ = false;  // Guarded by watch_mu_.
  bool ended_ = false;     // Guarded by watch_mu_.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_H_
