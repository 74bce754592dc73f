#include "interceptors/observability.h"

#include <cstdio>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "context/orphans.h"
#include "interceptors/debug.h"
#include "interceptors/internal/observability_state.h"
#include "w3c/header_rules.h"
#include "w3c/trace_propagation.h"
#include "metrics/rpc_metrics.h"

namespace reqctx {

void EnableRpcMetrics() {
  metrics::RegisterRpcFamilies();
  metrics::RegisterProcessGauges();
  static std::once_flag once;
  std::call_once(once, [] {
    (void)metrics::Registry::Default().AddCallbackGauge(
        "reqctx_sync_watched_calls",
        "Sync-API calls polled for client cancellation by reqctx's watcher.",
        [] { return static_cast<double>(debug::WatchedServerCallCount()); });
    (void)metrics::Registry::Default().AddCallbackFamily(
        "reqctx_dropped_headers_total",
        "Forwarded headers (or list members of tracestate and baggage) "
        "dropped instead of sent: invalid, over the format's limits, or over "
        "the outbound header budget.",
        metrics::Type::kCounter, {"header", "reason"}, [] {
          std::vector<metrics::Registry::Sample> samples;
          for (size_t h = 0; h < kDroppedHeaderKinds; ++h) {
            for (size_t r = 0; r < kDropReasons; ++r) {
              const auto header = static_cast<DroppedHeader>(h);
              const auto reason = static_cast<DropReason>(r);
              samples.push_back(
                  {{std::string(DroppedHeaderLabel(header)),
                    std::string(DropReasonLabel(reason))},
                   static_cast<double>(DroppedHeaderCount(header, reason))});
            }
          }
          return samples;
        });
  });
  internal::g_metrics_on.store(true);
}

void DisableRpcMetrics() { internal::g_metrics_on.store(false); }

bool RpcMetricsEnabled() { return internal::MetricsOn(); }

absl::Status EnableOrphanReports(
    absl::Duration threshold, std::function<void(const std::string&)> log) {
  if (!log) {
    log = [](const std::string& line) {
      std::fprintf(stderr, "%s\n", line.c_str());
    };
  }
  metrics::CounterFamily& reports = metrics::OrphanReports();
  OrphanDetectorOptions options;
  options.threshold = threshold;
  options.reporter = [log = std::move(log), &reports](const OrphanReport& r) {
    const TraceContext* tc = internal::FindTraceContext(r.ctx);
    log(absl::StrCat(
        "reqctx: orphaned ", absl::string_view(r.kind.data(), r.kind.size()),
        " method=", absl::string_view(r.name.data(), r.name.size()),
        " trace_id=",
        tc != nullptr ? absl::string_view(tc->trace_id.data(), tc->trace_id.size())
                      : absl::string_view("-"),
        " done_for=", absl::FormatDuration(r.done_for),
        " context=", r.ctx.DebugString()));
    // Work outside a call has no name; a call's method is labelled as
    // everywhere else (an unknown one as "_unknown").
    reports
        .WithLabels({r.kind, r.name.empty() ? std::string_view()
                                            : metrics::MethodLabel(r.name)})
        .Increment();
  };
  return EnableOrphanDetector(std::move(options));
}

}  // namespace reqctx
