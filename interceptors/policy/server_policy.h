// ServerPolicy: deadline policies and load shedding enforced on a gRPC
// service's methods before their handlers run (issue 12, sections 1 and 3).
//
//   reqctx::policy::ServerPolicyOptions options;
//   options.defaults.min_budget = absl::Milliseconds(5);
//   options.defaults.max_concurrency = 16;
//   reqctx::policy::ServerPolicy policy(options);
//   MyService service;
//   policy.Apply(&service);                 // before RegisterService
//   builder.RegisterService(&service);
//   policy.InstallInterceptors(builder);    // instead of
//                                           // InstallServerInterceptors
//
// Mechanism. gRPC 1.51's server interceptors cannot fail a call, so Apply()
// wraps each method handler of the service (the objects gRPC's server runs a
// call through: grpc::internal::MethodHandler). The wrapper runs after the
// interceptors (so the call's Context exists) and before the handler; it
// either refuses the call -- sending its status with no handler code run --
// or passes the call on to the original handler, unchanged. It works for the
// synchronous and the callback API, unary and streaming; handler code does
// not change. The completion-queue (async) API has no handler objects: an
// async server calls AdmitAsync() itself right after a call arrives, and
// gets the same checks, queue included, with the decision delivered as a
// tag on its own completion queue (see AdmitAsync).
// What is checked, in order:
//   1. Minimum budget (deadline_policy.h): DEADLINE_EXCEEDED.
//   2. Load shedding (load_shedder.h), when max_concurrency > 0 or the
//      limit algorithm is adaptive (MethodPolicy::limit):
//      RESOURCE_EXHAUSTED with trailing metadata `grpc-retry-pushback-ms`,
//      or the call's own error if it ends while queued. Sync calls wait in
//      the queue on their gRPC thread; callback and async calls are queued
//      without blocking a thread and started by the call that frees their
//      slot.
// The limit may be fixed (max_concurrency) or adaptive (MethodPolicy::limit:
// AIMD, Gradient2, Vegas from //limits), learning from each admitted call's
// handling time when its slot is given back: a call still handled when its
// deadline passed is reported as a drop if its budget covered the expected
// handling time -- the budget at admission plus the time gRPC held the call
// after reqctx's interceptor first saw it (internal::
// FromServerContextSinceHook: on the async API gRPC queues the request's
// tag again after the interceptor, and a busy completion-queue thread eats
// the budget there; ~0 on the sync and callback APIs). A wait before that
// hook (gRPC's own: a sync thread's pickup, the callback thread, the async
// request's first delivery, CPU contention) is not visible in gRPC 1.51 and
// still shrinks the budget judged (tests/arrival_probe_test.cc); the
// shedder's own queue is not added back (a call admitted from it had its
// budget checked when its turn came). A call its client canceled (on any
// API: the Context's cause, CauseKind::kClientCancel) is no sample -- its
// handling time says nothing of the server, and a fast cancel must not
// pull the learned latency down. With
// criticality shares, queue-delay admission and the refusal cap as in
// load_shedder.h and refusal_cap.h; SetMode is the run-time dark mode and
// kill switch; LimiterStats and the reqctx_policy_limit... gauges show each
// limit's state.
// A call holds its concurrency slot until its handler's work really ends --
// the handler returns (sync API), its reactor calls Finish (callback API),
// AsyncAdmission::Done (async API) -- not merely until its Context is done:
// a handler that ignores its Context past a deadline, a reply margin or a
// client cancel still counts against the limit. Each method's handling time
// (admission to that end) feeds its LatencyWindow, from which the
// learned minimum budget and the shedder's expected handling time come.
// The handler's Context gets the effective deadline (default/cap) minus the
// reply margin, and its criticality, through the server interceptor
// installed by InstallInterceptors. The criticality is read once, from the
// baggage the glue puts in the Context (every `baggage` header of the call,
// joined), and is what both the shedder and the handler (CriticalityOf) see.
// Whether the caller's claim is believed is the `criticality` option
// (CriticalityTrustOptions): a caller that is not trusted gets the
// configured criticality instead, in the Context and in the baggage passed
// on to the next hop; a flood marked `criticality=critical` by an untrusted
// client then cannot outrank the server's own critical calls. What the policy does is counted in PolicyCounters
// (process-wide, Counters()) and per method in the reqctx_policy_*
// Prometheus families (policy_metrics.h).
//
// gRPC's own overload refusal: a synchronous server with a thread quota
// (grpc::ResourceQuota::SetMaxThreads) that has no thread left for a new
// call answers it RESOURCE_EXHAUSTED "Server Threadpool Exhausted" itself,
// before any handler or this policy's queue (gRPC 1.51 does not wait for a
// thread). The interceptors installed by InstallInterceptors add a
// `grpc-retry-pushback-ms` of the method's expected_handling (>= 1 ms) to
// that refusal, so every overload refusal of the server carries a pushback.
// Give the quota room above max_concurrency + max_queue (queued sync calls
// hold their thread) so the policy, which knows deadlines and criticality,
// decides first.
//
// Requirements: Apply() before the service is registered with a
// ServerBuilder (gRPC reads the handlers then), once per service; the
// request messages of sync and (non-raw) callback methods are protobuf
// messages (true of all generated code).
//
// Thread-safety: Apply() and SetMethodPolicy are for set-up, on one thread;
// everything else is safe from any thread.
// Lifetime: the ServerPolicy must outlive the servers its services are
// registered with (the wrappers point at it). What a callback-API call's end
// updates (its method's timings, its shedder slot, the counters) is shared
// with that call, so it may end after the policy is destroyed. The same
// holds for an async call's AsyncAdmission, and for an async call still in
// the queue (decided when its Context ends, at the latest with the call).
#ifndef REQCTX_INTERCEPTORS_POLICY_SERVER_POLICY_H_
#define REQCTX_INTERCEPTORS_POLICY_SERVER_POLICY_H_

