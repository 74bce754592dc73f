// The server policy's Prometheus families (metrics/rpc_metrics.h,
// reqctx_policy_*), recorded by //interceptors/policy itself, per method:
//   reqctx_policy_rejected_total{method,reason,criticality}
//   reqctx_policy_queued_total{method,criticality}
//   reqctx_policy_queue_wait_seconds{method}           histogram
//   reqctx_policy_deadline_defaulted_total{method}
//   reqctx_policy_deadline_capped_total{method}
//   reqctx_policy_detached_total{method}
//   reqctx_policy_dark_total{method,decision,criticality}
//   reqctx_policy_refusals_capped_total{method,reason,criticality}
//   reqctx_policy_limit_samples_total{method,outcome}
// and, read from each method's shedder at scrape (PublishLimiter):
//   reqctx_policy_limit{method,algorithm}       the concurrency limit now
//   reqctx_policy_inflight{method}              slots held
//   reqctx_policy_queue_length{method}          calls queued
//   reqctx_policy_enforcement{method,mode}      1 for the mode in force
//   reqctx_policy_limit_min_rtt_seconds{method}   the algorithm's inputs
//   reqctx_policy_limit_long_rtt_seconds{method}  (0 if it has none):
//   reqctx_policy_limit_last_rtt_seconds{method}  minimum, long-term and
//   reqctx_policy_limit_queue_estimate{method}    last handling time, queue
//   reqctx_policy_limit_queue_share{method}       estimate/allowance, and
//                                                 AIMD's probing share the
//                                                 deadlines afford
// Each recording is one relaxed add on the recording CPU's own cache line
// (metrics::Counter/Histogram); the per-method handles are looked up once per
// method and kept (ServerPolicy keeps them with each method's state).
// PolicyCounters (policy_counters.h) still counts the same events
// process-wide for the echo server's Stats.
//
// Thread-safety: everything is safe from any thread. Lifetime: the handles
// live for the process (metrics::Registry::Default()).
#ifndef REQCTX_INTERCEPTORS_POLICY_POLICY_METRICS_H_
#define REQCTX_INTERCEPTORS_POLICY_POLICY_METRICS_H_

#include <memory>
#include <string>

#include "context/core.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/load_shedder.h"
#include "metrics/rpc_metrics.h"

namespace reqctx::policy {

// Counts a call refused for its minimum budget.
void RecordMinBudgetRejected(const metrics::PolicyMethodMetrics& m,
                             Criticality c);
// Counts a call the minimum budget would have refused but that ran: in
// dark mode (`dark`), or because the refusal cap allowed no more refusals.
void RecordMinBudgetLetThrough(const metrics::PolicyMethodMetrics& m,
                               Criticality c, bool dark);

// Counts what the shedder decided for a call of criticality `c`: a refusal
// by its reason (kShutdown is not a policy refusal and is not counted), if
// it waited in the queue, the wait, and what a safety valve let through
// (ShedDecision::dark, would_queue, capped).
void RecordShedDecision(const metrics::PolicyMethodMetrics& m,
                        const ShedDecision& d, Criticality c);

// Shows `shedder`'s state under `method` in the reqctx_policy_limit...
// gauges above until the shedder is destroyed (registers those families on
// first use). Several methods may share one shedder (a per-server limit);
// if several live policies publish one method, the first is shown.
void PublishLimiter(const std::string& method,
                    std::weak_ptr<const LoadShedder> shedder);

// A child of `parent` that remembers the method whose handles `m` are, so
// work derived from a call (DetachWithBound) is counted under its method.
// `m` must live for the process (PolicyMethod's handles do).
Context WithPolicyMethod(const Context& parent,
                         const metrics::PolicyMethodMetrics* m);
// The handles set by WithPolicyMethod, or nullptr.
const metrics::PolicyMethodMetrics* PolicyMethodOf(const Context& ctx);

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_POLICY_METRICS_H_
