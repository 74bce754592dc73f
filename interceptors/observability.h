// Observability of the gRPC glue: Prometheus metrics recorded by the
// interceptors, orphaned-handler reports, and the per-call log line.
//
//   reqctx::EnableRpcMetrics();                       // reqctx_* metrics
//   auto server = reqctx::MetricsServer::Start({.port = 9464});  // scrape
//   reqctx::EnableOrphanReports(absl::Seconds(1));    // log + count orphans
//   reqctx::SetCallLogSink(reqctx::StderrJsonCallLogSink());  // JSON lines
//
// All three are off by default and independent. The metrics and their
// labels are listed in metrics/rpc_metrics.h and docs/observability.md;
// services add their own to metrics::Registry::Default().
//
// Recording happens in one place per side (interceptors/internal/
// call_observer.h): at a call's first hook and when its status is sent
// (server) or received (client). Per call it costs a per-thread method lookup
// and a few relaxed adds on this CPU's cache lines; nothing when off.
//
// Thread-safety: everything here may be called from any thread at any time;
// calls already in flight when metrics are turned on or off may be recorded
// partly (started but not finished) -- turn them on at start-up.
#ifndef REQCTX_INTERCEPTORS_OBSERVABILITY_H_
#define REQCTX_INTERCEPTORS_OBSERVABILITY_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "metrics/call_log.h"  // IWYU pragma: export

namespace reqctx {

// Turns on the reqctx_* RPC metrics (and registers the process gauges:
// live timers, executor threads, watched sync calls, orphaned work; and
// reqctx_dropped_headers_total{header,reason}, the forwarded headers or list
// members dropped as invalid, over their format's limits or over the
// outbound header budget: w3c/header_rules.h, counted whether or not
// metrics are on).
void EnableRpcMetrics();
// Turns them off again (benchmarks compare the two).
void DisableRpcMetrics();
bool RpcMetricsEnabled();

// Turns on the orphan detector (context/orphans.h) with `threshold`: a
// handler, Group task or AfterFunc still running `threshold` after its
// Context is done is logged once -- kind, gRPC method (handlers), trace id
// and the Context's DebugString, one line through `log` (default: stderr)
// -- and counted in reqctx_orphan_reports_total{kind,method}. Errors as
// EnableOrphanDetector's.
absl::Status EnableOrphanReports(
    absl::Duration threshold,
    std::function<void(const std::string& line)> log = nullptr);

}  // namespace reqctx

#endif  // REQCTX_INTERCEPTORS_OBSERVABILITY_H_
