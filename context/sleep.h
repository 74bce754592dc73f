// SleepFor: a sleep that a context can cut short.
//
// Thread-safety: safe from any thread. Creates no thread and no timer: the
// calling thread waits on its own condition variable, which the cancel wakes.
#ifndef REQCTX_CONTEXT_SLEEP_H_
#define REQCTX_CONTEXT_SLEEP_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx {

// Sleeps for `d` or until `ctx` is done, whichever comes first. Returns OK
// after the full sleep, ctx.Err() as soon as ctx is done. A non-positive `d`
// returns ctx.Err() at once (OK on a live context).
absl::Status SleepFor(const Context& ctx, absl::Duration d);

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_SLEEP_H_
