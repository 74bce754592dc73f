#include "drain/shutdown_signal.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace reqctx::drain {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(ShutdownSignalTest, CancelsFromTheSignalledTimeLessTheSlack) {
  ShutdownSignal s;
  EXPECT_FALSE(s.Canceling(kT0));  // Nothing signalled: a client's cancel.
  s.CancelsAt(kT0 + absl::Seconds(5));
  // During the grace: still a client's cancel.
  EXPECT_FALSE(s.Canceling(kT0));
  EXPECT_FALSE(s.Canceling(kT0 + absl::Seconds(5) - kShutdownSlack -
                           absl::Nanoseconds(1)));
  EXPECT_TRUE(s.Canceling(kT0 + absl::Seconds(5) - kShutdownSlack));
  EXPECT_TRUE(s.Canceling(kT0 + absl::Seconds(6)));
}

TEST(ShutdownSignalTest, TheEarliestTimeStays) {
  ShutdownSignal s;
  s.CancelsAt(kT0 + absl::Seconds(5));
  s.CancelsAt(kT0 + absl::Seconds(1));   // CallTracker::CancelAll, say.
  s.CancelsAt(kT0 + absl::Seconds(30));  // A later shutdown changes nothing.
  EXPECT_TRUE(s.Canceling(kT0 + absl::Seconds(1)));
  EXPECT_FALSE(s.Canceling(kT0));
}

}  // namespace
}  // namespace reqctx::drain
