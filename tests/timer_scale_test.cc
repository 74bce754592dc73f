// The shared timer service at scale: every deadline fires, none early, and the
// queue returns to empty. Lateness is measured by //bench:timer_bench, not
// asserted here.
#include <sched.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/debug.h"
#include "gtest/gtest.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

constexpr int kScale =
    reqctx::testing::PlainOrSanitized(1, 10);  // Same property, smaller sizes under sanitizers.

constexpr absl::Duration kLongWait = absl::Seconds(30);

TEST(TimerScaleTest, TenThousandDeadlinesOverOneSecondAllFireNoneEarly) {
  const int n = 10'000 / kScale;
  const absl::Time start = absl::Now();
  std::vector<std::pair<Context, CancelFunc>> contexts;
  contexts.reserve(n);
  for (int i = 0; i < n; ++i) {
    contexts.push_back(WithDeadline(
        Background(), start + absl::Milliseconds(100) + absl::Seconds(1) * i / n));
  }
  // Contexts are in deadline order: walk them, checking each before and
  // after it fires.
  int fired = 0;
  int early = 0;
  for (auto& [ctx, cancel] : contexts) {
    const absl::Time deadline = *ctx.Deadline();
    if (ctx.Done().IsDone() && absl::Now() < deadline) ++early;
    if (ctx.Done().WaitFor(kLongWait)) {
      ++fired;
      if (absl::Now() < deadline) ++early;
      EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
    }
  }
  EXPECT_EQ(fired, n);
  EXPECT_EQ(early, 0);
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

TEST(TimerScaleTest, MillionLiveDeadlinesAllFireOrCancelAndQueueEmpties) {
  const int n = 1'000'000 / kScale;
  const absl::Time start = absl::Now();
  std::vector<std::pair<Context, CancelFunc>> contexts;
  contexts.reserve(n);
  for (int i = 0; i < n; ++i) {
    // Interleaved (unsorted) deadlines over one second, after creation ends.
    contexts.push_back(WithDeadline(
        Background(), start + absl::Seconds(2) +
                          absl::Microseconds((i * 7919LL) % 1'000'000)));
  }
  // A third are canceled; whether each cancel beats its deadline depends on
  // the machine's speed, so only the outcome of each context is asserted.
  for (int i = 0; i < n; i += 3) contexts[i].second();
  int canceled = 0;
  int expired = 0;
  for (int i = 0; i < n; ++i) {
    const Context& ctx = contexts[i].first;
    ASSERT_TRUE(ctx.Done().WaitFor(kLongWait));
    const absl::StatusCode code = ctx.Err().code();
    if (code == absl::StatusCode::kCancelled) ++canceled;
    if (code == absl::StatusCode::kDeadlineExceeded) ++expired;
    if (i % 3 != 0) {
      EXPECT_EQ(code, absl::StatusCode::kDeadlineExceeded);
    }
  }
  EXPECT_EQ(canceled + expired, n);
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

// Pins the calling thread to one CPU (so its deadlines go to one shard)
// while alive.
class PinnedToOneCpu {
 public:
  PinnedToOneCpu() {
    sched_getaffinity(0, sizeof(saved_), &saved_);
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &saved_)) {
        CPU_SET(c, &one);
        break;
      }
    }
    sched_setaffinity(0, sizeof(one), &one);
  }
  ~PinnedToOneCpu() { sched_setaffinity(0, sizeof(saved_), &saved_); }

 private:
  cpu_set_t saved_;
};

TEST(TimerScaleTest, LaterDeadlinesWakeNoTimerThread) {
  PinnedToOneCpu pin;
  // A deadline due at once wakes this shard's thread, which fires it and
  // finds its heap empty.
  auto soon = WithTimeout(Background(), absl::Milliseconds(1));
  ASSERT_TRUE(soon.first.Done().WaitFor(absl::Seconds(20)));
  const absl::Time fired = absl::Now();
  const size_t wakeups = debug::TimerThreadWakeups();
  EXPECT_GT(wakeups, 0u);
  // The next request's deadline, right after the heap emptied, wakes
  // nothing: the thread keeps a wake-up planned for a while.
  auto first = WithTimeout(Background(), absl::Seconds(30));
  if (absl::Now() - fired < absl::Milliseconds(500)) {  // Inside the horizon.
    EXPECT_EQ(debug::TimerThreadWakeups(), wakeups);
  }
  const size_t after_first = debug::TimerThreadWakeups();
  // Later deadlines (the usual stream: same timeout, later start) wake
  // nothing, whether kept or canceled at once, and neither do removals.
  std::vector<std::pair<Context, CancelFunc>> kept;
  for (int i = 0; i < 1000; ++i) {
    kept.push_back(WithTimeout(Background(), absl::Seconds(40)));
    auto [c, cancel] = WithTimeout(Background(), absl::Seconds(40));
  }
  kept.clear();
  first.second();
  for (int i = 0; i < 100; ++i) {
    auto [c, cancel] = WithTimeout(Background(), absl::Seconds(40));
  }
  EXPECT_EQ(debug::TimerThreadWakeups(), after_first);
}

}  // namespace
}  // namespace reqctx
