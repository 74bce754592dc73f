// ServerCall: the one owner of an incoming gRPC call's state in reqctx
// (internal to //interceptors): its Context and CancelFunc, its deadline, its
// API, whether its status went out (and which), its observer (metrics,
// orphan watch, call log) and its one end flag.
//
// The server interceptor (one per call, made by gRPC) creates the ServerCall
// in its constructor and forwards each hook to it: Begin (the first hook,
// POST_RECV_INITIAL_METADATA, after starting observer()), OnStatusSending
// (PRE_SEND_STATUS), OnClosed (POST_RECV_CLOSE), OnCancelled
// (PRE_SEND_CANCEL: a server-side TryCancel) and End (the interceptor is
// destroyed). It keeps no state of its own.
//
// Deadline: on the callback and sync APIs the Context's deadline is owned,
// not armed (context/internal/owned_deadline.h), when it is the caller's
// deadline itself (no ServerCallRules deadline rule changed it): gRPC
// enforces the incoming deadline and reports it as the call's close (pushed
// on the callback API, seen by the sync watcher's IsCancelled() poll), so no
// reqctx timer is queued per call. On the async API (whose close waits for
// the application's completion queue), and for a deadline a rule changed
// (gRPC does not know it), the deadline's timer is armed as WithTimeout's.
// Deadline vs. cancel: OnCancelled() is the one place that ends the Context
// on a close or cancel before the status; it asks IncomingDeadline (which
// decides) whether that is the caller's deadline. If so it arms the
// Context's deadline then (ArmOwnedDeadline: the one case where a timer is
// queued for a server call), so the Context ends with DEADLINE_EXCEEDED at
// its own deadline, at most IncomingDeadline::Window() later, and so does
// each later hop, whose deadline is later by the grpc-timeout rounding;
// otherwise it cancels at once (CANCELLED).
//
// Thread-safety: every method may be called from any thread, except Begin
// (once, first). Fields set by Begin are published by `begun_` (release /
// acquire), so later hooks on other threads read them without a lock.
// PollCancelled and StopWatching exclude each other (watch_mu_), so once End
// has returned the watcher never touches the grpc::ServerContext again; this
// is what keeps the watcher from outliving the ServerContext.
//
// Lifetime: shared (std::shared_ptr) by the interceptor, the
// ServerCallRegistry (from Begin to End) and, on the sync API, the
// SyncCancelWatcher (until its next pass after End). The Context is
// canceled, at the latest, at End(), so no Context outlives its call.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_H_
#define REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "context/core.h"
#include "drain/shutdown_signal.h"
#include "interceptors/internal/call_ledger.h"
#include "interceptors/internal/call_observer.h"
#include "ledger/causes.h"
#include "interceptors/internal/incoming_deadline.h"

namespace grpc {
class ServerContextBase;
}  // namespace grpc

namespace reqctx::internal {

// Which of gRPC's three server APIs serves a call (see server_interceptor.h).
enum class ServerApi {
  kCallback,  // grpc::CallbackServerContext: close pushed (POST_RECV_CLOSE).
  kSync,      // grpc::ServerContext on a gRPC sync-server thread: polled.
  kAsync,     // Any other grpc::ServerContext: the completion-queue API.
};

class ServerCall : public std::enable_shared_from_this<ServerCall> {
 public:
  // `sc`: the call's context; a registry key, and polled on the sync API
  // while the call is live. Not dereferenced until Begin.
  explicit ServerCall(const grpc::ServerContextBase* sc) : sc_(sc) {}
  ServerCall(const ServerCall&) = delete;
  ServerCall& operator=(const ServerCall&) = delete;

  // The first hook: takes the call's Context (made by the interceptor for
  // `api`), its CancelFunc, the caller's deadline (nullopt: none) and
  // whether the Context's deadline is owned (made by WithOwnedTimeout: true
  // on the callback and sync APIs unless a rule changed the deadline);
  // registers the call for FromServerContext and, on the sync API, starts
  // polling it. Once, before any other method; observer() may be started
  // before it.
  void Begin(ServerApi api, Context ctx, CancelFunc cancel,
             std::optional<IncomingDeadline> deadline, bool deadline_owned);
  // The server's shutdown signal (ServerCallRules::shutdown; null: none),
  // before Begin (which publishes it): a close or cancel it says is the
  // shutdown's ends the Context with SERVER_SHUTDOWN instead of
  // CLIENT_CANCEL, and a CANCELLED or UNAVAILABLE status sent once it does
  // ends a Context not yet done with SERVER_SHUTDOWN (LedgerStatus). The
  // signal must outlive the call (the rules' factory holds it).
  void SetShutdownSignal(const drain::ShutdownSignal* signal) {
    shutdown_ = signal;
  }
  // When the interceptor's first hook saw the call (MonoNowNs in
  // call_observer.h), before Begin (which publishes it); 0 until then.
  void SetArrival(int64_t arrival_ns) { arrival_ns_ = arrival_ns; }
  int64_t arrival_ns() const { return arrival_ns_; }

  // The Context; valid once Begin has run, on any thread that learned of
  // the call after it (the registry, or the thread that ran Begin).
  const Context& context() const { return ctx_; }
  // The call's grpc::ServerContextBase (given at construction).
  const grpc::ServerContextBase* server_context() const { return sc_; }
  // The call's observer: started by the interceptor's first hook (on that
  // hook's thread, before Begin publishes the call), finished by End.
  ServerCallObserver& observer() { return observer_; }
  // The call's budget ledger: begun by the interceptor's first hook (before
  // Begin publishes the call), returned at PRE_SEND_STATUS
  // (call_ledger.h).
  CallLedger& ledger() { return ledger_; }
  // The ledger of the live server call whose Context `ctx` was derived
  // from (ContextRoot), sharing that call's ownership; null if there is
  // none (a Context not from a server call, or the call has ended).
  static std::shared_ptr<CallLedger> LedgerOf(const Context& ctx);

