// The sync cancel watcher (interceptors/internal/sync_cancel_watcher.h):
// watched calls are polled until they end, finished calls are dropped in one
// pass however many there are, calls watched from many threads while a pass
// runs are neither lost nor polled after they end. Uses a watcher without
// its thread (PollOnce) and grpc::ServerContext objects not bound to a call
// (IsCancelled() is false for them).
#include <grpcpp/server_context.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/internal/server_call.h"
#include "interceptors/internal/sync_cancel_watcher.h"

namespace reqctx::internal {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kScale = 10;  // Same properties, smaller sizes.
#else
constexpr int kScale = 1;
#endif

struct Watched {
  std::unique_ptr<grpc::ServerContext> sc = std::make_unique<grpc::ServerContext>();
  Context ctx;
  std::shared_ptr<ServerCall> call;

  Watched() {
    auto [c, cancel] = WithCancel(Background());
    ctx = c;
    call = std::make_shared<ServerCall>(sc.get());
    call->Begin(ServerApi::kAsync, c, std::move(cancel), std::nullopt,
                /*deadline_owned=*/false);
  }
};

TEST(SyncCancelWatcherTest, PollsUntilEndedThenDrops) {
  auto watcher = SyncCancelWatcher::NewForTesting();
  Watched w;
  ASSERT_TRUE(w.call->BeginWatching());
  EXPECT_FALSE(w.call->BeginWatching());  // Once per call.
  watcher->Watch(w.call);
  EXPECT_EQ(watcher->WatchedCount(), 1u);
  EXPECT_EQ(watcher->PollOnce(), 1u);
  EXPECT_EQ(watcher->PollOnce(), 1u);
  EXPECT_TRUE(w.ctx.Err().ok());
  w.call->End();
  EXPECT_EQ(w.ctx.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(watcher->PollOnce(), 0u);
  EXPECT_EQ(watcher->WatchedCount(), 0u);
  // An ended call is not watched again.
  EXPECT_FALSE(w.call->BeginWatching());
}

TEST(SyncCancelWatcherTest, OnePassDropsEveryFinishedCallAndKeepsTheRest) {
  const int n = 10000 / kScale;
  auto watcher = SyncCancelWatcher::NewForTesting();
  std::vector<Watched> calls(n);
  for (Watched& w : calls) {
    ASSERT_TRUE(w.call->BeginWatching());
    watcher->Watch(w.call);
  }
  for (int i = 0; i < n; i += 2) calls[i].call->End();
  EXPECT_EQ(watcher->PollOnce(), static_cast<size_t>(n / 2));
  EXPECT_EQ(watcher->WatchedCount(), static_cast<size_t>(n / 2));
  // The watcher let go of the finished ones (only `calls` holds them now;
  // a live one is also held by the watcher and the ServerCallRegistry,
  // both by ServerContext and by Context root, for the budget ledger).
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(calls[i].call.use_count(), i % 2 == 0 ? 1 : 4) << i;
  }
  for (int i = 1; i < n; i += 2) calls[i].call->End();
  EXPECT_EQ(watcher->PollOnce(), 0u);
  EXPECT_EQ(watcher->WatchedCount(), 0u);
}

// Threads watch and end calls while another thread polls: every call is
// dropped once ended, none is lost, and an ended call's ServerContext is
// never touched again (ASan: each is freed right after End()).
TEST(SyncCancelWatcherTest, ConcurrentWatchEndAndPoll) {
  constexpr int kThreads = 4;
  const int per_thread = 2000 / kScale;
  auto watcher = SyncCancelWatcher::NewForTesting();
  std::atomic<bool> stop{false};
  std::thread poller([&] {
    while (!stop.load()) watcher->PollOnce();
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i) {
        Watched w;
        if (w.call->BeginWatching()) watcher->Watch(w.call);
        w.call->End();
        w.sc.reset();  // Freed: a later poll of this call would be a UAF.
      }
    });
  }
  for (std::thread& t : threads) t.join();
  stop.store(true);
  poller.join();
  EXPECT_EQ(watcher->PollOnce(), 0u);
  EXPECT_EQ(watcher->WatchedCount(), 0u);
}

}  // namespace
}  // namespace reqctx::internal
