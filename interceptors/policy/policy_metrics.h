// The server policy's Prometheus families (metrics/rpc_metrics.h,
// reqctx_policy_*), recorded by //interceptors/policy itself, per method:
//   reqctx_policy_rejected_total{method,reason,criticality}
//   reqctx_policy_queued_total{method,criticality}
//   reqctx_policy_queue_wait_seconds{method}           histogram
//   reqctx_policy_deadline_defaulted_total{method}
//   reqctx_policy_deadline_capped_total{method}
//   reqctx_policy_detached_total{method}
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

#include "context/core.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/load_shedder.h"
#include "metrics/rpc_metrics.h"

namespace reqctx::policy {

// Counts a call refused for its minimum budget.
void RecordMinBudgetRejected(const metrics::PolicyMethodMetrics& m,
                             Criticality c);

// Counts what the shedder decided for a call of criticality `c`: a refusal
// by its reason (kShutdown is not a policy refusal and is not counted), and,
// if it waited in the queue, the wait.
void RecordShedDecision(const metrics::PolicyMethodMetrics& m,
                        const ShedDecision& d, Criticality c);

// A child of `parent` that remembers the method whose handles `m` are, so
// work derived from a call (DetachWithBound) is counted under its method.
// `m` must live for the process (PolicyMethod's handles do).
Context WithPolicyMethod(const Context& parent,
                         const metrics::PolicyMethodMetrics* m);
// The handles set by WithPolicyMethod, or nullptr.
const metrics::PolicyMethodMetrics* PolicyMethodOf(const Context& ctx);

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_POLICY_METRICS_H_
