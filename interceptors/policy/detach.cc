#include "interceptors/policy/detach.h"

#include "interceptors/policy/policy_metrics.h"
#include "ledger/causes.h"

namespace reqctx::policy {

std::pair<Context, CancelFunc> DetachWithBound(const Context& call_ctx,
                                               absl::Duration grace) {
  const metrics::PolicyMethodMetrics* m = PolicyMethodOf(call_ctx);
  (m != nullptr ? *m : metrics::PolicyMethod("")).detached->Increment();
  return WithTimeoutCause(WithoutCancel(call_ctx), grace,
                          CauseStatus(CauseKind::kDetachedBound));
}

}  // namespace reqctx::policy
