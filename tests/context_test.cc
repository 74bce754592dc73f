// Core semantics of reqctx::Context, point by point against Go 1.21's
// context package: cancellation, deadlines, causes, values, WithoutCancel,
// CancelFunc lifetime, DoneSignal and DebugString.
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/debug.h"
#include "gtest/gtest.h"

namespace reqctx {
namespace {

constexpr absl::Duration kLongWait = absl::Seconds(10);  // Bounds every wait.

inline constexpr Key<int> kIntKey("int");
inline constexpr Key<std::string> kNameKey("name");
inline constexpr Key<std::string> kOtherNameKey("name");  // Same debug name.

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Err() during static initialization and destruction: a program's own
// statics (a server-lifetime context, a logger flushing at exit) may read it
// before main and after main returns (timer threads fire deadlines through
// exit). The statuses Err() returns are built before any such initializer
// and never destroyed.
bool ErrMatchesGo(const Context& live, const Context& canceled) {
  return live.Err().ok() && canceled.Err().code() == absl::StatusCode::kCancelled &&
         canceled.Err().message() == "context canceled";
}
struct ReadsErrInStaticInitAndExit {
  ReadsErrInStaticInitAndExit() {
    auto [live, keep] = WithCancel(Background());
    auto [canceled, cancel] = WithCancel(Background());
    cancel();
    ok_at_init = ErrMatchesGo(live, canceled);
  }
  ~ReadsErrInStaticInitAndExit() {
    auto [live, keep] = WithCancel(Background());
    auto [canceled, cancel] = WithCancel(Background());
    cancel();
    if (!ErrMatchesGo(live, canceled)) std::abort();  // Fails the test binary.
  }
  bool ok_at_init = false;
};
ReadsErrInStaticInitAndExit g_reads_err;

TEST(ErrTest, ValidDuringStaticInitializationAndDestruction) {
  EXPECT_TRUE(g_reads_err.ok_at_init);
}

TEST(BackgroundTest, IsNeverDone) {
  for (const Context& ctx : {Background(), TODO(), Context()}) {
    EXPECT_TRUE(ctx.Err().ok());
    EXPECT_FALSE(ctx.Deadline().has_value());
    EXPECT_FALSE(ctx.Done().IsDone());
    EXPECT_FALSE(ctx.Done().CanBeDone());
    EXPECT_TRUE(Cause(ctx).ok());
    EXPECT_EQ(ctx.Value(kIntKey), nullptr);
  }
  EXPECT_EQ(Background().DebugString(), "context.Background");
  EXPECT_EQ(Context().DebugString(), "context.Background");
  EXPECT_EQ(TODO().DebugString(), "context.TODO");
}

TEST(WithCancelTest, CancelMakesDoneWithCanceledError) {
  auto [ctx, cancel] = WithCancel(Background());
  EXPECT_TRUE(ctx.Done().CanBeDone());
  EXPECT_FALSE(ctx.Done().IsDone());
  EXPECT_TRUE(ctx.Err().ok());
  cancel();
  EXPECT_TRUE(ctx.Done().IsDone());
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(ctx.Err().message(), "context canceled");
  EXPECT_EQ(Cause(ctx), ctx.Err());
}

TEST(WithCancelTest, CancelIsIdempotentAndErrNeverChanges) {
  auto [ctx, cancel] = WithCancelCause(Background());
  cancel(absl::AbortedError("first"));
  cancel(absl::InternalError("second"));
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Cause(ctx), absl::AbortedError("first"));
}

TEST(WithCancelTest, PropagatesSynchronouslyToAllDescendants) {
  auto [root, cancel] = WithCancel(Background());
  auto [a, cancel_a] = WithCancel(root);
  Context a_value = WithValue(a, kIntKey, 1);
  auto [b, cancel_b] = WithTimeout(a_value, absl::Hours(1));
  auto [c, cancel_c] = WithCancel(WithValue(b, kIntKey, 2));
  DoneSignal c_done = c.Done();  // Taken before the cancel.
  cancel();
  // No waiting: when cancel() returns, every descendant is done.
  for (const Context& ctx : {root, a, a_value, b, c}) {
    EXPECT_TRUE(ctx.Done().IsDone()) << ctx.DebugString();
    EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);
  }
  EXPECT_TRUE(c_done.IsDone());
  EXPECT_EQ(debug::PendingTimerCount(), 0u);  // b's timer went with it.
}

