// The switch of the RPC metrics (internal to //interceptors; public API in
// interceptors/observability.h).
//
// Thread-safety: a relaxed atomic flag, read once per call per side.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_OBSERVABILITY_STATE_H_
#define REQCTX_INTERCEPTORS_INTERNAL_OBSERVABILITY_STATE_H_

#include <atomic>

namespace reqctx::internal {

inline std::atomic<bool> g_metrics_on{false};

inline bool MetricsOn() { return g_metrics_on.load(std::memory_order_relaxed); }

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_OBSERVABILITY_STATE_H_
