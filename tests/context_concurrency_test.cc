// Concurrency and growth: many threads canceling, deriving and waiting at
// once; no growth of a long-lived parent's child list or the timer queue.
#include <algorithm>
#include <atomic>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/debug.h"
#include "gtest/gtest.h"
#include "tests/process_probe.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

constexpr absl::Duration kLongWait = absl::Seconds(20);
inline constexpr Key<int> kIntKey("int");

// Smaller sizes under sanitizers keep the suite fast; the property is the same.
constexpr int kScale =
    reqctx::testing::PlainOrSanitized(1, 10);

TEST(ConcurrencyTest, ConcurrentCancelsDeriveAndWait) {
  constexpr int kThreads = 8;
  for (int round = 0; round < 50 / kScale + 5; ++round) {
    auto [root, cancel] = WithCancel(Background());
    std::latch start(kThreads * 3 + 1);
    std::atomic<int> observed_done{0};
    std::mutex derived_mu;
    std::vector<std::vector<std::pair<Context, CancelFunc>>> derived(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      // Cancelers.
      threads.emplace_back([&, cancel = cancel] {
        start.arrive_and_wait();
        cancel();
      });
      // Derivers: a child of a parent already seen done is born done
      // (deriving waits for an in-progress cancel to finish notifying);
      // every child is done once all cancels have returned.
      threads.emplace_back([&, root = root, i] {
        start.arrive_and_wait();
        for (int j = 0; j < 20; ++j) {
          const bool root_was_done = root.Done().IsDone();
          auto [child, cancel_child] = WithCancel(root);
          auto [timed, cancel_timed] = WithTimeout(child, absl::Hours(1));
          if (root_was_done) {
            EXPECT_TRUE(child.Done().IsDone());
            EXPECT_TRUE(timed.Done().IsDone());
          }
          std::lock_guard<std::mutex> lock(derived_mu);
          derived[i].push_back({child, cancel_child});
          derived[i].push_back({timed, cancel_timed});
        }
      });
      // Waiters.
      threads.emplace_back([&, root = root] {
        start.arrive_and_wait();
        if (root.Done().WaitFor(kLongWait)) observed_done.fetch_add(1);
      });
    }
    start.arrive_and_wait();
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(observed_done.load(), kThreads);
    EXPECT_EQ(root.Err().code(), absl::StatusCode::kCancelled);
    for (const auto& per_thread : derived) {
      for (const auto& [ctx, cancel_ctx] : per_thread) {
        EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);
      }
    }
    EXPECT_EQ(debug::ListenerCount(root), 0u);
  }
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

TEST(ConcurrencyTest, DeepTreeCanceledFromManyLevelsAtOnce) {
  // A chain; threads cancel different levels concurrently. Whatever the
  // interleaving, once they are done exactly the levels at or below the
  // shallowest canceled one are done (Canceled), and the levels above it are
  // still live; then canceling the root finishes the rest.
  constexpr int kDepth = 200;
  for (int round = 0; round < 20; ++round) {
    std::vector<std::pair<Context, CancelFunc>> chain;
    chain.push_back(WithCancel(Background()));
    for (int i = 1; i < kDepth; ++i) chain.push_back(WithCancel(chain.back().first));
    std::latch start(5);
    std::vector<std::thread> threads;
    int shallowest = kDepth;
    for (int t = 0; t < 4; ++t) {
      const int level = 1 + (t * 53 + round) % (kDepth - 1);  // Never 0.
      shallowest = std::min(shallowest, level);
      threads.emplace_back([&, level] {
        start.arrive_and_wait();
        chain[level].second();
      });
    }
    start.arrive_and_wait();
    for (std::thread& t : threads) t.join();
    for (int i = 0; i < kDepth; ++i) {
      if (i < shallowest) {
        EXPECT_TRUE(chain[i].first.Err().ok()) << "level " << i;
      } else {
        EXPECT_EQ(chain[i].first.Err().code(), absl::StatusCode::kCancelled)
            << "level " << i;
      }
    }
    chain[0].second();
    for (auto& [ctx, cancel] : chain) {
      EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);
    }
  }
}

TEST(ConcurrencyTest, ManyThreadsWaitOnOneContext) {
  auto [ctx, cancel] = WithCancel(Background());
  constexpr int kWaiters = 32;
  std::latch waiting(kWaiters);
  std::atomic<int> woke{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, ctx = ctx] {
      waiting.count_down();
      if (ctx.Done().WaitFor(kLongWait)) woke.fetch_add(1);
    });
  }
  waiting.wait();
  cancel();
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(woke.load(), kWaiters);
  EXPECT_EQ(debug::ListenerCount(ctx), 0u);
}

