#include "interceptors/policy/policy_metrics.h"

namespace reqctx::policy {
namespace {

inline constexpr Key<const metrics::PolicyMethodMetrics*> kPolicyMethodKey(
    "reqctx.policy_method");

// metrics' criticality index is Criticality's value.
static_assert(static_cast<int>(Criticality::kSheddable) == 0 &&
              static_cast<int>(Criticality::kDefault) == 1 &&
              static_cast<int>(Criticality::kCritical) == 2 &&
              metrics::kCriticalities == 3);

// metrics' reason index for a shed reason, or -1 (not counted).
int ReasonIndex(ShedReason r) {
  switch (r) {
    case ShedReason::kShedAtArrival:
      return 1;
    case ShedReason::kQueueFull:
      return 2;
    case ShedReason::kEvicted:
      return 3;
    case ShedReason::kExpired:
      return 4;
    case ShedReason::kCanceled:
      return 5;
    case ShedReason::kNone:
    case ShedReason::kShutdown:
      break;
  }
  return -1;
}

}  // namespace

void RecordMinBudgetRejected(const metrics::PolicyMethodMetrics& m,
                             Criticality c) {
  m.rejected[0][static_cast<int>(c)]->Increment();
}

void RecordShedDecision(const metrics::PolicyMethodMetrics& m,
                        const ShedDecision& d, Criticality c) {
  if (d.queued) {
    m.queued[static_cast<int>(c)]->Increment();
    m.queue_wait->ObserveDuration(d.waited);
  }
  if (const int r = ReasonIndex(d.reason); r >= 0) {
    m.rejected[r][static_cast<int>(c)]->Increment();
  }
}

Context WithPolicyMethod(const Context& parent,
                         const metrics::PolicyMethodMetrics* m) {
  return WithValue(parent, kPolicyMethodKey, m);
}

const metrics::PolicyMethodMetrics* PolicyMethodOf(const Context& ctx) {
  const metrics::PolicyMethodMetrics* const* m = ctx.Value(kPolicyMethodKey);
  return m == nullptr ? nullptr : *m;
}

}  // namespace reqctx::policy
