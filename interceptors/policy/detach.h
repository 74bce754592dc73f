// Detach with a bound: follow-up work that outlives its call (issue 12).
//
//   auto [follow_up, cancel] = reqctx::policy::DetachWithBound(
//       call_ctx, absl::Seconds(2));
//   std::thread([follow_up, cancel] { Flush(follow_up); cancel(); }).detach();
//
// The returned Context is WithoutCancel(call_ctx) -- it keeps the call's
// values (trace, criticality, ...), is not canceled when the call ends or
// its deadline passes -- with a deadline of its own `grace` from now, so the
// work cannot run forever; when it runs out, Cause() of the Context is
// CauseKind::kDetachedBound's (ledger/causes.h). Keep the CancelFunc with the work and call it when
// done (dropping its last copy cancels the follow-up).
// Each call counts one in reqctx_policy_detached_total{method}: the method
// of the call whose Context was detached when it is served under a
// ServerPolicy, else method="".
//
// Thread-safety: safe from any thread. Lifetime: the result is independent
// of the call; it lives as long as its handles.
#ifndef REQCTX_INTERCEPTORS_POLICY_DETACH_H_
#define REQCTX_INTERCEPTORS_POLICY_DETACH_H_

#include <utility>

#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx::policy {

// `grace` <= 0 gives a Context that is already done (DEADLINE_EXCEEDED).
std::pair<Context, CancelFunc> DetachWithBound(const Context& call_ctx,
                                               absl::Duration grace);

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_DETACH_H_