TEST(WithCancelTest, CancelingChildLeavesParentAndSiblings) {
  auto [parent, cancel_parent] = WithCancel(Background());
  auto [child, cancel_child] = WithCancel(parent);
  auto [sibling, cancel_sibling] = WithCancel(parent);
  auto [grandchild, cancel_grandchild] = WithCancel(child);
  EXPECT_EQ(debug::ListenerCount(parent), 2u);
  cancel_child();
  EXPECT_TRUE(child.Done().IsDone());
  EXPECT_TRUE(grandchild.Done().IsDone());
  EXPECT_FALSE(parent.Done().IsDone());
  EXPECT_FALSE(sibling.Done().IsDone());
  EXPECT_EQ(debug::ListenerCount(parent), 1u);  // Removed at once.
}

TEST(WithCancelTest, ChildOfDoneParentIsDoneAtCreation) {
  auto [parent, cancel] = WithCancelCause(Background());
  cancel(absl::UnavailableError("backend gone"));
  auto [child, cancel_child] = WithCancel(parent);
  EXPECT_TRUE(child.Done().IsDone());
  EXPECT_EQ(child.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Cause(child), absl::UnavailableError("backend gone"));
  EXPECT_EQ(debug::ListenerCount(parent), 0u);
  auto [timed, cancel_timed] = WithTimeout(parent, absl::Hours(1));
  EXPECT_EQ(timed.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

TEST(WithCancelTest, DroppingLastCancelFuncCancels) {
  Context parent = Background();
  Context ctx = WithCancel(parent).first;  // CancelFunc dropped at once.
  EXPECT_TRUE(ctx.Done().IsDone());
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);

  auto [kept, cancel] = WithCancel(parent);
  {
    CancelFunc copy = cancel;
    CancelFunc moved = std::move(copy);
    CancelFunc assigned;
    assigned = moved;
  }
  EXPECT_FALSE(kept.Done().IsDone());  // `cancel` still alive.
  {
    CancelFunc last = std::move(cancel);
  }
  EXPECT_TRUE(kept.Done().IsDone());

  Context with_cause;
  {
    auto [c, cancel_cause] = WithCancelCause(parent);
    with_cause = c;
    CancelCauseFunc copy = cancel_cause;
  }
  EXPECT_TRUE(with_cause.Done().IsDone());
  EXPECT_EQ(Cause(with_cause).code(), absl::StatusCode::kCancelled);
}

TEST(WithCancelTest, DroppedCancelFuncUnlinksFromParent) {
  auto [parent, cancel] = WithCancel(Background());
  {
    auto [child, cancel_child] = WithCancel(parent);
    EXPECT_EQ(debug::ListenerCount(parent), 1u);
  }
  EXPECT_EQ(debug::ListenerCount(parent), 0u);
}

TEST(WithCancelTest, DefaultCancelFuncsAreNoOps) {
  CancelFunc cancel;
  cancel();
  CancelCauseFunc cancel_cause;
  cancel_cause(absl::InternalError("x"));
}

TEST(CauseTest, OkCauseMeansNoCause) {
  auto [ctx, cancel] = WithCancelCause(Background());
  EXPECT_TRUE(Cause(ctx).ok());  // Live.
  cancel(absl::OkStatus());
  EXPECT_EQ(Cause(ctx), ctx.Err());
  EXPECT_EQ(Cause(ctx).code(), absl::StatusCode::kCancelled);
}

TEST(CauseTest, ChildInheritsParentCauseThroughValues) {
  auto [parent, cancel] = WithCancelCause(Background());
  Context v = WithValue(parent, kIntKey, 7);
  auto [child, cancel_child] = WithCancel(v);
  cancel(absl::PermissionDeniedError("revoked"));
  EXPECT_EQ(Cause(v), absl::PermissionDeniedError("revoked"));
  EXPECT_EQ(Cause(child), absl::PermissionDeniedError("revoked"));
  EXPECT_EQ(child.Err().code(), absl::StatusCode::kCancelled);
}

TEST(CauseTest, ChildCanceledFirstKeepsItsOwnCause) {
  auto [parent, cancel] = WithCancelCause(Background());
  auto [child, cancel_child] = WithCancelCause(parent);
  cancel_child(absl::AbortedError("child"));
  cancel(absl::InternalError("parent"));
  EXPECT_EQ(Cause(child), absl::AbortedError("child"));
  EXPECT_EQ(Cause(parent), absl::InternalError("parent"));
}

TEST(CauseTest, DeadlineCause) {
  auto [ctx, cancel] = WithTimeoutCause(Background(), absl::Milliseconds(5),
                                        absl::ResourceExhaustedError("slow"));
  ASSERT_TRUE(ctx.Done().WaitFor(kLongWait));
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ctx.Err().message(), "context deadline exceeded");
  EXPECT_EQ(Cause(ctx), absl::ResourceExhaustedError("slow"));

  // Canceled before the deadline: no cause beyond Err().
  auto [early, cancel_early] = WithDeadlineCause(
      Background(), absl::Now() + absl::Hours(1), absl::AbortedError("late"));
  cancel_early();
  EXPECT_EQ(early.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Cause(early), early.Err());

  // Already expired: done at creation, with the cause.
  auto [past, cancel_past] = WithDeadlineCause(
      Background(), absl::Now() - absl::Seconds(1), absl::AbortedError("past"));
  EXPECT_EQ(past.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Cause(past), absl::AbortedError("past"));

  // OK cause: Cause == Err.
  auto [ok_cause, cancel_ok] =
      WithTimeoutCause(Background(), absl::ZeroDuration(), absl::OkStatus());
  EXPECT_EQ(Cause(ok_cause), ok_cause.Err());
}

