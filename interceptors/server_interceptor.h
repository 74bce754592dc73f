// Server side of reqctx's gRPC glue: every incoming call gets a Context.
//
// Install the interceptor on a server (InstallServerInterceptors, or add
// MakeServerInterceptorFactory() to your own interceptor list), then in a
// handler call FromServerContext(context) for the call's Context. For every
// call, unary and streaming, on the sync, callback and completion-queue
// (async) APIs, also mixed on one server:
//   * the Context has the incoming deadline (`grpc-timeout`; none if the
//     caller set none), taken as the time remaining when the call arrives
//     (as WithTimeout), and is done with DEADLINE_EXCEEDED when that time
//     has passed (by the monotonic clock, as the core's WithTimeout
//     measures). On the callback and sync APIs no reqctx timer is armed for
//     it: gRPC enforces the incoming deadline itself and reports it as the
//     call's close (pushed on the callback API, polled on the sync API, so
//     within the cancel bounds below), and the glue ends the Context then;
//     on the async API, whose close waits for the application's queue, and
//     for a deadline a ServerCallRules rule changed (gRPC does not know it),
//     the Context's own timer is armed (internal/server_call.h);
//   * it is canceled when the client cancels, when the server shuts down
//     (grpc::Server::Shutdown(deadline) cancels in-flight calls once the
//     deadline passes) and, at the latest, when the call ends (its status is
//     sent), so nothing derived from it outlives the call;
//   * a cancel that is really the caller's deadline is reported as
//     DEADLINE_EXCEEDED, in every range of the grpc-timeout encoding: gRPC
//     rounds the timeout up (100 ms units between 10 and 100 s, coarser
//     above), so this hop's deadline is up to ~1% (+100 ms for transit)
//     later than its caller's, and a cancel that arrives within that much of
//     the deadline is left to the deadline, which then fires within that
//     window (internal/incoming_deadline.h, the one place that decides); an
//     earlier cancel cancels at once;
//   * it ends with a cause (Cause(ctx); ledger/causes.h): CALLER_DEADLINE
//     at the caller's deadline, DEADLINE_POLICY or REPLY_MARGIN at a
//     deadline a rule set (HandlerBudget), CLIENT_CANCEL when gRPC reports
//     the call closed before its status (a client cancel or reset, a lost
//     connection, or gRPC's own Server::Shutdown cancel: gRPC does not say
//     which; drain::CallTracker gives SERVER_SHUTDOWN to the Contexts it
//     tracks), SERVER_SHUTDOWN for the call itself when the server's
//     shutdown signal (ServerCallRules::shutdown, drain/shutdown_signal.h)
//     says its calls are being canceled by then; none when the handler's own TryCancel or the call's end
//     canceled it. The metric reqctx_server_handled_total and the call log
//     carry that cause's name;
//   * it carries the call's TraceContext: a valid incoming W3C `traceparent`
//     keeps its trace id with a fresh span id for this hop, anything else
//     starts a new trace (never failing the call); of `tracestate` only the
//     valid members are kept (W3C grammar, so only bytes 0x20-0x7E; no
//     repeated key), at most 32 and 512 bytes, trimmed by W3C's rules
//     (w3c/tracestate.h); of `baggage` only the valid members (W3C grammar:
//     tokens, baggage-octets, percent-encoding), at most 180 and 8,192 bytes
//     (w3c/baggage.h). Every member dropped is counted
//     (w3c/header_rules.h). So whatever a peer sends, what the Context
//     forwards on an outbound call (client_interceptor.h, which also trims
//     it to the outbound header budget) is legal on gRPC's wire;
//   * in sync handlers, Current() is the call's Context for the handler's
//     duration (a scope opened and closed around the handler, on its
//     thread), and sees a client cancel or a server shutdown within the same
//     bound as FromServerContext(sc).Done(), whether or not the handler ever
//     calls FromServerContext. Callback and async handlers get no Current()
//     scope (their code runs on threads that serve many calls): pass the
//     Context explicitly there.
// How cancellation is noticed, by API:
//   * callback API (grpc::CallbackServerContext): pushed by gRPC
//     (POST_RECV_CLOSE), at once;
//   * sync API: gRPC 1.51 has no push notification, so a shared thread polls
//     IsCancelled() (documented as safe at any time on the sync API) of every
//     sync call every 5 ms from the second poll after it arrives (so calls
//     shorter than that are never polled; slower when a pass takes longer,
//     with thousands of calls in flight); a client cancel or a shutdown
//     reaches the Context within ~5 ms plus one pass, ~10 ms for a call
//     younger than 5 ms (internal/sync_cancel_watcher.h);
//   * async (completion-queue) API: gRPC delivers every call's close through
//     the application's completion queue, whether or not the service asked
//     for an AsyncNotifyWhenDone tag; the Context is canceled when the
//     queue's Next() processes it. Nothing else is required of an async
//     service: request calls as usual (with AsyncNotifyWhenDone if the
//     service wants its own tag), call FromServerContext(&ctx) once the
//     request's tag is delivered, keep draining the queue. The glue never
//     calls IsCancelled() on an async call (unsafe before the
//     AsyncNotifyWhenDone tag arrives; without one it crashes gRPC 1.51).
// How the API is told apart: grpc::CallbackServerContext is the callback
// API; a grpc::ServerContext whose call arrives on one of gRPC's sync-server
// threads (gRPC 1.51 names them "grpcpp_sync_server") is the sync API; any
// other grpc::ServerContext is the async API. Should a sync call not be
// recognised (a gRPC build that does not name its threads), it is treated
// as async until its handler calls FromServerContext on its own thread,
// which proves it sync and starts the polling; Current() is then not set
// for it.
//
// Thread-safety: all functions are safe from any thread. FromServerContext
// may be called from any thread while the call is live (before the handler
// returns / Finish is called).
// Ownership/lifetime: the returned Context is a handle (copy it freely); it
// is canceled when the call ends, and the per-call state is freed with the
// call.
#ifndef REQCTX_INTERCEPTORS_SERVER_INTERCEPTOR_H_
#define REQCTX_INTERCEPTORS_SERVER_INTERCEPTOR_H_