#include <grpcpp/alarm.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "interceptors/server_interceptor.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/deadline_policy.h"
#include "interceptors/policy/latency_window.h"
#include "interceptors/policy/load_shedder.h"
#include "interceptors/policy/peer_ranges.h"
#include "interceptors/policy/policy_counters.h"
#include "interceptors/policy/pushback.h"  // kRetryPushbackHeader
#include "interceptors/policy/refusal_cap.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace reqctx::policy {

class AsyncAdmission;

// Whose incoming criticality (the `criticality` member of the call's
// `baggage`) a server believes.
enum class CriticalityTrust {
  // Every caller's: for a server only other trusted services can reach (it
  // sits behind an edge that sets or strips criticality). The default, as
  // before this option existed.
  kEveryone,
  // Nobody's: every call gets `untrusted` (the edge, facing clients).
  kNobody,
  // Only calls whose peer address is in `trusted_peers`; the others get
  // `untrusted`.
  kListedPeers,
};

struct CriticalityTrustOptions {
  CriticalityTrust trust = CriticalityTrust::kEveryone;
  // For kListedPeers: address ranges ("10.0.0.0/8", "127.0.0.1",
  // "::1/128"; see peer_ranges.h) tested against the peer gRPC reports for
  // the call (grpc::ServerContextBase::peer(); a unix-socket peer is in no
  // range). Must not be empty for kListedPeers.
  std::vector<std::string> trusted_peers;
  // The criticality of a call whose caller is not trusted (its claim, if
  // any, is dropped from the baggage it passes on; kDefault removes the
  // member).
  Criticality untrusted = Criticality::kDefault;
};

struct ServerPolicyOptions {
  // For every method without its own entry. Its shedder (if
  // max_concurrency > 0) is one limit shared by all those methods: a
  // per-server limit.
  MethodPolicy defaults;
  // By full method name, e.g. "/echo.v1.Echo/Echo": a per-method policy
  // with its own shedder.
  std::map<std::string, MethodPolicy> methods;
  // Whose criticality is believed (server-wide: trust is about the caller,
  // not the method); the same callers' `reqctx-ledger: always` is honoured
  // (ServerCallRules::ledger_header_trusted, which CallRules sets).
  CriticalityTrustOptions criticality;
  // Envoy is in front: the incoming deadline is the smaller of grpc-timeout
  // and x-envoy-expected-rq-timeout-ms (ServerCallRules::behind_envoy, which
  // CallRules sets from this). The minimum-budget check still reads gRPC's
  // own deadline (grpc-timeout).
  bool behind_envoy = false;
  // The safety valves' mode at start (ServerPolicy::SetMode changes it):
  // kEnforce refuses; kDark decides and counts (reqctx_policy_dark_total,
  // PolicyCounter::kDarkDecisions) but runs every call; kOff (the kill
  // switch) neither refuses nor counts. It covers the minimum budget and
  // the shedder; deadline defaults, caps and the reply margin still apply.
  ShedMode mode = ShedMode::kEnforce;
};