TEST(DeadlineTest, FiresAndNotEarly) {
  const absl::Time start = absl::Now();
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(30));
  ASSERT_TRUE(ctx.Deadline().has_value());
  const absl::Time deadline = *ctx.Deadline();
  EXPECT_GE(deadline, start + absl::Milliseconds(30));
  ASSERT_TRUE(ctx.Done().WaitFor(kLongWait));
  EXPECT_GE(absl::Now(), deadline);  // Never early.
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Cause(ctx), ctx.Err());
}

TEST(DeadlineTest, ReportsTimePassedInAndTheEarlierOfParentAndChild) {
  const absl::Time t = absl::Now() + absl::Hours(2);
  auto [ctx, cancel] = WithDeadline(Background(), t);
  EXPECT_EQ(ctx.Deadline(), t);

  auto [later, cancel_later] = WithDeadline(ctx, t + absl::Hours(1));
  EXPECT_EQ(later.Deadline(), t);
  EXPECT_TRUE(StartsWith(later.DebugString(),
                         "context.Background.WithDeadline("));
  EXPECT_TRUE(absl::EndsWith(later.DebugString(), "]).WithCancel"));

  auto [earlier, cancel_earlier] = WithDeadline(ctx, t - absl::Hours(1));
  EXPECT_EQ(earlier.Deadline(), t - absl::Hours(1));
  EXPECT_EQ(WithValue(earlier, kIntKey, 1).Deadline(), t - absl::Hours(1));
  auto [plain_child, cancel_plain] = WithCancel(earlier);
  EXPECT_EQ(plain_child.Deadline(), t - absl::Hours(1));
  EXPECT_FALSE(WithoutCancel(earlier).Deadline().has_value());
}

