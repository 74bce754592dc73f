// Orphaned-work detector (context/orphans.h): work still running after its
// Context is done is reported exactly once, with its kind, name and Context;
// work that stops in time, or runs while the detector is off, is not.
#include "context/orphans.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "context/context.h"
#include "gtest/gtest.h"

namespace reqctx {
namespace {

constexpr absl::Duration kThreshold = absl::Milliseconds(40);
constexpr absl::Duration kBound = absl::Seconds(20);

struct Seen {
  std::string kind, name, debug;
  absl::Duration done_for;
};

// Collects reports; tests wait for them with a bound.
class Collector {
 public:
  OrphanDetectorOptions Options() {
    OrphanDetectorOptions o;
    o.threshold = kThreshold;
    o.reporter = [this](const OrphanReport& r) {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back(Seen{std::string(r.kind), std::string(r.name),
                           r.ctx.DebugString(), r.done_for});
      cv_.notify_all();
    };
    return o;
  }
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                        [&] { return seen_.size() >= n; });
  }
  std::vector<Seen> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Seen> seen_;
};

// A latch the test opens to let ignoring work finish.
class Latch {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                        [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

class OrphansTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(EnableOrphanDetector(c_.Options()).ok()); }
  void TearDown() override { DisableOrphanDetector(); }
  Collector c_;
};

TEST_F(OrphansTest, WorkIgnoringItsContextIsReportedExactlyOnce) {
  auto [ctx, cancel] = WithCancel(Background());
  Latch release;
  const int64_t before = debug::OrphanReportCount();
  std::thread worker([&, ctx = ctx] {
    OrphanWatch watch(ctx, "handler", "/echo.Echo/Echo");
    release.Wait();  // Ignores ctx.
  });
  cancel();
  ASSERT_TRUE(c_.WaitFor(1));
  EXPECT_EQ(debug::OrphanedWorkCount("handler"), 1u);
  // Still running for many more scans: still one report.
  absl::SleepFor(5 * kThreshold);
  release.Open();
  worker.join();
  const std::vector<Seen> seen = c_.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, "handler");
  EXPECT_EQ(seen[0].name, "/echo.Echo/Echo");
  EXPECT_GE(seen[0].done_for, kThreshold);
  EXPECT_NE(seen[0].debug.find("WithCancel"), std::string::npos) << seen[0].debug;
  EXPECT_EQ(debug::OrphanReportCount(), before + 1);
}

TEST_F(OrphansTest, WorkThatStopsInTimeAndLiveWorkAreNotReported) {
  auto [done_ctx, cancel] = WithCancel(Background());
  auto [live_ctx, keep] = WithCancel(Background());
  cancel();
  {
    // Ends at once: no scan can have seen it done for the threshold.
    OrphanWatch stops_in_time(done_ctx, "handler", "fast");
  }
  {
    OrphanWatch live(live_ctx, "handler", "live");
    absl::SleepFor(3 * kThreshold);  // Long, but its Context is live.
  }
  EXPECT_TRUE(c_.seen().empty());
}

TEST_F(OrphansTest, GroupTasksAndAfterFuncsAreWatchedByTheCore) {
  Latch release;
  auto [parent, cancel] = WithCancel(Background());
  Group g(parent);
  g.Go([&](const Context&) {
    release.Wait();
    return absl::OkStatus();
  });
  AfterFuncHandle h = AfterFunc(parent, [&] { release.Wait(); });
  cancel();
  ASSERT_TRUE(c_.WaitFor(2));
  release.Open();
  EXPECT_TRUE(g.Wait().ok());
  std::vector<std::string> kinds;
  for (const Seen& s : c_.seen()) kinds.push_back(s.kind);
  std::sort(kinds.begin(), kinds.end());
  EXPECT_EQ(kinds, (std::vector<std::string>{"after_func", "group_task"}));
}

TEST(OrphansOff, NothingIsWatchedWhileDisabledAndBadThresholdIsRefused) {
  DisableOrphanDetector();
  EXPECT_FALSE(OrphanDetectorEnabled());
  const int64_t before = debug::OrphanReportCount();
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  {
    OrphanWatch watch(ctx, "handler", "x");
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(debug::OrphanReportCount(), before);
  OrphanDetectorOptions bad;
  bad.threshold = absl::ZeroDuration();
  EXPECT_EQ(EnableOrphanDetector(bad).code(), absl::StatusCode::kInvalidArgument);
  bad.threshold = absl::InfiniteDuration();
  EXPECT_EQ(EnableOrphanDetector(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(OrphanDetectorEnabled());
}

}  // namespace
}  // namespace reqctx
