// Introspection of the gRPC glue's per-call state, for tests and leak checks
// (e.g. "10,000 calls later, nothing is left"). Not for control flow.
//
// Thread-safety: safe from any thread; each result is a snapshot.
#ifndef REQCTX_INTERCEPTORS_DEBUG_H_
#define REQCTX_INTERCEPTORS_DEBUG_H_

#include <cstddef>

namespace reqctx::debug {

// Incoming calls whose Context FromServerContext can currently find (0 when
// the process's servers are idle).
size_t LiveServerCallCount();
// Sync-API calls currently polled for client cancellation.
size_t WatchedServerCallCount();
// NewClientContext bindings not yet consumed by a call.
size_t PendingClientBindingCount();

}  // namespace reqctx::debug

#endif  // REQCTX_INTERCEPTORS_DEBUG_H_
