#include "interceptors/policy/detach.h"

#include "interceptors/policy/policy_metrics.h"

namespace reqctx::policy {

std::pair<Context, CancelFunc> DetachWithBound(const Context& call_ctx,
                                               absl::Duration grace) {
  const metrics::PolicyMethodMetrics* m = PolicyMethodOf(call_ctx);
  (m != nullptr ? *m : metrics::PolicyMethod("")).detached->Increment();
  return WithTimeout(WithoutCancel(call_ctx), grace);
}

}  // namespace reqctx::policy
