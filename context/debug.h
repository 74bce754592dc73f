// Introspection for tests, benchmarks and leak checks. Not for control flow.
//
// Thread-safety: safe from any thread; each result is a snapshot that may be
// stale by the time it is read.
#ifndef REQCTX_CONTEXT_DEBUG_H_
#define REQCTX_CONTEXT_DEBUG_H_

#include <cstddef>

#include "context/core.h"

namespace reqctx::debug {

// Listeners linked to ctx's nearest cancelable layer: live children, waiters
// and pending AfterFuncs. 0 for a context that can never be done.
size_t ListenerCount(const Context& ctx);
// Deadlines queued in the shared timer service.
size_t PendingTimerCount();
// Threads the AfterFunc executor currently owns (busy or idle).
size_t AfterFuncThreadCount();

}  // namespace reqctx::debug

#endif  // REQCTX_CONTEXT_DEBUG_H_