  // PRE_SEND_STATUS, before OnStatusSending: the status to send instead of
  // `status` (CallLedger::StatusToSend with the call's Context), or nullopt
  // to send it unchanged (always before Begin). First ends the Context with
  // SERVER_SHUTDOWN if the shutdown signal says so (SetShutdownSignal).
  std::optional<grpc::Status> LedgerStatus(
      const grpc::Status& status,
      const std::multimap<std::string, std::string>* trailers);
  // PRE_SEND_STATUS with status `code` (a grpc::StatusCode): the call ends
  // (End()).
  void OnStatusSending(int code);
  // POST_RECV_CLOSE: after the status went out, the call ended (End());
  // before it, the call was canceled (OnCancelled()).
  void OnClosed();
  // The call was closed or canceled before the server sent its status:
  // client cancel, deadline (gRPC's, or the caller's cancel at it), server
  // shutdown or a server-side TryCancel. Ends the Context with CANCELLED
  // now, with cause `cause` (kNone: no cause), or with DEADLINE_EXCEEDED at
  // its deadline and that deadline's cause (IncomingDeadline decides; see
  // above). Does not end the call: FromServerContext still finds it.
  void OnCancelled(CauseKind cause = CauseKind::kClientCancel);
  // Ends the Context now with `cause` (CancelServerCall in
  // server_interceptor.h): a refusal before the handler. A no-op before
  // Begin or once the Context is done.
  void CancelWith(const absl::Status& cause);
  // The call is held before its handler starts (see
  // HoldingServerCall in server_interceptor.h): an owned deadline is armed
  // now, so the Context ends at it without gRPC's close. A no-op if the
  // deadline is not owned, or before Begin.
  void ArmDeadline();
  // When OnCancelled first canceled the Context (the clock of MonoNowNs in
  // call_observer.h), or 0 if it never did.
  int64_t cancel_seen_ns() const { return cancel_seen_ns_.load(); }
  // The call is over: unregisters it, stops the polling, finishes the
  // observer (with the status sent, or CANCELLED if none was) and cancels
  // (releases) the Context -- with DEADLINE_EXCEEDED if the caller's
  // deadline has passed. A no-op before Begin. Idempotent: the one end flag.
  // Then runs the functions given to AtEnd, on this thread.
  void End();
  // Runs `f` once the call is over (End(): its status sent, or the call gone
  // without one) -- not merely once its Context is done: a handler that
  // ignores its Context is still running after a deadline or a cancel. At
  // once, on this thread, if End() has run (or started running) already.
  // `f` must not block.
  void AtEnd(std::function<void()> f);

  // Starts polling the call (sync API only: on the async API IsCancelled()
  // is unsafe before the AsyncNotifyWhenDone tag). A no-op if already
  // watched, before Begin or after End.
  void StartWatching();
  // The first half of StartWatching: marks the call watched and returns
  // true, or returns false (nothing to watch) under the same conditions as
  // StartWatching's no-op. The caller then hands shared_from_this() to a
  // watcher (tests and benchmarks use their own).
  bool BeginWatching();

  // For SyncCancelWatcher: checks IsCancelled() and acts on it, from the
  // second pass that finds the call on (the first only notes it). Returns
  // false once the call needs no more polling.
  bool PollCancelled();

 private:
  // After this returns, PollCancelled no longer touches the ServerContext.
  void StopWatching();
  // True if the shutdown signal says the server cancels its calls now.
  bool IsShutdownCancel() const;

  const grpc::ServerContextBase* const sc_;
  // Written once by Begin, before begun_ is set; immutable afterwards.
  ServerApi api_ = ServerApi::kAsync;
  Context ctx_;
  CancelFunc cancel_;
  std::optional<IncomingDeadline> deadline_;
  bool deadline_owned_ = false;
  const void* ctx_root_ = nullptr;  // ContextRoot(ctx_).
  const drain::ShutdownSignal* shutdown_ = nullptr;  // May be null.
  int64_t arrival_ns_ = 0;  // Written before Begin; immutable afterwards.

  // Started before begun_ is set; finished by the one End.
  ServerCallObserver observer_;
  CallLedger ledger_;

  std::atomic<bool> begun_{false};
  std::atomic<bool> status_sent_{false};
  std::atomic<int> sent_code_{0};  // Written before status_sent_ is set.
  std::atomic<int64_t> cancel_seen_ns_{0};
  std::atomic<bool> ended_{false};  // The one end flag (End has run).
  std::atomic<bool> end_done_{false};  // That End has returned.

  // Set by the first PollCancelled (see there); only the one thread that
  // runs a watcher's passes touches it.
  bool seen_by_watcher_ = false;

  std::mutex at_end_mu_;
  bool at_end_ran_ = false;                       // Guarded by at_end_mu_.
  std::vector<std::function<void()>> at_end_;     // Guarded by at_end_mu_.

  std::mutex watch_mu_;
  // Written under watch_mu_; also read without it (a set flag is final).
  std::atomic<bool> watch_started_{false};
  bool watching_ = false;       // Guarded by watch_mu_.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_H_
