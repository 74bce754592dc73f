// CallTracker: CancelAll ends every tracked Context with the shutdown cause
// (and calls tracked later at once), a Call untracks itself, WaitIdle.
#include "drain/call_tracker.h"

#include <optional>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "ledger/causes.h"

namespace reqctx::drain {
namespace {

TEST(CallTrackerTest, CancelAllEndsTrackedCallsWithTheCause) {
  CallTracker tracker;
  auto [parent, cancel_parent] = WithCancel(Background());
  std::optional<CallTracker::Call> a(tracker.Track(parent));
  std::optional<CallTracker::Call> b(tracker.Track(Background()));
  EXPECT_EQ(tracker.in_flight(), 2u);
  EXPECT_FALSE(a->context().IsDone());
  EXPECT_EQ(tracker.CancelAll(), 2u);
  EXPECT_TRUE(a->context().IsDone());
  EXPECT_TRUE(b->context().IsDone());
  EXPECT_TRUE(IsShuttingDown(Cause(a->context())));
  // A documented cause users can switch on, not only a message.
  EXPECT_EQ(CauseOf(Cause(a->context())), CauseKind::kServerShutdown);
  EXPECT_EQ(CauseDescription(Cause(a->context())),
            "canceled: server shutting down");
  EXPECT_EQ(a->context().Err().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(parent.IsDone()) << "the call's own Context is not canceled";
  EXPECT_EQ(tracker.CancelAll(), 0u);
  // A call arriving after the cancel ends at once, with the cause.
  CallTracker::Call late = tracker.Track(Background());
  EXPECT_TRUE(late.context().IsDone());
  EXPECT_TRUE(IsShuttingDown(Cause(late.context())));
  a.reset();
  b.reset();
  EXPECT_EQ(tracker.in_flight(), 0u);
}

TEST(CallTrackerTest, ACallEndingUntracksItAndEndsItsContext) {
  CallTracker tracker;
  Context ctx;
  {
    CallTracker::Call call = tracker.Track(Background());
    ctx = call.context();
    CallTracker::Call moved(std::move(call));
    EXPECT_EQ(tracker.in_flight(), 1u);
    EXPECT_FALSE(ctx.IsDone());
  }
  EXPECT_EQ(tracker.in_flight(), 0u);
  EXPECT_TRUE(ctx.IsDone());
  EXPECT_FALSE(IsShuttingDown(Cause(ctx)));
}

TEST(CallTrackerTest, WaitIdleWaitsForTheLastCall) {
  CallTracker tracker;
  EXPECT_TRUE(tracker.WaitIdle(absl::Now()));
  std::optional<CallTracker::Call> call(tracker.Track(Background()));
  EXPECT_FALSE(tracker.WaitIdle(absl::Now() + absl::Milliseconds(1)));
  std::thread ender([&] { call.reset(); });
  EXPECT_TRUE(tracker.WaitIdle(absl::Now() + absl::Seconds(60)));
  ender.join();
}

TEST(CallTrackerTest, ShutdownStatusOrAnswersUnavailableOnlyForTheShutdown) {
  CallTracker tracker;
  CallTracker::Call call = tracker.Track(Background());
  const absl::Status failed = absl::CancelledError("context canceled");
  EXPECT_EQ(ShutdownStatusOr(call.context(), failed), failed);
  tracker.CancelAll();
  EXPECT_TRUE(IsShuttingDown(ShutdownStatusOr(call.context(), failed)));
  EXPECT_TRUE(ShutdownStatusOr(call.context(), absl::OkStatus()).ok());
  EXPECT_FALSE(IsShuttingDown(absl::UnavailableError("other")));
}

}  // namespace
}  // namespace reqctx::drain