TEST(DeadlineTest, ZeroOrNegativeTimeoutIsDoneAtCreation) {
  for (absl::Duration t : {absl::ZeroDuration(), absl::Milliseconds(-5),
                           -absl::InfiniteDuration()}) {
    auto [ctx, cancel] = WithTimeout(Background(), t);
    EXPECT_TRUE(ctx.Done().IsDone());
    EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
  }
  auto [past, cancel] = WithDeadline(Background(), absl::InfinitePast());
  EXPECT_EQ(past.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
}

TEST(DeadlineTest, InfiniteFutureMeansNoDeadlineOfItsOwn) {
  auto [ctx, cancel] = WithDeadline(Background(), absl::InfiniteFuture());
  EXPECT_FALSE(ctx.Deadline().has_value());
  EXPECT_TRUE(ctx.Done().CanBeDone());
  auto [huge, cancel_huge] = WithTimeout(Background(), absl::InfiniteDuration());
  EXPECT_FALSE(huge.Deadline().has_value());
  EXPECT_EQ(debug::PendingTimerCount(), 0u);
  cancel_huge();
  EXPECT_EQ(huge.Err().code(), absl::StatusCode::kCancelled);
}

TEST(DeadlineTest, ChildOfExpiredParentReportsDeadlineExceeded) {
  auto [parent, cancel] = WithTimeout(Background(), absl::Milliseconds(1));
  ASSERT_TRUE(parent.Done().WaitFor(kLongWait));
  auto [child, cancel_child] = WithCancel(parent);
  EXPECT_EQ(child.Err().code(), absl::StatusCode::kDeadlineExceeded);
  auto [grandchild, cancel_gc] = WithTimeout(child, absl::Hours(1));
  EXPECT_EQ(grandchild.Err().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(DeadlineTest, ParentDeadlineReachesExistingChildren) {
  auto [parent, cancel] = WithTimeout(Background(), absl::Milliseconds(20));
  auto [child, cancel_child] = WithCancel(parent);
  auto [timed, cancel_timed] = WithTimeout(child, absl::Hours(1));
  ASSERT_TRUE(timed.Done().WaitFor(kLongWait));
  EXPECT_EQ(child.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(timed.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Cause(timed), timed.Err());
}

TEST(ValueTest, NearestAncestorWinsAndKeysAreIdentities) {
  Context a = WithValue(Background(), kNameKey, std::string("outer"));
  Context b = WithValue(a, kIntKey, 42);
  Context c = WithValue(b, kNameKey, std::string("inner"));
  Context d = WithValue(c, kOtherNameKey, std::string("other"));
  ASSERT_NE(d.Value(kNameKey), nullptr);
  EXPECT_EQ(*d.Value(kNameKey), "inner");
  EXPECT_EQ(*d.Value(kOtherNameKey), "other");
  EXPECT_EQ(*b.Value(kNameKey), "outer");
  EXPECT_EQ(b.Value(kOtherNameKey), nullptr);
  EXPECT_EQ(*d.Value(kIntKey), 42);
  EXPECT_EQ(a.Value(kIntKey), nullptr);
}

TEST(ValueTest, ValuesSurviveCancellationAndWithoutCancel) {
  auto [ctx, cancel] = WithCancel(WithValue(Background(), kIntKey, 5));
  Context v = WithValue(ctx, kNameKey, std::string("x"));
  cancel();
  EXPECT_EQ(*v.Value(kIntKey), 5);
  EXPECT_EQ(*v.Value(kNameKey), "x");
  Context detached = WithoutCancel(v);
  EXPECT_EQ(*detached.Value(kIntKey), 5);
  EXPECT_EQ(*detached.Value(kNameKey), "x");
}

TEST(ValueTest, ValueOutlivesTheHandleThatMadeIt) {
  const std::string* p = nullptr;
  Context keep;
  {
    Context v = WithValue(Background(), kNameKey, std::string(1000, 'z'));
    keep = WithCancel(v).first;
    p = keep.Value(kNameKey);
  }
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->size(), 1000u);  // ASan would flag a dangling value.
}

TEST(WithoutCancelTest, NeverDoneNoDeadlineKeepsValues) {
  auto [parent, cancel] = WithTimeout(WithValue(Background(), kIntKey, 9),
                                      absl::Hours(1));
  Context detached = WithoutCancel(parent);
  cancel();
  EXPECT_TRUE(parent.Done().IsDone());
  EXPECT_FALSE(detached.Done().IsDone());
  EXPECT_FALSE(detached.Done().CanBeDone());
  EXPECT_TRUE(detached.Err().ok());
  EXPECT_TRUE(Cause(detached).ok());
  EXPECT_FALSE(detached.Deadline().has_value());
  EXPECT_EQ(*detached.Value(kIntKey), 9);
  // A cancelable child of it is live, and cancelable on its own.
  auto [child, cancel_child] = WithCancel(detached);
  EXPECT_FALSE(child.Done().IsDone());
  EXPECT_EQ(debug::ListenerCount(detached), 0u);  // No child list.
  cancel_child();
  EXPECT_TRUE(child.Done().IsDone());
  EXPECT_FALSE(WithValue(detached, kIntKey, 1).Done().CanBeDone());
}

TEST(DoneSignalTest, SignalTakenBeforeCancelObservesIt) {
  DoneSignal done;
  {
    auto [ctx, cancel] = WithCancel(Background());
    done = ctx.Done();
    EXPECT_FALSE(done.IsDone());
  }  // Context and CancelFunc gone: canceled; the signal keeps the state.
  EXPECT_TRUE(done.IsDone());
  EXPECT_TRUE(done.WaitFor(absl::ZeroDuration()));
  done.Wait();  // Returns at once.
}

TEST(DoneSignalTest, WaitWakesOnCancelFromAnotherThread) {
  auto [ctx, cancel] = WithCancel(Background());
  std::thread canceler([cancel = cancel] { cancel(); });
  EXPECT_TRUE(ctx.Done().WaitFor(kLongWait));
  canceler.join();
}

TEST(DoneSignalTest, NonPositiveTimeoutNeverBlocks) {
  auto [ctx, cancel] = WithCancel(Background());
  const absl::Time start = absl::Now();
  EXPECT_FALSE(ctx.Done().WaitFor(absl::ZeroDuration()));
  EXPECT_FALSE(ctx.Done().WaitFor(-absl::InfiniteDuration()));
  EXPECT_FALSE(ctx.Done().WaitUntil(absl::InfinitePast()));
  EXPECT_FALSE(Background().Done().WaitFor(absl::Seconds(-1)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(debug::ListenerCount(ctx), 0u);
}

TEST(DoneSignalTest, TimedWaitTimesOutWithoutLeavingAWaiter) {
  auto [ctx, cancel] = WithCancel(Background());
  const absl::Time start = absl::Now();
  EXPECT_FALSE(ctx.Done().WaitFor(absl::Milliseconds(20)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  EXPECT_EQ(debug::ListenerCount(ctx), 0u);
}

TEST(DoneSignalTest, NeverDoneContextBlocksForTheWholeTimeout) {
  const absl::Time start = absl::Now();
  EXPECT_FALSE(Background().Done().WaitFor(absl::Milliseconds(20)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  const absl::Time until = absl::Now() + absl::Milliseconds(10);
  EXPECT_FALSE(WithoutCancel(TODO()).Done().WaitUntil(until));
  EXPECT_GE(absl::Now(), until);
}

TEST(DebugStringTest, NamesEachLayer) {
  auto [c, cancel] = WithCancel(TODO());
  Context v = WithValue(c, kNameKey, std::string("secret-token"));
  Context w = WithoutCancel(v);
  auto [d, cancel_d] = WithTimeout(w, absl::Hours(1));
  const std::string s = d.DebugString();
  EXPECT_TRUE(StartsWith(
      s, "context.TODO.WithCancel.WithValue(name).WithoutCancel.WithDeadline("))
      << s;
  EXPECT_TRUE(absl::EndsWith(s, "])")) << s;
  EXPECT_TRUE(absl::StrContains(s, " [")) << s;
  EXPECT_FALSE(absl::StrContains(s, "secret-token")) << s;
  EXPECT_EQ(WithCancelCause(Background()).first.DebugString(),
            "context.Background.WithCancel");
}

}  // namespace
}  // namespace reqctx
