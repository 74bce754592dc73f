// CallLedger: one server call's budget ledger (ledger/ledger.h) as the glue
// keeps it (internal to //interceptors). Part of the call's one owner,
// ServerCall (embedded: no allocation of its own), and reachable from the
// call's Context (ServerCall::LedgerOf: by the Context's root, while the
// call is live), so outbound calls made under that Context -- in the
// handler, in a Group, on any thread -- record themselves into it
// (client_interceptor.cc).
//
// What is recorded, and by whom:
//   * Begin (the server interceptor's first hook): method, host label,
//     arrival, budget at arrival; the handler is taken to start then;
//   * NotePolicy / NoteQueued (reqctx::policy's wrapper, before the
//     handler): the policy's decisions, the reply margin, the time queued
//     in the load shedder (the handler then starts when the queue let it
//     go);
//   * OutboundStarted / OutboundEnded (the client interceptor, any thread);
//   * StatusToSend (PRE_SEND_STATUS): the handler ended; how the call ended
//     and its cause (CauseOf(Cause(ctx))); on a status that returns the
//     ledger, the status with it (WithLedger).
// The success path records three times and a code; nothing is allocated or
// serialised unless the ledger is returned.
//
// Thread-safety: every method may be called from any thread. The owner's
// records (Begin, NotePolicy, NoteQueued, StatusToSend, OwnShare) are under
// one std::mutex; outbound records are the recorder's own (its mutex).
// Begin runs before the call is published (ServerCall::Begin).
// Lifetime: the ledger lives as long as its ServerCall; it is found from a
// Context only until the call ends, so an outbound call started after that
// (a detached one) records nothing.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_CALL_LEDGER_H_
#define REQCTX_INTERCEPTORS_INTERNAL_CALL_LEDGER_H_

#include <grpcpp/support/status.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "context/core.h"
#include "interceptors/server_interceptor.h"
#include "ledger/ledger.h"

namespace reqctx::internal {

// The request header that asks every hop to return its ledger whatever the
// call's status ("reqctx-ledger: always"); forwarded by the glue on the
// outbound calls made under such a call. Any other value is ignored.
inline constexpr std::string_view kLedgerRequestHeader = "reqctx-ledger";
inline constexpr std::string_view kLedgerRequestAlways = "always";

// The ledger's clock: the monotonic clock (MonoNowNs) as an absl::Time.
absl::Time LedgerNow();

class CallLedger {
 public:
  CallLedger() = default;
  CallLedger(const CallLedger&) = delete;
  CallLedger& operator=(const CallLedger&) = delete;

  // The call arrived at `arrival` (LedgerNow's clock) with `budget` left
  // (nullopt: no deadline). `method` and `host` must outlive the ledger.
  // `send`: when StatusToSend returns it (the server's option, or kAlways
  // when the request header asked); `forward`: ask the next hops for
  // theirs on every status too (the request header). Once, before the
  // call is published.
  void Begin(std::string_view method, std::string_view host,
             absl::Time arrival, std::optional<absl::Duration> budget,
             LedgerReturn send, bool forward);

  // reqctx::policy's decisions for the call and its reply margin (if any).
  void NotePolicy(const LedgerPolicy& policy,
                  std::optional<absl::Duration> reply_margin);
  // The call waited `queued` in a load shedder's queue, and was shed if
  // `shed`; its handler starts now.
  void NoteQueued(absl::Duration queued, bool shed);

  // The policy refused the call for `cause` (kMinBudget); also set by
  // NoteQueued when shed (kShed). The call's cause when its Context has
  // none.
  void NoteRefused(CauseKind cause);

  // An outbound call starts under the call's Context (the client
  // interceptor); -1 after the call's end or before Begin.
  LedgerRecorder::OutboundId OutboundStarted(
      std::string_view method, std::optional<absl::Duration> budget);
  // It ended (see LedgerRecorder::OutboundEnded; `peer`: the callee's
  // address, kept for a sent, failed call without `child`).
  void OutboundEnded(LedgerRecorder::OutboundId id, int code, bool sent,
                     std::optional<LedgerHop> child,
                     std::string_view peer = {});
  // Whether outbound calls ask their hops for the ledger on every status.
  bool forward() const { return forward_; }

  // At PRE_SEND_STATUS: the handler ended now. If `status` returns the
  // ledger (LedgerRecorder::ShouldReturn under kOnFailure; any status under
  // kAlways; none under kNever), the status to send
  // instead: `status` with this hop's ledger in its details (WithLedger's
  // rule: a status's own details are kept, foreign ones never replaced),
  // or, for OK, OK with the ledger as details (sent in the
  // grpc-status-details-bin trailer; gRPC's client keeps OK's details only
  // in the trailers). nullopt: send `status` unchanged -- nothing to
  // return, before Begin, or `trailers` already carries
  // grpc-status-details-bin (the application's own). `ctx`: the call's
  // Context (its cause).
  std::optional<grpc::Status> StatusToSend(
      const grpc::Status& status,
      const std::multimap<std::string, std::string>* trailers,
      const Context& ctx);

  // The hop's own share of the budget so far: queued + own work (the
  // handler's time without outbound calls in flight), up to the handler's
  // end or, if it has not ended, `now`. Zero before Begin.
  absl::Duration OwnShare(absl::Time now);

  // The ledger so far (allocates; tests and logs).
  std::optional<Ledger> Snapshot();

 private:
  std::mutex mu_;
  std::optional<LedgerRecorder> rec_;  // Emplaced by Begin.
  LedgerReturn send_ = LedgerReturn::kOnFailure;  // Written by Begin.
  bool forward_ = false;               // Written by Begin.
  LedgerPolicy policy_;                 // Guarded by mu_.
  CauseKind refused_ = CauseKind::kNone;  // Guarded by mu_.
  std::optional<absl::Duration> reply_margin_;  // Guarded by mu_.
  bool ended_ = false;                 // Guarded by mu_; StatusToSend ran.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_CALL_LEDGER_H_