#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/server_interceptor.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "drain/shutdown_signal.h"
#include "ledger/causes.h"
#include "ledger/ledger.h"

namespace reqctx {

// What a ServerCallRules deadline rule returns: the handler's remaining time
// (nullopt: no deadline) and the cause its Context ends with when that time
// runs out, if it is not the caller's own deadline (the same remaining time
// as the caller's is always CALLER_DEADLINE). Made implicitly from the
// remaining time alone (cause DEADLINE_POLICY).
struct HandlerBudget {
  HandlerBudget(std::optional<absl::Duration> r = std::nullopt,  // NOLINT
                CauseKind c = CauseKind::kDeadlinePolicy)
      : remaining(r), cause(c) {}
  std::optional<absl::Duration> remaining;
  CauseKind cause;
};

// When a server call returns its budget ledger (ServerCallRules::
// ledger_return). Every call records one either way (it feeds
// reqctx_budget_consumed_seconds and the call log).
enum class LedgerReturn {
  // With DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED and UNAVAILABLE;
  // with every status when the request carries the header
  // `reqctx-ledger: always` (which the glue then forwards on the outbound
  // calls made under the call's Context, so the whole tree comes back).
  kOnFailure,
  // With every status, OK included (OK's is in the grpc-status-details-bin
  // trailer: LedgerFromTrailers; gRPC's client drops OK's details from the
  // Status).
  kAlways,
  // Never, whatever the request asks: for an edge whose clients should not
  // see the hops, methods and timings behind it.
  kNever,
};

// Optional per-call rules a server adds to the glue (reqctx::policy's
// ServerPolicy installs its deadline policies and criticality this way).
// `deadline` and `values` run once per call, when its metadata arrives,
// before the handler; `trailers` when its status is sent; a rule left empty
// changes nothing.
struct ServerCallRules {
  // Given the full method name ("/pkg.Service/Method") and the call's
  // remaining time at arrival (nullopt: no deadline), the remaining time the
  // handler's Context gets. The caller's own deadline still decides whether
  // a client cancel is reported as DEADLINE_EXCEEDED. The result's cause is
  // Cause() of the Context when a deadline the rule changed runs out.
  std::function<HandlerBudget(std::string_view method,
                              std::optional<absl::Duration> remaining)>
      deadline;
  // Derives the handler's Context from the glue's (values only: it must not
  // add a cancel layer), given the method, the incoming metadata and the
  // call's context (for its peer() or auth_context()). Runs last: `ctx`
  // already carries the trace and the incoming baggage (so a rule may
  // replace what the caller claimed there, as ServerPolicy's criticality
  // trust does).
  std::function<Context(
      std::string_view method, const Context& ctx,
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
      const grpc::ServerContextBase& sc)>
      values;
  // Given the method and the status about to be sent (by the handler, or by
  // gRPC itself, as its "Server Threadpool Exhausted" refusal), may add to
  // the call's trailing metadata. Runs on the thread sending the status;
  // must not block.
  std::function<void(std::string_view method, const grpc::Status& status,
                     std::multimap<std::string, std::string>* trailers)>
      trailers;
  // Envoy is in front of this server: the call's deadline is the smaller of
  // `grpc-timeout` and Envoy's `x-envoy-expected-rq-timeout-ms` (the time
  // Envoy's router waits before it resets the stream; whole ms). A
  // malformed value is ignored and counted (reqctx_dropped_headers_total
  // {header="x-envoy-expected-rq-timeout-ms",reason="invalid"}); "0" (Envoy's
  // "no timeout") changes nothing; a deadline is never extended. The
  // shorter deadline is the one `deadline` above receives, the handler's
  // Context gets (by a timer of its own: gRPC does not know it), and the
  // one that decides whether a cancel is reported as DEADLINE_EXCEEDED.
  // Off by default: then the header is not even looked up. Turn it on only
  // where Envoy sets the header on every call (it overwrites a client's
  // own); a client reaching the server directly could only shorten its own
  // deadline with it.
  bool behind_envoy = false;
  // The budget ledger (ledger/ledger.h). Every call records one; a call
  // that ends DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED or
  // UNAVAILABLE returns it (with the ledgers its outbound calls returned
  // nested inside) in grpc-status-details-bin, as a google.rpc.Status
  // whose details keep any the status already had (a peer's or the
  // handler's own are never replaced; details the handler put in the
  // trailing metadata itself are left alone, with no ledger). The call's
  // cause (ledger/causes.h, CauseOf(Cause(ctx))) is recorded with it.
  // `ledger_host`: this server's name in the ledger and its readable line
  // ("frontend"); empty: the method names the hop. Must be a legal header
  // value (other bytes show as '?'); at most kLedgerMaxString bytes are
  // sent.
  std::string ledger_host;
  // When the ledger is returned (LedgerReturn above).
  LedgerReturn ledger_return = LedgerReturn::kOnFailure;
  // Whose `reqctx-ledger: always` is honoured, given the call's context (its
  // peer(), auth_context()); runs once per call that carries the header,
  // when its metadata arrives. The header makes every hop serialise and
  // send its ledger on every call, OK included, and reveals the hops behind
  // this one: a caller it returns false for is treated as if it had not
  // sent it (the header is not forwarded; failed calls still return the
  // ledger under kOnFailure). Empty: everyone's. ServerPolicy::CallRules
  // sets it from its criticality trust (a caller whose criticality is not
  // believed is not believed here either).
  std::function<bool(const grpc::ServerContextBase& sc)> ledger_header_trusted;
  // This server's shutdown signal (drain/shutdown_signal.h), or null: when
  // set, a call the server's shutdown cancels (gRPC's Server::Shutdown
  // deadline, told through drain::ShutdownServer, or a drain::CallTracker
  // given the signal) ends with the cause SERVER_SHUTDOWN rather than
  // CLIENT_CANCEL (or none). Shared: the glue keeps it while it may read it.
  std::shared_ptr<drain::ShutdownSignal> shutdown;
};

// Sets `builder`'s interceptor list to reqctx's server interceptor. (To
// combine it with other interceptors, build the list yourself with
// MakeServerInterceptorFactory(): SetInterceptorCreators replaces the list.)
void InstallServerInterceptors(grpc::ServerBuilder& builder);
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerInterceptorFactory();
// The same with per-call rules added (see ServerCallRules).
void InstallServerInterceptorsWithRules(grpc::ServerBuilder& builder,
                                        ServerCallRules rules);
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerInterceptorFactoryWithRules(ServerCallRules rules);

// The Context of the live call served under `sc`. If `sc` has no live call
// known to the interceptor (not installed, or the call has ended), returns an
// already-canceled Context, so work bound to it stops instead of running
// unbounded.
Context FromServerContext(const grpc::ServerContextBase* sc);

namespace internal {

// FromServerContext(sc), and in `*since_hook` how long ago (>= 0) the
// interceptor's first hook (POST_RECV_INITIAL_METADATA) saw the call: the
// earliest moment reqctx knows of it. In gRPC 1.51 that hook runs after
// gRPC's own queues -- on the sync API on the thread that then runs the
// handler, once a sync thread took the call from the server's completion
// queue; on the callback API on gRPC's callback thread, just before the
// handler; on the async API when the application's completion queue first
// delivers the request, whose tag gRPC then queues once more before the
// application sees it. How long the call waited before the hook, nothing in
// gRPC 1.51's API tells (tests/arrival_probe_test.cc). `*since_hook` is left
// unchanged if `sc` has no live call. Costs FromServerContext's lookup and
// one clock read; safe from any thread; never throws.
Context FromServerContextSinceHook(const grpc::ServerContextBase* sc,
                                   absl::Duration* since_hook);

// For code that holds a call after the interceptors and before its handler
// starts (a queue in a grpc::internal::MethodHandler wrapper, as
// reqctx::policy's load shedder). The glue's Context learns of the caller's
// deadline from gRPC's close of the call (no timer of its own; see above),
// and on the callback API gRPC delivers that close only once the handler has
// started. Call this before holding the call under `sc`: the Context's
// deadline then fires by a timer of its own, as WithTimeout's. A no-op if
// the call's deadline has a timer already, it has none, or `sc` has no live
// call. Safe from any thread; never throws.
void HoldingServerCall(const grpc::ServerContextBase* sc);

// For code that refuses a call before its handler runs (reqctx::policy's
// minimum budget and load shedder): ends the Context of the live call under
// `sc` now with `cause` (Cause(); Err() says kCancelled), so the call's
// metric, log and ledger say why. A no-op if `cause` is OK, the Context is
// done already or `sc` has no live call. Safe from any thread; never throws.
void CancelServerCall(const grpc::ServerContextBase* sc,
                      const absl::Status& cause);

// Runs `f` once the call under `sc` is really over -- its status sent (the
// handler returned, or its reactor called Finish), or the call gone without
// one -- and not merely once its Context is done (deadline, client cancel):
// for what a call holds until its handler's work ends (a concurrency slot).
// At once, on this thread, if `sc` has no live call (interceptor not
// installed, or the call has ended). Otherwise on the thread that ends the
// call (the one sending its status), after the Context is released. `f`
// must not block. Safe from any thread; never throws.
void AtServerCallEnd(const grpc::ServerContextBase* sc,
                     std::function<void()> f);

// For reqctx::policy, into the budget ledger of the live call under `sc`
// (ServerCallRules' ledger): what its policy decided (minimum budget,
// capped or defaulted deadline, shed) and the reply margin it applied
// (nullopt: none). A no-op if `sc` has no live call. Safe from any thread;
// never throws.
void NoteServerCallPolicy(const grpc::ServerContextBase* sc,
                          const LedgerPolicy& policy,
                          std::optional<absl::Duration> reply_margin);
// The same for a call the policy refuses before its handler, for `cause`
// (ledger/causes.h: kMinBudget), recorded as the call's cause when its
// Context has none of its own.
void NoteServerCallRefused(const grpc::ServerContextBase* sc, CauseKind cause);
// The same for the time the call waited in a load shedder's queue, and
// whether the shedder refused it (`shed`); its handler's time starts now.
void NoteServerCallQueued(const grpc::ServerContextBase* sc,
                          absl::Duration queued, bool shed);

}  // namespace internal

}  // namespace reqctx

#endif  // REQCTX_INTERCEPTORS_SERVER_INTERCEPTOR_H_
