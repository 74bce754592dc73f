#include "interceptors/policy/detach.h"

namespace reqctx::policy {

std::pair<Context, CancelFunc> DetachWithBound(const Context& call_ctx,
                                               absl::Duration grace) {
  return WithTimeout(WithoutCancel(call_ctx), grace);
}

}  // namespace reqctx::policy
