// Group (errgroup): first error wins and cancels the group's context; Wait
// returns after every task; SetLimit bounds concurrency.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <latch>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "ledger/causes.h"
#include "gtest/gtest.h"
#include "tests/process_probe.h"

namespace reqctx {
namespace {

constexpr absl::Duration kLongWait = absl::Seconds(10);

TEST(GroupTest, AllOkReturnsOkAndCancelsContextAfterWait) {
  Group g(Background());
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) {
    g.Go([&](const Context& ctx) {
      EXPECT_TRUE(ctx.Err().ok());
      ran.fetch_add(1);
      return absl::OkStatus();
    });
  }
  EXPECT_TRUE(g.Wait().ok());
  EXPECT_EQ(ran.load(), 10);
  EXPECT_EQ(g.context().Err().code(), absl::StatusCode::kCancelled);
}

TEST(GroupTest, FirstErrorCancelsOthersAndIsReturned) {
  Group g(Background());
  for (int i = 0; i < 4; ++i) {
    g.Go([](const Context& ctx) {
      // Blocks until the failing task cancels the group (bounded).
      if (!ctx.Done().WaitFor(kLongWait)) return absl::InternalError("stuck");
      return ctx.Err();
    });
  }
  g.Go([](const Context&) { return absl::NotFoundError("first"); });
  EXPECT_EQ(g.Wait(), absl::NotFoundError("first"));
  // The cause is that error (as Go's errgroup), marked with which sibling
  // failed: the fifth task given to Go().
  const absl::Status cause = Cause(g.context());
  EXPECT_EQ(cause.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cause.message(), "first");
  EXPECT_EQ(CauseOf(cause), CauseKind::kGroupSibling);
  EXPECT_EQ(CauseHop(cause), "task #5");
  EXPECT_EQ(CauseDescription(cause),
            "canceled: a sibling in the group failed (task #5): first");
}

TEST(GroupTest, SiblingsSeeWhichTaskFailed) {
  Group g(Background());
  std::latch first_started(1);
  absl::Status seen_by_sibling;
  g.Go([&](const Context& ctx) {
    first_started.count_down();
    if (!ctx.Done().WaitFor(kLongWait)) return absl::InternalError("stuck");
    // Derived Contexts report the same cause.
    auto [child, cancel] = WithCancel(ctx);
    seen_by_sibling = Cause(child);
    return absl::OkStatus();
  });
  first_started.wait();
  g.Go([](const Context&) { return absl::UnavailableError("backend down"); });
  EXPECT_EQ(g.Wait(), absl::UnavailableError("backend down"));
  EXPECT_EQ(CauseOf(seen_by_sibling), CauseKind::kGroupSibling);
  EXPECT_EQ(CauseHop(seen_by_sibling), "task #2");
  EXPECT_EQ(seen_by_sibling.code(), absl::StatusCode::kUnavailable);
}

TEST(GroupTest, AllOkLeavesNoCauseKind) {
  Group g(Background());
  g.Go([](const Context&) { return absl::OkStatus(); });
  EXPECT_TRUE(g.Wait().ok());
  EXPECT_EQ(CauseOf(Cause(g.context())), CauseKind::kNone);
}

TEST(GroupTest, FirstErrorInTimeWins) {
  Group g(Background());
  g.Go([](const Context&) { return absl::AbortedError("early"); });
  g.Go([](const Context& ctx) {
    // Returns only after the first error has canceled the group.
    ctx.Done().WaitFor(kLongWait);
    return absl::InternalError("late");
  });
  EXPECT_EQ(g.Wait(), absl::AbortedError("early"));
}

TEST(GroupTest, ParentCancelReachesTasks) {
  auto [parent, cancel] = WithCancel(Background());
  Group g(parent);
  g.Go([](const Context& ctx) {
    ctx.Done().WaitFor(kLongWait);
    return ctx.Err();
  });
  cancel();
  EXPECT_EQ(g.Wait().code(), absl::StatusCode::kCancelled);
}

TEST(GroupTest, SetLimitBoundsConcurrency) {
  // Each task waits (bounded) until two tasks run at once, or every task has
  // started (the last one may be alone). A limit that admitted more than two
  // shows in max_running; one that admitted fewer leaves the pair unmet.
  Group g(Background());
  g.SetLimit(2);
  constexpr int kTasks = 12;
  std::mutex mu;
  std::condition_variable cv;
  int running = 0;
  int started = 0;
  int max_running = 0;
  bool pair_unmet = false;
  for (int i = 0; i < kTasks; ++i) {
    g.Go([&](const Context&) {
      std::unique_lock<std::mutex> lock(mu);
      max_running = std::max(max_running, ++running);
      ++started;
      cv.notify_all();
      if (!cv.wait_for(lock, std::chrono::seconds(10), [&] {
            return running >= 2 || started == kTasks;
          })) {
        pair_unmet = true;
      }
      --running;
      return absl::OkStatus();
    });
  }
  EXPECT_TRUE(g.Wait().ok());
  EXPECT_EQ(max_running, 2);
  EXPECT_FALSE(pair_unmet);
}

TEST(GroupTest, NonPositiveLimitMeansNoLimit) {
  Group g(Background());
  g.SetLimit(0);
  constexpr int kTasks = 6;
  // Every task waits (bounded) until all are running at once: only possible
  // if Go() did not limit them.
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  std::atomic<int> met{0};
  for (int i = 0; i < kTasks; ++i) {
    g.Go([&](const Context&) {
      std::unique_lock<std::mutex> lock(mu);
      ++arrived;
      cv.notify_all();
      if (cv.wait_for(lock, std::chrono::seconds(10),
                      [&] { return arrived == kTasks; })) {
        met.fetch_add(1);
      }
      return absl::OkStatus();
    });
  }
  EXPECT_TRUE(g.Wait().ok());
  EXPECT_EQ(met.load(), kTasks);
}

TEST(GroupTest, TasksMayStartTasks) {
  Group g(Background());
  std::atomic<int> ran{0};
  g.Go([&](const Context&) {
    g.Go([&](const Context&) {
      ran.fetch_add(1);
      return absl::OkStatus();
    });
    ran.fetch_add(1);
    return absl::OkStatus();
  });
  EXPECT_TRUE(g.Wait().ok());
  EXPECT_EQ(ran.load(), 2);
}

TEST(GroupTest, DestructorWaits) {
  // The task is held until the owner is known to be blocked (in ~Group): a
  // destructor that did not wait would return while the task is still held.
  std::atomic<bool> finished{false};
  std::atomic<bool> gate{false};
  const int owner = testing::CurrentThreadId();
  std::thread releaser([&] {
    testing::WaitUntilThreadBlocked(owner);
    gate = true;
  });
  {
    Group g(Background());
    g.Go([&](const Context&) {
      while (!gate.load()) std::this_thread::yield();
      finished = true;
      return absl::OkStatus();
    });
  }
  EXPECT_TRUE(finished.load());
  releaser.join();
}

}  // namespace
}  // namespace reqctx
