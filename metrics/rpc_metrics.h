// reqctx's own RPC metrics: the families the gRPC glue records into, in
// metrics::Registry::Default(), and per-method handles to record with.
//
// Families (labels; see docs/observability.md for meaning and PromQL):
//   reqctx_server_started_total{method}
//   reqctx_server_handled_total{method,code,cause}
//   reqctx_server_active_calls{method}
//   reqctx_server_deadline_at_arrival_seconds{method}   histogram
//   reqctx_server_no_deadline_total{method}
//   reqctx_server_handling_seconds{method}              histogram
//   reqctx_server_orphaned_seconds{method}              histogram
//   reqctx_budget_consumed_seconds{method}              histogram
//   reqctx_client_started_total{method}
//   reqctx_client_handled_total{method,code}
//   reqctx_client_active_calls{method}
//   reqctx_client_cancel_propagation_seconds{method}    histogram
//   reqctx_orphan_reports_total{kind,method}
//   reqctx_policy_rejected_total{method,reason,criticality}  (policies)
//   reqctx_policy_queued_total{method,criticality}      (policies)
//   reqctx_policy_queue_wait_seconds{method}            (policies) histogram
//   reqctx_policy_deadline_defaulted_total{method}      (policies)
//   reqctx_policy_deadline_capped_total{method}         (policies)
//   reqctx_policy_detached_total{method}                (policies)
//   reqctx_policy_limit_samples_total{method,outcome}   (policies)
//   reqctx_client_retries_total{method}                 (policies)
//   reqctx_client_hedges_total{method}                  (policies)
//   reqctx_client_retry_budget_exhausted_total{method}  (policies)
//   reqctx_stream_messages_total{side,method,direction}  (streams)
//   reqctx_stream_duration_seconds{side,method}         (streams) histogram
//   reqctx_stream_timeouts_total{side,method,kind}      (streams)
// plus process-wide gauges read at scrape (RegisterProcessGauges).
//
// Method labels (bounded against hostile peers): a method gets a `method`
// label of its own only if it is known (MethodLabel): defined in the
// protobuf descriptors linked into the process (the methods of every
// generated service and stub) or declared with DeclareMethod. Any other
// name -- a call to a method the server does not serve, which gRPC answers
// UNIMPLEMENTED, or a generic stub's invented path -- is counted under
// method="_unknown", so a peer inventing names takes no label slot. Known
// methods get their own labels up to kMaxMethods per side (server, client,
// policy); later ones share method="_other". Every per-method family keeps
// (kMaxMethods + 2) x (its label combinations per method) children (e.g.
// 17 codes for *_handled_total, 6 reasons x 3 criticalities for
// reqctx_policy_rejected_total), so a method admitted to the table has a
// series for every combination in every family: no series of a known
// method ever falls into the family's overflow child.
//
// Thread-safety: everything is safe from any thread. ServerMethod and
// ClientMethod look a method up in a per-thread cache first (no shared
// writes after a thread's first call of a method), then in a shared map.
// Lifetime: handles live for the process.
#ifndef REQCTX_METRICS_RPC_METRICS_H_
#define REQCTX_METRICS_RPC_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "ledger/causes.h"
#include "metrics/metrics.h"

namespace reqctx::metrics {

// Status codes 0..16 (gRPC's and absl's canonical codes, same numbers).
inline constexpr int kCodes = kStatusCodes;

// The Prometheus label value for `code`: its canonical name ("OK",
// "DEADLINE_EXCEEDED", ...); "UNKNOWN" outside 0..16 (ledger/causes.h).
using ::reqctx::CodeName;

// The children of reqctx_server_handled_total{method,code,cause} for one
// method. `cause` is CauseName(CauseOf(Cause(ctx))) of the call's Context
// when the call ended: "NONE" for a call whose Context was still live (it
// ended normally, or with an error of the handler's own) or ended with no
// cause of reqctx's vocabulary, else one of ledger/causes.h's 10 names
// ("CALLER_DEADLINE", "CLIENT_CANCEL", ...): a bounded set. The NONE
// children exist from the method's first call (as before the label was
// added); the others are made on first use (the family's lock, once per
// code and cause), so a server never shows 17 x 11 zero series per method.
class HandledByCause {
 public:
  HandledByCause(CounterFamily* family, std::string method);
  // The counter for (`code`, `cause`); `code` outside 0..16 counts as
  // UNKNOWN. Lock-free after the first use of a combination.
  Counter& Get(int code, CauseKind cause);