TEST(ConcurrencyTest, TimersFireAcrossThreads) {
  constexpr int kThreads = 4;
  const int per_thread = 500 / kScale;
  std::atomic<int> fired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::pair<Context, CancelFunc>> live;
      for (int i = 0; i < per_thread; ++i) {
        live.push_back(WithTimeout(Background(),
                                   absl::Microseconds((i * 37 + t) % 5000)));
      }
      for (auto& [ctx, cancel] : live) {
        if (ctx.Done().WaitFor(kLongWait) &&
            ctx.Err().code() == absl::StatusCode::kDeadlineExceeded) {
          fired.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(fired.load(), kThreads * per_thread);
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

// A shared parent whose registration went per-CPU (as contention makes it):
// children, timers, waiters and AfterFuncs registered from several threads
// land on different lists; a cancel racing with registration still reaches
// every one of them, and canceled children unlink from their own list.
void SharedParentCancelReachesEveryone(bool per_cpu) {
  auto [parent, cancel] = WithCancel(Background());
  if (per_cpu) debug::MakeListenersPerCpuForTesting(parent);
  EXPECT_EQ(debug::ListenersArePerCpu(parent), per_cpu);
  constexpr int kThreads = 4;
  const int per_thread = 4000 / kScale;
  std::latch halfway(kThreads + 1);
  std::vector<std::vector<std::pair<Context, CancelFunc>>> kept(kThreads);
  std::atomic<int> after_funcs_ran{0};
  std::vector<std::vector<AfterFuncHandle>> handles(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        if (i == per_thread / 2) halfway.count_down();
        auto child = i % 3 == 0 ? WithTimeout(parent, absl::Hours(1))
                                : WithCancel(parent);
        if (i % 2 == 0) {
          child.second();  // Canceled on its own: unlinks itself.
        } else {
          kept[t].push_back(std::move(child));
        }
        if (i % 50 == 0) {
          handles[t].push_back(
              AfterFunc(parent, [&] { after_funcs_ran.fetch_add(1); }));
        }
      }
    });
  }
  std::thread waiter([&, p = parent] {
    EXPECT_TRUE(p.Done().WaitFor(kLongWait));
  });
  halfway.arrive_and_wait();
  cancel();  // Races with the second half of the registrations.
  for (std::thread& t : threads) t.join();
  waiter.join();
  size_t expected_after_funcs = 0;
  for (int t = 0; t < kThreads; ++t) {
    expected_after_funcs += handles[t].size();
    for (auto& [ctx, c] : kept[t]) {
      ASSERT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);
    }
  }
  EXPECT_EQ(debug::ListenerCount(parent), 0u);
  EXPECT_TRUE(testing::Eventually([&] {
    return after_funcs_ran.load() == static_cast<int>(expected_after_funcs);
  }));
}

TEST(ConcurrencyTest, SharedParentCancelReachesEveryonePerCpu) {
  SharedParentCancelReachesEveryone(/*per_cpu=*/true);
}

TEST(ConcurrencyTest, SharedParentCancelReachesEveryoneMainList) {
  SharedParentCancelReachesEveryone(/*per_cpu=*/false);
}

TEST(ConcurrencyTest, PerCpuChildrenOfALiveParentUnlink) {
  auto [parent, cancel] = WithCancel(Background());
  debug::MakeListenersPerCpuForTesting(parent);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([p = parent] {
      for (int i = 0; i < 20000 / kScale; ++i) {
        auto [c, f] = WithCancel(p);
        auto [d, g] = WithTimeout(c, absl::Hours(1));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(debug::ListenerCount(parent), 0u);
  EXPECT_TRUE(parent.Err().ok());
}

TEST(GrowthTest, MillionCanceledChildrenLeaveParentEmpty) {
  auto [parent, cancel] = WithCancel(Background());
  const int children = 1'000'000 / kScale;
  for (int i = 0; i < children; ++i) {
    auto [child, cancel_child] = WithCancel(parent);
    if (i % 2 == 0) cancel_child();  // Else: dropped CancelFunc cancels.
  }
  EXPECT_EQ(debug::ListenerCount(parent), 0u);
  EXPECT_FALSE(parent.Done().IsDone());
}

TEST(GrowthTest, HundredThousandCanceledTimersLeaveNonePending) {
  const size_t before = debug::PendingTimerCount();
  const int timers = 100'000 / kScale;
  {
    std::vector<std::pair<Context, CancelFunc>> live;
    live.reserve(timers);
    for (int i = 0; i < timers; ++i) {
      live.push_back(WithTimeout(Background(), absl::Hours(1) + absl::Seconds(i)));
    }
    EXPECT_EQ(debug::PendingTimerCount(), before + timers);
    for (int i = 0; i < timers; i += 2) live[i].second();  // Explicit cancel.
  }  // The rest: last CancelFunc dropped.
  EXPECT_EQ(debug::PendingTimerCount(), before);
}

TEST(GrowthTest, ChildrenOfNeverDoneParentsRegisterNothing) {
  Context detached = WithoutCancel(WithValue(Background(), kIntKey, 1));
  for (int i = 0; i < 1000; ++i) {
    auto [child, cancel] = WithCancel(detached);
    EXPECT_FALSE(child.Done().IsDone());
  }
  EXPECT_EQ(debug::ListenerCount(detached), 0u);
  EXPECT_EQ(debug::ListenerCount(Background()), 0u);
}

}  // namespace
}  // namespace reqctx
