// Misuse that C++ cannot rule out at compile time gets defined behaviour:
// absurd deadlines and durations, cancel functions called from inside an
// AfterFunc or a value's destructor, contexts that outlive their cancel
// functions, and handles used after everything else is gone.
#include <atomic>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/debug.h"
#include "gtest/gtest.h"

namespace reqctx {
namespace {

constexpr absl::Duration kLongWait = absl::Seconds(10);

TEST(AbsurdDeadlineTest, InfinitePastIsExpiredAtCreation) {
  auto [ctx, cancel] = WithDeadline(Background(), absl::InfinitePast());
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ctx.Deadline(), absl::InfinitePast());
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
  // Its DebugString formats the infinite time without trouble.
  EXPECT_FALSE(ctx.DebugString().empty());
}

TEST(AbsurdDeadlineTest, InfiniteFutureIsNoDeadline) {
  auto [ctx, cancel] = WithDeadline(Background(), absl::InfiniteFuture());
  EXPECT_FALSE(ctx.Deadline().has_value());
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
  EXPECT_FALSE(ctx.Done().WaitFor(absl::Milliseconds(1)));
  EXPECT_FALSE(ctx.Done().WaitUntil(absl::Now() + absl::Milliseconds(1)));
  cancel();
  EXPECT_TRUE(ctx.Done().WaitUntil(absl::InfiniteFuture()));
}

TEST(AbsurdDeadlineTest, HugeAndNegativeDurations) {
  const absl::Duration absurd[] = {
      absl::Hours(24 * 365 * 10000), absl::Seconds(std::numeric_limits<int64_t>::max()),
      absl::InfiniteDuration()};
  for (absl::Duration d : absurd) {
    auto [ctx, cancel] = WithTimeout(Background(), d);
    EXPECT_TRUE(ctx.Err().ok());
    EXPECT_FALSE(ctx.Done().WaitFor(absl::Milliseconds(1)));
    cancel();
    EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);
  }
  const absl::Duration negative[] = {
      -absl::Nanoseconds(1), absl::Seconds(std::numeric_limits<int64_t>::min()),
      -absl::InfiniteDuration()};
  for (absl::Duration d : negative) {
    auto [ctx, cancel] = WithTimeout(Background(), d);
    EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_TRUE(SleepFor(Background(), d).ok());  // Returns at once.
  }
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

TEST(AbsurdDeadlineTest, WaitsWithAbsurdTimeoutsReturnWhenDone) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(5));
  EXPECT_TRUE(ctx.Done().WaitFor(absl::InfiniteDuration()));
  EXPECT_EQ(SleepFor(ctx, absl::InfiniteDuration()).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(ReentrancyTest, CancelFuncCalledFromInsideItsOwnAfterFunc) {
  auto [ctx, cancel] = WithCancel(Background());
  auto [child, cancel_child] = WithCancel(ctx);
  std::mutex mu;
  std::condition_variable cv;
  bool ran = false;
  AfterFuncHandle h = AfterFunc(ctx, [&, cancel = cancel,
                                      cancel_child = cancel_child] {
    cancel();        // Already done: no-op.
    cancel_child();  // Already done via the parent: no-op.
    std::lock_guard<std::mutex> lock(mu);
    ran = true;
    cv.notify_all();
  });
  cancel();
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_TRUE(cv.wait_for(lock, absl::ToChronoNanoseconds(kLongWait),
                          [&] { return ran; }));
}

// A value whose destructor cancels a context: runs when the last handle to
// the value's layer goes, with no lock of the library held.
struct CancelOnDestroy {
  CancelFunc cancel;
  std::atomic<int>* destroyed;
  CancelOnDestroy(CancelFunc c, std::atomic<int>* d)
      : cancel(std::move(c)), destroyed(d) {}
  CancelOnDestroy(CancelOnDestroy&& o) noexcept
      : cancel(std::move(o.cancel)), destroyed(std::exchange(o.destroyed, nullptr)) {}
  ~CancelOnDestroy() {
    if (destroyed == nullptr) return;
    destroyed->fetch_add(1);  // Before cancel(): a waiter on it may return.
    cancel();
  }
};
inline constexpr Key<CancelOnDestroy> kGuardKey("guard");
inline constexpr Key<int> kIntKey("int");

TEST(ReentrancyTest, CancelFuncCalledFromAValueDestructor) {
  auto [parent, cancel_parent] = WithCancel(Background());
  std::atomic<int> destroyed{0};
  {
    // The value lives in a child of `parent` and cancels `parent` itself
    // when it is destroyed.
    Context v = WithValue(parent, kGuardKey,
                          CancelOnDestroy(cancel_parent, &destroyed));
    auto [leaf, cancel_leaf] = WithCancel(v);
    cancel_leaf();
  }
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_TRUE(parent.Done().IsDone());  // Canceled from the destructor.
  EXPECT_EQ(debug::ListenerCount(parent), 0u);
}

TEST(ReentrancyTest, ValueDestructorRunsOnTheTimerThreadSafely) {
  // The only handle to a timed context is dropped while its timer is armed;
  // its value cancels another context when freed.
  auto [other, cancel_other] = WithCancel(Background());
  std::atomic<int> destroyed{0};
  {
    Context v = WithValue(Background(), kGuardKey,
                          CancelOnDestroy(cancel_other, &destroyed));
    auto [timed, cancel_timed] = WithTimeout(v, absl::Milliseconds(1));
    ASSERT_TRUE(timed.Done().WaitFor(kLongWait));
  }
  // The last reference may be the timer thread's, so the destructor may run
  // there, after the wait above: await its effect.
  EXPECT_TRUE(other.Done().WaitFor(kLongWait));
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(LifetimeTest, ContextOutlivingEveryCancelFuncIsCanceledAndUsable) {
  Context survivor;
  DoneSignal done;
  {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Hours(1));
    survivor = WithValue(ctx, kIntKey, 1);
    done = ctx.Done();
  }
  EXPECT_EQ(survivor.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(done.IsDone());
  EXPECT_TRUE(survivor.Deadline().has_value());
  auto [child, cancel_child] = WithCancel(survivor);
  EXPECT_TRUE(child.Done().IsDone());
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

TEST(LifetimeTest, DoneSignalOutlivesItsContext) {
  DoneSignal done;
  {
    auto [ctx, cancel] = WithCancel(Background());
    done = ctx.Done();
    cancel();
  }
  EXPECT_TRUE(done.IsDone());
  EXPECT_TRUE(done.WaitFor(absl::Seconds(1)));
}

TEST(LifetimeTest, AfterFuncHandleOutlivesItsContext) {
  AfterFuncHandle h;
  std::atomic<bool> ran{false};
  {
    auto [ctx, cancel] = WithCancel(Background());
    h = AfterFunc(ctx, [&] { ran = true; });
  }  // Canceled by the dropped CancelFunc: f is scheduled.
  h = AfterFuncHandle();  // Waits for f.
  EXPECT_TRUE(ran.load());
}

TEST(LifetimeTest, LongChainIsFreedWithoutRecursion) {
  // Releasing the last handle to a very deep chain must not overflow the
  // stack (nodes are freed iteratively).
  Context c = Background();
  for (int i = 0; i < 200'000; ++i) c = WithValue(c, kIntKey, i);
  c = Context();
  SUCCEED();
}

}  // namespace
}  // namespace reqctx