class ServerPolicy {
 public:
  // Invalid options are reported by Apply (and by Validate()).
  explicit ServerPolicy(ServerPolicyOptions options);
  ~ServerPolicy();
  ServerPolicy(const ServerPolicy&) = delete;
  ServerPolicy& operator=(const ServerPolicy&) = delete;

  // InvalidArgument naming the method and field, if any policy is invalid
  // (or "criticality.trusted_peers" and the entry, if a peer range is
  // malformed or the list is empty for kListedPeers).
  absl::Status Validate() const;

  // Wraps every sync and callback method handler of `service` (see the file
  // comment). FailedPrecondition if the options are invalid or `service` is
  // null. Methods served through the async API are left alone.
  absl::Status Apply(grpc::Service* service);

  // Sets `builder`'s interceptors to reqctx's server interceptor, with this
  // policy's per-call deadline and criticality rules (the criticality trust
  // applies to every call of the server, whether or not its service was
  // given to Apply).
  void InstallInterceptors(grpc::ServerBuilder& builder);
  // The same rules, to combine reqctx's interceptor with others
  // (MakeServerInterceptorFactoryWithRules(policy.CallRules())).
  ServerCallRules CallRules() const;

  // For the completion-queue (async) API: decides a call that just arrived
  // on method `full_method` (e.g. "/echo.v1.Echo/Echo") under `sc` -- call
  // it once the call's request tag has been delivered -- with the same
  // checks as the wrapped handlers: deadline rules, minimum budget, then the
  // concurrency limit and its deadline-aware queue. The decision arrives as
  // `tag` on `cq` (ok = true), exactly once: through the queue's Next() at
  // once if the call is refused or runs now, later if it waits in the queue
  // (when a slot frees, or when its Context ends: deadline passed, client
  // canceled -- the async glue sees the cancel when `cq` delivers the call's
  // close -- or the server shuts down). Then read `*admission`:
  //   admitted(): serve the call, then call admission->Done() (gives the
  //     slot back and records the handling time; the destructor does it if
  //     forgotten);
  //   otherwise: answer with FinishWithError(admission->Refusal(sc), ...),
  //     which adds grpc-retry-pushback-ms for RESOURCE_EXHAUSTED.
  // Requirements: the server runs this policy's interceptors
  // (InstallInterceptors), whose Context of the call the queue watches
  // (without them the call has no live Context and a call that meets the
  // limit is refused CANCELLED); `*admission` and `sc` stay alive, and `cq`
  // is not shut down, until the tag is delivered; shut `cq` down only once Queued() is 0
  // after grpc::Server::Shutdown (a queued call is decided as soon as its
  // Context ends, which the shutdown causes). The loop serving `cq` must keep
  // calling Next() while calls are queued (their cancels come through it).
  // Call it as soon as the request tag is delivered: the time from the
  // glue's first hook to this call counts as time the server held the call
  // (a late call's budget adds it back: see the file comment), so on a
  // streaming method admit before waiting for the client's first message
  // (a slow client's own delay would otherwise make its late calls drops).
  void AdmitAsync(std::string_view full_method, grpc::ServerContext* sc,
                  grpc::CompletionQueue* cq, void* tag,
                  AsyncAdmission* admission);

  // The policy for `full_method`.
  const MethodPolicy& PolicyFor(std::string_view full_method) const;

  PolicyCountersSnapshot Counters() const { return counters_->Snapshot(); }

  // The kill switch and dark mode, at run time (see ServerPolicyOptions::
  // mode): applies to every limit of this policy at once; leaving kEnforce
  // admits every queued call. Safe from any thread, e.g. a signal-watching
  // thread or an admin RPC.
  void SetMode(ShedMode mode);
  ShedMode Mode() const;
  // The limit serving `full_method` (its current limit, in flight, queued,
  // mode, algorithm inputs), or nullopt if it has no limit.
  std::optional<ShedderStats> LimiterStats(std::string_view full_method) const;
  // Calls holding a concurrency slot now, and calls queued for one, over
  // every limit of this policy (a slot is given back just after the
  // handler's status is sent).
  int Running() const;
  int Queued() const;
  PolicyCounters& counters() { return *counters_; }

