// //bench:metrics_bench -- what recording the reqctx_* metrics costs per
// operation (Google Benchmark): a counter add, a histogram observation, the
// per-thread method lookup, and everything the server glue records for one
// call, alone and from several threads at once (per-CPU slots: no shared
// cache line between cores). rpc_bench's "metrics" mode measures the same in
// a real RPC.
#include <benchmark/benchmark.h>

#include "absl/time/time.h"
#include "metrics/metrics.h"
#include "metrics/rpc_metrics.h"

namespace reqctx::metrics {
namespace {

void BM_CounterIncrement(benchmark::State& state) {
  static Counter& c =
      (*Registry::Default().AddCounter("bench_counter_total", "", {}))
          ->WithLabels({});
  for (auto _ : state) c.Increment();
}
BENCHMARK(BM_CounterIncrement)->ThreadRange(1, 8);

void BM_HistogramObserve(benchmark::State& state) {
  static Histogram& h = (*Registry::Default().AddHistogram(
                             "bench_seconds", "", {},
                             ExponentialBuckets(0.0001, 2.5, 16)))
                            ->WithLabels({});
  double v = 0.0001;
  for (auto _ : state) {
    h.Observe(v);
    v = v < 10 ? v * 1.7 : 0.0001;
  }
}
BENCHMARK(BM_HistogramObserve)->ThreadRange(1, 8);

// This binary has no echo descriptor: declare the method it looks up.
const bool kEchoDeclared = (DeclareMethod("/echo.v1.Echo/Echo"), true);

void BM_MethodLookup(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(&ServerMethod("/echo.v1.Echo/Echo"));
  }
}
BENCHMARK(BM_MethodLookup)->ThreadRange(1, 8);

// A name that is not known (a descriptor lookup each time, never cached).
void BM_UnknownMethodLookup(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(&ServerMethod("/bogus.Svc/Nope"));
  }
}
BENCHMARK(BM_UnknownMethodLookup)->ThreadRange(1, 8);

// What ServerCallObserver records for one call with a deadline.
void BM_ServerCallRecording(benchmark::State& state) {
  for (auto _ : state) {
    const ServerMethodMetrics& m = ServerMethod("/echo.v1.Echo/Echo");
    m.started->Increment();
    m.active->Increment();
    m.deadline_at_arrival->ObserveDuration(absl::Milliseconds(250));
    m.handled->Get(0, CauseKind::kNone).Increment();
    m.active->Decrement();
    m.handling->ObserveDuration(absl::Microseconds(120));
  }
}
BENCHMARK(BM_ServerCallRecording)->ThreadRange(1, 8);

}  // namespace
}  // namespace reqctx::metrics

BENCHMARK_MAIN();
