// ServerCall: the Context of one incoming gRPC call and what ends it
// (internal to //interceptors).
//
// Created by the server interceptor when the call's metadata arrives, shared
// (std::shared_ptr) by that interceptor, the ServerCallRegistry (while the
// call is live) and the SyncCancelWatcher (while it watches). The Context is
// canceled, at the latest, when the call ends (End()) or when the last owner
// lets go (dropping the CancelFunc cancels), so no Context outlives its call.
//
// Deadline vs. cancel: when a client cancel arrives within kDeadlineSlack of
// this call's deadline it is almost always the caller's own deadline firing
// first (each hop's deadline is the caller's plus transit time). The Context
// is then left to its own deadline timer, which fires within the slack, so
// every hop reports DEADLINE_EXCEEDED rather than a race-dependent CANCELLED.
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

#include "absl/time/time.h"
#include "context/core.h"

namespace grpc {
class ServerContext;
}  // namespace grpc

namespace reqctx::internal {

inline constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(20);

class ServerCall : public std::enable_shared_from_this<ServerCall> {
 public:
  // `sync_context` is the call's grpc::ServerContext if it is served by the
  // synchronous API (whose cancellation must be polled), else nullptr.
  ServerCall(grpc::ServerContext* sync_context, Context ctx, CancelFunc cancel,
             std::optional<absl::Time> deadline);
  ServerCall(const ServerCall&) = delete;
  ServerCall& operator=(const ServerCall&) = delete;

  const Context& context() const { return ctx_; }

  // The handler is running (it asked for its Context). For a sync call this
  // starts the polling for client cancellation: only now is it safe, since
  // gRPC sets up the call's close notification just before the handler.
  void OnHandlerStarted();
  // The call was closed or canceled before the server sent its status:
  // client cancel, deadline, server shutdown or a server-side TryCancel.
  void OnCancelled();
  // When OnCancelled first canceled the Context (the clock of MonoNowNs in
  // call_observer.h), or 0 if it never did.
  int64_t cancel_seen_ns() const { return cancel_seen_ns_.load(); }
  // The call is over (status sent, call closed, or interceptor gone): stops
  // watching and cancels (releases) the Context. Idempotent.
  void End();

  // For SyncCancelWatcher: checks grpc::ServerContext::IsCancelled() and acts
  // on it. Returns false once the call needs no more polling.
  bool PollCancelled();

 private:
  // After this returns, PollCancelled no longer touches the ServerContext.
  void StopWatching();

  grpc::ServerContext* const sync_context_;
  const Context ctx_;
  const CancelFunc cancel_;
  const std::optional<absl::Time> deadline_;
  std::atomic<bool> handler_started_{false};
  std::atomic<int64_t> cancel_seen_ns_{0};

  std::mutex watch_mu_;
  bool watching_ = false;  // Guarded by watch_mu_.
  bool ended_ = false;     // Guarded by watch_mu_.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_H_
