// The sync cancel watcher's cost (interceptors/internal/sync_cancel_watcher.h)
// at 10,000 in-flight sync calls: one poll pass over them, a pass that drops
// them all once they have finished, and Watch() per call. Uses a watcher
// without its thread (PollOnce() is timed directly) and grpc::ServerContext
// objects that are not bound to a call, so IsCancelled() is its cheapest
// (no completion queue to look at): the figures are the watcher's own cost.
//
// PollPassLiveSyncCalls does the same over real in-flight sync calls (a
// loopback server whose handlers block until released), so IsCancelled()
// does its full work (a non-blocking pluck on the call's completion queue):
// the per-call figure to multiply by 10,000 for a real server.
//
// For comparison, LegacyRemoval times the removal the watcher used before
// (std::find inside std::partition under one global lock: O(watched x
// finished)) on the same 10,000 finished calls.
//
//   bazel run -c opt //bench:watcher_bench
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_context.h>

#include <algorithm>
#include <condition_variable>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "context/core.h"
#include "interceptors/internal/server_call.h"
#include "interceptors/internal/sync_cancel_watcher.h"
#include "proto/echo.grpc.pb.h"

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
      auto call = std::make_shared<ServerCall>(contexts.back().get());
      call->Begin(ServerApi::kAsync, ctx, std::move(cancel), std::nullopt,
                /*deadline_owned=*/false);
      if (call->BeginWatching()) watcher.Watch(call);
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
  auto call = std::make_shared<ServerCall>(&sc);
  call->Begin(ServerApi::kAsync, ctx, cancel, std::nullopt,
                /*deadline_owned=*/false);
  int64_t n = 0;
  for (auto _ : state) {
    watcher->Watch(call);
    if (++n % 10000 == 0) {  // Keep the lists at <= 10,000 calls.
      state.PauseTiming();
      call->End();  // PollCancelled() now says "drop".
      watcher->PollOnce();
      call = std::make_shared<ServerCall>(&sc);
      call->Begin(ServerApi::kAsync, ctx, cancel, std::nullopt,
                /*deadline_owned=*/false);
      call->BeginWatching();
      state.ResumeTiming();
    }
  }
  call->End();
  watcher->PollOnce();
}
BENCHMARK(BM_Watch);

// A sync service whose Echo handlers block until Release(); remembers each
// in-flight call's ServerContext.
class BlockingEcho final : public ::echo::v1::Echo::Service {
 public:
  grpc::Status Echo(grpc::ServerContext* sc, const ::echo::v1::EchoRequest*,
                    ::echo::v1::EchoResponse*) override {
    std::unique_lock<std::mutex> lock(mu_);
    contexts_.push_back(sc);
    changed_.notify_all();
    changed_.wait(lock, [this] { return released_; });
    return grpc::Status::OK;
  }
  std::vector<grpc::ServerContext*> WaitInFlight(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [&] { return contexts_.size() >= n; });
    return contexts_;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    changed_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<grpc::ServerContext*> contexts_;
  bool released_ = false;
};

void BM_PollPassLiveSyncCalls(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  BlockingEcho service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  // No reqctx interceptor: only this benchmark's watcher polls these calls.
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto stub = ::echo::v1::Echo::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  std::vector<grpc::ClientContext> ccs(n);
  std::vector<::echo::v1::EchoRequest> requests(n);
  std::vector<::echo::v1::EchoResponse> responses(n);
  std::mutex mu;
  std::condition_variable all_done;
  int done = 0;
  for (int i = 0; i < n; ++i) {
    stub->async()->Echo(&ccs[i], &requests[i], &responses[i],
                        [&](grpc::Status) {
                          std::lock_guard<std::mutex> lock(mu);
                          if (++done == n) all_done.notify_all();
                        });
  }
  std::vector<grpc::ServerContext*> contexts = service.WaitInFlight(n);
  {
    auto watcher = SyncCancelWatcher::NewForTesting();
    std::vector<std::shared_ptr<ServerCall>> calls;
    for (grpc::ServerContext* sc : contexts) {
      auto [ctx, cancel] = WithCancel(Background());
      auto call = std::make_shared<ServerCall>(sc);
      call->Begin(ServerApi::kAsync, ctx, std::move(cancel), std::nullopt,
                /*deadline_owned=*/false);
      if (call->BeginWatching()) watcher->Watch(call);
      calls.push_back(std::move(call));
    }
    for (auto _ : state) {
      benchmark::DoNotOptimize(watcher->PollOnce());
    }
    state.counters["ns_per_call"] = benchmark::Counter(
        static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate |
                                    benchmark::Counter::kInvert);
    for (auto& c : calls) c->End();  // Before the handlers return.
    watcher->PollOnce();
  }
  service.Release();
  {
    std::unique_lock<std::mutex> lock(mu);
    all_done.wait(lock, [&] { return done == n; });
  }
  server->Shutdown();
}
BENCHMARK(BM_PollPassLiveSyncCalls)->Arg(256)->Unit(benchmark::kMicrosecond);

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