 private:
  CounterFamily* const family_;
  const std::string method_;
  std::array<Counter*, kCodes> none_;
  std::array<std::atomic<Counter*>, kCodes * kCauseKinds> others_{};
};

struct ServerMethodMetrics {
  Counter* started;
  Gauge* active;
  Histogram* deadline_at_arrival;
  Counter* no_deadline;
  Histogram* handling;
  Histogram* orphaned;
  // This hop's own share of each call's budget (queued + own work; the
  // budget ledger's, ledger/ledger.h).
  Histogram* budget_consumed;
  HandledByCause* handled;  // Lives for the process.
};

struct ClientMethodMetrics {
  Counter* started;
  Gauge* active;
  Histogram* cancel_propagation;
  std::array<Counter*, kCodes> handled;
};

// The label value of unknown methods, and of known methods past
// kMaxMethods (see the file comment).
inline constexpr std::string_view kUnknownMethod = "_unknown";
inline constexpr std::string_view kOtherMethod = "_other";
// Known methods with labels of their own, per side.
inline constexpr size_t kMaxMethods = 500;

// The `method` label for `method` ("/package.Service/Method"): itself if it
// is known, kUnknownMethod otherwise.
std::string_view MethodLabel(std::string_view method);
// Declares `method` known, for services whose methods have no protobuf
// descriptor in the process (e.g. another serialization). Idempotent; at
// most 8 x kMaxMethods declarations are kept (later ones are ignored), so
// declaring names a peer chose cannot grow memory without bound.
void DeclareMethod(std::string_view method);

// The handles for `method` (e.g. "/echo.Echo/Echo"), under MethodLabel's
// label; past kMaxMethods known methods, every new one shares the "_other"
// handles.
const ServerMethodMetrics& ServerMethod(std::string_view method);
const ClientMethodMetrics& ClientMethod(std::string_view method);

// Why a server policy refused a call: the `reason` label of
// reqctx_policy_rejected_total, by index (PolicyRejectReasonName).
inline constexpr int kPolicyRejectReasons = 7;
// "min_budget", "shed_at_arrival", "queue_full", "evicted", "expired",
// "canceled", "queue_delay"; "unknown" outside 0..6.
std::string_view PolicyRejectReasonName(int reason);
// The `criticality` label, by index (policy::Criticality's values, least
// important first): "sheddable", "default", "critical".
inline constexpr int kCriticalities = 3;
std::string_view CriticalityLabel(int criticality);

// What a safety valve let through (issue 23): the `decision` label of
// reqctx_policy_dark_total (dark mode: what the policy would have done) and
// the `reason` label of reqctx_policy_refusals_capped_total (a refusal the
// refusal cap turned into an admission), by index: "min_budget",
// "shed_at_arrival", "queue_full", "queue_delay", "queued" ("queued" only
// for dark mode); "unknown" outside 0..4.
inline constexpr int kPolicyValveDecisions = 5;
std::string_view PolicyValveDecisionName(int decision);

// How an admitted call's slot went back to its concurrency limit (issue
// 23): the `outcome` label of reqctx_policy_limit_samples_total, by index
// (limits::Outcome's values): "success" (a sample), "ignored" (no sample:
// canceled by its client, or its own deadline was shorter than the
// expected handling time), "dropped" (a sample the limit reads as an
// overload: still running at a deadline that covered it); "unknown"
// outside 0..2.
inline constexpr int kLimitOutcomes = 3;
std::string_view LimitOutcomeName(int outcome);

// One method's server-policy handles (//interceptors/policy records them).
struct PolicyMethodMetrics {
  // [reason][criticality], indices as above.
  std::array<std::array<Counter*, kCriticalities>, kPolicyRejectReasons>
      rejected;
  // [decision][criticality], indices as PolicyValveDecisionName's.
  std::array<std::array<Counter*, kCriticalities>, kPolicyValveDecisions>
      dark;
  std::array<std::array<Counter*, kCriticalities>, kPolicyValveDecisions>
      capped;
  std::array<Counter*, kCriticalities> queued;
  Histogram* queue_wait;
  Counter* deadline_defaulted;
  Counter* deadline_capped;
  Counter* detached;
  // [outcome], indices as LimitOutcomeName's.
  std::array<Counter*, kLimitOutcomes> limit_samples;

