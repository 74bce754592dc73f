// The sync cancel watcher's cost (interceptors/internal/sync_cancel_watcher.h)
// at 10,000 in-flight sync calls: one poll pass over them, a pass that drops
// them all once they have finished, and Watch() per call. Uses a watcher
// without its thread (PollOnce() is timed directly) and grpc::ServerContext
// objects that are not bound to a call, so IsCancelled() is its cheapest
// (no completion queue to look at): the figures are the watcher's own cost.
//
// For comparison, LegacyRemoval times the removal the watcher used before
// (std::find inside std::partition under one global lock: O(watched x
// finished)) on the same 10,000 finished calls.
//
//   bazel run -c opt //bench:watcher_bench
#include <grpcpp/server_context.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "context/core.h"
#include "interceptors/internal/server_call.h"
#include "interceptors/internal/sync_cancel_watcher.h"

namespace reqctx::internal {
namespace {

// `n` calls, each with its own grpc::ServerContext, being watched by
// `watcher`.
struct InFlight {
  std::vector<std::unique_ptr<grpc::ServerContext>> contexts;
  std::vector<std::shared_ptr<ServerCall>> calls;

  InFlight(SyncCancelWatcher& watcher, int n) {
    for (int i = 0; i < n; ++i) {
      contexts.push_back(std::make_unique<grpc::ServerContext>());
      auto [ctx, cancel] = WithCancel(Background());
      auto call = std::make_shared<ServerCall>(ctx, std::move(cancel),
                                               std::nullopt);
      if (call->BeginWatching(contexts.back().get())) watcher.Watch(call);
      calls.push_back(std::move(call));
    }
  }
  void EndAll() {
    for (auto& c : calls) c->End();
  }
};

void BM_PollPass(benchmark::State& state) {
  auto watcher = SyncCancelWatcher::NewForTesting();
  InFlight in_flight(*watcher, static_cast<int>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(watcher->PollOnce());
  }
  state.counters["ns_per_call"] = benchmark::Counter(
      static_cast<double>(state.range(0)),
      benchmark::Counter::kIsIterationInvariantRate |
          benchmark::Counter::kInvert);
  in_flight.EndAll();
  watcher->PollOnce();
}
BENCHMARK(BM_PollPass)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

void BM_PollPassDroppingAllFinished(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    auto watcher = SyncCancelWatcher::NewForTesting();
    InFlight in_flight(*watcher, n);
    in_flight.EndAll();
    state.ResumeTiming();
    benchmark::DoNotOptimize(watcher->PollOnce());
    state.PauseTiming();
    in_flight = InFlight(*watcher, 0);
    watcher.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_PollPassDroppingAllFinished)
    ->Iterations(50)
    ->Arg(10000)
    ->Unit(benchmark::kMicrosecond);

void BM_Watch(benchmark::State& state) {
  auto watcher = SyncCancelWatcher::NewForTesting();
  grpc::ServerContext sc;
  auto [ctx, cancel] = WithCancel(Background());
  auto call = std::make_shared<ServerCall>(ctx, cancel, std::nullopt);
  int64_t n = 0;
  for (auto _ : state) {
    watcher->Watch(call);
    if (++n % 10000 == 0) {  // Keep the lists at <= 10,000 calls.
      state.PauseTiming();
      call->End();  // PollCancelled() now says "drop".
      watcher->PollOnce();
      call = std::make_shared<ServerCall>(ctx, cancel, std::nullopt);
      call->BeginWatching(&sc);
      state.ResumeTiming();
    }
  }
  call->End();
  watcher->PollOnce();
}
BENCHMARK(BM_Watch);

// The removal step of the previous watcher, for comparison: every finished
// call looked up with std::find in the list of finished calls, inside
// std::partition over all watched calls.
void BM_LegacyRemoval(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::shared_ptr<int>> calls;
    std::vector<const int*> finished;
    for (int i = 0; i < n; ++i) {
      calls.push_back(std::make_shared<int>(i));
      finished.push_back(calls.back().get());
    }
    state.ResumeTiming();
    auto keep_end = std::partition(
        calls.begin(), calls.end(), [&finished](const std::shared_ptr<int>& c) {
          return std::find(finished.begin(), finished.end(), c.get()) ==
                 finished.end();
        });
    calls.erase(keep_end, calls.end());
    benchmark::DoNotOptimize(calls.data());
  }
}
BENCHMARK(BM_LegacyRemoval)->Iterations(20)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace reqctx::internal
