// Owned deadlines: a deadline that a Context reports but whose timer is not
// armed, for code that learns of the deadline from elsewhere. Internal to
// reqctx (used by //interceptors for incoming gRPC calls, whose deadline gRPC
// itself enforces and reports through the call's close); not part of the
// public API.
//
// Why: a server call's Context must report the caller's deadline
// (Deadline()) and end with DEADLINE_EXCEEDED when it passes, but gRPC already
// runs a timer for that deadline and cancels the call when it fires. Arming
// a second timer per call costs a timer-shard lock and heap update at the
// start and end of every call, and may wake the timer thread; the owner
// instead ends the Context when gRPC reports the deadline.
//
// Thread-safety: both functions are safe from any thread, like the With*
// functions. Lifetime: as WithTimeout's pair.
#ifndef REQCTX_CONTEXT_INTERNAL_OWNED_DEADLINE_H_
#define REQCTX_CONTEXT_INTERNAL_OWNED_DEADLINE_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx::internal {

// Like WithTimeout(parent, timeout) -- Deadline() reports Now() + timeout
// (or the parent's earlier deadline, whose timer then fires as usual); done
// with kDeadlineExceeded at once if timeout <= 0; InfiniteDuration: plain
// WithCancel -- except that no timer is armed for this deadline: nothing
// ends the context when it passes but ArmOwnedDeadline (or the CancelFunc,
// or the parent). The caller must make sure something reports the deadline.
// `cause`: what Cause() reports once the deadline ends it (OK: no cause),
// as WithTimeoutCause's.
std::pair<Context, CancelFunc> WithOwnedTimeout(
    const Context& parent, absl::Duration timeout,
    absl::Status cause = absl::OkStatus());

// Arms the deadline of a context made by WithOwnedTimeout, through its
// CancelFunc: it then ends with kDeadlineExceeded "context deadline exceeded"
// at its deadline, as WithTimeout's would (at once if the deadline has
// passed), with the cause given to WithOwnedTimeout. For a CancelFunc of any
// other context (one without an owned deadline of its own): ends it with
// kDeadlineExceeded now (a timer layer's deadline cause, if it is one). If memory for
// the timer cannot be had, also ends it now. A no-op if it is done, armed
// already or `cancel` cancels nothing. Never throws.
void ArmOwnedDeadline(const CancelFunc& cancel);

// Cancels the context of `cancel` (kCancelled, as calling it would) with
// `cause` (OK: none), as a CancelCauseFunc would: for glue that holds a
// plain CancelFunc (a deadline's) but knows why it cancels. A no-op if it is
// done or `cancel` cancels nothing. Never throws.
void CancelWithCause(const CancelFunc& cancel, const absl::Status& cause);

// The cause the deadline that bounds `ctx` (its nearest timer layer) ends
// it with: the status given to WithDeadlineCause / WithTimeoutCause /
// WithOwnedTimeout, OK if none or `ctx` has no deadline. For glue that sees
// the deadline pass before the Context's own timer fires (an outbound call's
// gRPC deadline, set a little earlier). A reference valid while `ctx` is.
const absl::Status& DeadlineCause(const Context& ctx);

// Whether the deadline that bounds `ctx` (its nearest timer layer) has a
// timer armed. False if it has no deadline. For tests.
bool HasArmedDeadlineForTesting(const Context& ctx);

// The identity of `ctx`'s outermost layer (the one made on Background, of
// which every context derived from `ctx` -- WithoutCancel included -- is a
// descendant), or nullptr for Background itself. The glue keys a server
// call by the root of its Context, so an outbound call finds the call its
// Context came from. The address stays unique while any context of the
// chain is alive. Walks the chain (as Value does); writes nothing.
const void* ContextRoot(const Context& ctx);

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_OWNED_DEADLINE_H_
