// SleepFor (a sleep a context cuts short) and Current/ScopedContext.
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"

namespace reqctx {
namespace {

inline constexpr Key<int> kKey("k");

TEST(SleepForTest, FullSleepReturnsOk) {
  const absl::Time start = absl::Now();
  EXPECT_TRUE(SleepFor(Background(), absl::Milliseconds(20)).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  auto [ctx, cancel] = WithCancel(Background());
  EXPECT_TRUE(SleepFor(ctx, absl::Milliseconds(5)).ok());
}

TEST(SleepForTest, ReturnsErrAsSoonAsDone) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(20));
  const absl::Time start = absl::Now();
  absl::Status s = SleepFor(ctx, absl::Seconds(30));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));  // Not the full 30 s.

  auto [c2, cancel2] = WithCancel(Background());
  std::thread t([cancel2 = cancel2] { cancel2(); });
  EXPECT_EQ(SleepFor(c2, absl::Seconds(30)).code(),
            absl::StatusCode::kCancelled);
  t.join();
}

TEST(SleepForTest, NonPositiveDuration) {
  auto [ctx, cancel] = WithCancel(Background());
  EXPECT_TRUE(SleepFor(ctx, absl::ZeroDuration()).ok());
  EXPECT_TRUE(SleepFor(ctx, -absl::InfiniteDuration()).ok());
  cancel();
  EXPECT_EQ(SleepFor(ctx, absl::ZeroDuration()).code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(SleepFor(ctx, absl::Seconds(30)).code(),
            absl::StatusCode::kCancelled);
}

TEST(CurrentTest, DefaultsToBackgroundAndNestsPerThread) {
  EXPECT_EQ(Current().DebugString(), "context.Background");
  auto [ctx, cancel] = WithCancel(Background());
  {
    ScopedContext outer(ctx);
    EXPECT_EQ(Current().DebugString(), "context.Background.WithCancel");
    {
      ScopedContext inner(WithValue(ctx, kKey, 3));
      ASSERT_NE(Current().Value(kKey), nullptr);
      EXPECT_EQ(*Current().Value(kKey), 3);
      std::thread other([] {
        EXPECT_EQ(Current().Value(kKey), nullptr);  // Thread-local.
        EXPECT_EQ(Current().DebugString(), "context.Background");
      });
      other.join();
    }
    EXPECT_EQ(Current().Value(kKey), nullptr);
    cancel();
    EXPECT_TRUE(Current().Done().IsDone());
  }
  EXPECT_FALSE(Current().Done().CanBeDone());
}

}  // namespace
}  // namespace reqctx