  // The criticality `ctx` (a call's Context from the glue, with the
  // caller's baggage) should carry under the trust option, for a call from
  // `peer` (as grpc::ServerContextBase::peer() says): `ctx` itself if the
  // caller is trusted, else `ctx` with the untrusted criticality
  // (WithCriticality). What CallRules applies to every call.
  Context WithTrustedCriticality(const Context& ctx,
                                 std::string_view peer) const;

  // Per-method state, shared by the wrappers (internal; public so the
  // wrappers in server_policy.cc can name it).
  // Shared: a callback-API call's end is reported on another thread, which
  // may come after the policy is gone (it then updates state nobody reads).
  struct MethodState;
  std::shared_ptr<MethodState> StateFor(std::string_view full_method);

 private:
  struct PolicyState;

  const ServerPolicyOptions options_;
  // options_.criticality.trusted_peers, parsed (empty if malformed:
  // Validate reports it).
  PeerRanges trusted_peers_;
  const std::shared_ptr<PolicyCounters> counters_;
  std::atomic<ShedMode> mode_;
  std::shared_ptr<PolicyState> default_state_;
  std::map<std::string, std::shared_ptr<PolicyState>, std::less<>> method_states_;
  std::mutex states_mu_;
  // Created on first use, never removed. Guarded by states_mu_.
  std::map<std::string, std::shared_ptr<MethodState>, std::less<>> methods_;
};

// One async call's admission (ServerPolicy::AdmitAsync): written when the
// decision is made, read once its tag has been delivered. One per call, not
// reused: once decided and done, a second AdmitAsync with it would hold its
// new slot until the destructor (Done() is a no-op from then on).
// Thread-safety: safe from any thread (the decision may be made on another
// thread than the completion queue's). Lifetime: must outlive the delivery
// of its tag; its destructor gives an admitted call's slot back if Done()
// was not called.
class AsyncAdmission {
 public:
  AsyncAdmission();
  ~AsyncAdmission();
  AsyncAdmission(const AsyncAdmission&) = delete;
  AsyncAdmission& operator=(const AsyncAdmission&) = delete;

  // True if the call may run (it holds a slot if the method has a limit).
  bool admitted() const;
  // OK if admitted; else DEADLINE_EXCEEDED (minimum budget, or deadline
  // passed while queued), RESOURCE_EXHAUSTED (shed), CANCELLED (canceled
  // while queued) or UNAVAILABLE (shutting down). FailedPrecondition
  // before the decision.
  absl::Status status() const;
  // For RESOURCE_EXHAUSTED: how long the client should wait before trying
  // again.
  std::optional<absl::Duration> pushback() const;
  // For a refused call: the status to answer with, after adding
  // grpc-retry-pushback-ms to `sc`'s trailing metadata when there is a
  // pushback. Call once, before finishing the call.
  grpc::Status Refusal(grpc::ServerContext* sc) const;
  // The admitted call's handler is finished: gives its slot back (which may
  // admit a queued call) and records its handling time. Idempotent; no-op
  // for a refused or undecided call.
  void Done();

 private:
  friend class ServerPolicy;
  void Decide(std::shared_ptr<ServerPolicy::MethodState> state,
              ShedDecision d, grpc::CompletionQueue* cq, void* tag);

  mutable std::mutex mu_;
  std::shared_ptr<ServerPolicy::MethodState> state_;  // Guarded by mu_.
  ShedSlot slot_;                   // Held while admitted. Guarded by mu_.
  absl::Status status_;             // Guarded by mu_.
  std::optional<absl::Duration> pushback_;  // Guarded by mu_.
  absl::Time admitted_at_;          // Guarded by mu_.
  // How long gRPC held the call after the glue first saw it, until
  // AdmitAsync (FromServerContextSinceHook; 0: unknown). Guarded by mu_.
  absl::Duration held_ = absl::ZeroDuration();
  // The method's expected handling time at admission. Guarded by mu_.
  absl::Duration expected_ = absl::ZeroDuration();
  std::optional<absl::Time> deadline_;  // The call's. Guarded by mu_.
  // The call's Context (whether its client canceled it). Guarded by mu_.
  Context ctx_;
  bool decided_ = false;            // Guarded by mu_.
  bool done_ = false;               // Guarded by mu_.
  grpc::Alarm alarm_;  // Delivers the tag.
};

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_SERVER_POLICY_H_