  // limit_samples' values now, by outcome (each read on its own: not one
  // snapshot of the three while calls end).
  std::array<int64_t, kLimitOutcomes> LimitSampleCounts() const;
};
// The handles for `method`, like ServerMethod's (same cache and bound).
const PolicyMethodMetrics& PolicyMethod(std::string_view method);

// Counters of call policies (deadline budgets, load shedding, retries,
// hedging), for the policy code to record into.
struct PolicyFamilies {
  CounterFamily* rejected;                // {method, reason, criticality}
  CounterFamily* queued;                  // {method, criticality}
  HistogramFamily* queue_wait;            // {method}, seconds
  CounterFamily* deadline_defaulted;      // {method}
  CounterFamily* deadline_capped;         // {method}
  CounterFamily* detached;                // {method}
  CounterFamily* dark;                    // {method, decision, criticality}
  CounterFamily* capped;                  // {method, reason, criticality}
  CounterFamily* limit_samples;           // {method, outcome}
  CounterFamily* retries;                 // {method}
  CounterFamily* hedges;                  // {method}
  CounterFamily* retry_budget_exhausted;  // {method}
};
const PolicyFamilies& Policy();

// Streams (//streams records them when a stream ends). `side`: "server" or
// "client"; `direction`: "in" (messages read) or "out" (written); `kind`:
// why a stream was cut, by index (StreamCutKindName).
inline constexpr int kStreamCutKinds = 4;
// "message_wait", "idle", "deadline", "cancelled"; "unknown" outside 0..3.
std::string_view StreamCutKindName(int kind);
struct StreamMethodMetrics {
  Counter* messages_in;
  Counter* messages_out;
  Histogram* duration;
  std::array<Counter*, kStreamCutKinds> cut;
};
// The handles for `method` on the server (server == true) or client side,
// like ServerMethod's (same bound on labels).
const StreamMethodMetrics& StreamMethod(bool server, std::string_view method);
// Registers the reqctx_stream_* families now (idempotent; not part of
// RegisterRpcFamilies, so servers without streams do not expose them).
void RegisterStreamFamilies();

// reqctx_orphan_reports_total{kind, method}.
CounterFamily& OrphanReports();

// Registers every family above now (idempotent), so a scrape shows their
// HELP and TYPE lines before the first call.
void RegisterRpcFamilies();

// Registers the process-wide gauges of the core (idempotent):
//   reqctx_live_timers            deadlines queued in the timer service
//   reqctx_executor_threads       AfterFunc executor threads
//   reqctx_orphaned_handlers      \  watched work whose Context is done
//   reqctx_orphaned_group_tasks    > (orphan detector on; 0 when off)
//   reqctx_orphaned_after_funcs   /
void RegisterProcessGauges();

}  // namespace reqctx::metrics

#endif  // REQCTX_METRICS_RPC_METRICS_H_
