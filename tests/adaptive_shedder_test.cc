// LoadShedder with an adaptive limit and the issue-23 admission rules --
// criticality shares, queue-delay (CoDel) admission, dark mode, the kill
// switch, the refusal cap -- on a fake clock: every decision here is made
// inside Acquire, Release or SetMode, on this thread, so the tests need no
// sleeps and no waits.
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <memory>
#include <optional>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/policy/deadline_policy.h"
#include "interceptors/policy/load_shedder.h"
#include "interceptors/policy/policy_counters.h"
#include "interceptors/policy/refusal_cap.h"

namespace reqctx::policy {
namespace {

// Decisions by call number, made on this thread.
class Calls {
 public:
  // Slots still held are given back here; what they admit from the queue
  // is decided into a map that is still alive, round after round.
  ~Calls() {
    while (!decided_.empty()) {
      std::map<int, ShedDecision> round = std::move(decided_);
      decided_.clear();
      round.clear();
    }
  }
  std::function<void(ShedDecision)> Slot(int i) {
    return [this, i](ShedDecision d) { decided_[i] = std::move(d); };
  }
  bool Decided(int i) const { return decided_.count(i) > 0; }
  ShedDecision& operator[](int i) { return decided_.at(i); }
  bool Admitted(int i) const {
    return Decided(i) && decided_.at(i).status.ok();
  }

 private:
  std::map<int, ShedDecision> decided_;
};

struct FakeClock {
  absl::Time t = absl::Now();
  std::function<absl::Time()> Fn() {
    return [this] { return t; };
  }
};

LoadShedderOptions Fixed(int limit, int queue, FakeClock& clock) {
  LoadShedderOptions o;
  o.max_concurrency = limit;
  o.max_queue = queue;
  o.lifo_after = absl::Hours(1);
  o.now = clock.Fn();
  return o;
}

TEST(AdaptiveShedderTest, AdaptiveLimitLearnsFromReleasedSlots) {
  FakeClock clock;
  LoadShedderOptions o = Fixed(1, 0, clock);
  o.limit.algorithm = limits::Algorithm::kAimd;
  o.limit.aimd.bounds = {/*initial=*/4, /*min=*/1, /*max=*/100,
                         /*warmup_samples=*/0};
  o.limit.window.min_time = absl::Milliseconds(10);
  o.limit.window.min_samples = 1;
  o.limit.aimd.timeout = absl::Milliseconds(50);
  // AIMD's own rule (its slowdown check: limits_test's SlowdownCheck).
  o.limit.aimd.slowdown.cut = 0;
  ASSERT_TRUE(ValidateLoadShedderOptions(o, "shedder").ok());
  LoadShedder s(o, nullptr);
  EXPECT_EQ(s.limit(), 4);
  Calls calls;
  // Saturated, fast calls: +1 per window.
  for (int i = 0; i < 20; ++i) {
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              calls.Slot(i));
    ASSERT_TRUE(calls.Admitted(i)) << i;
    clock.t += absl::Milliseconds(11);
    if (s.running() >= s.limit() - 1) {
      // Keep the limit busy (inflight x 2 >= limit) while releasing one.
      calls[i].slot.Release(limits::Outcome::kSuccess);
    }
  }
  const int grown = s.limit();
  EXPECT_GT(grown, 4);
  // One call of `ms` ended with `outcome`; a window closes at every second
  // call (10 ms).
  int next = 200;
  auto call = [&](int ms, limits::Outcome outcome) {
    const int i = next++;
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              calls.Slot(i));
    ASSERT_TRUE(calls.Admitted(i));
    clock.t += absl::Milliseconds(ms);
    calls[i].slot.Release(outcome);
  };
  // A call that ran into its deadline in a window that shows no queue
  // (mean 15.5 ms, under halfway from the fastest 11 ms to the 50 ms
  // timeout): its own spread past its budget, no loss.
  call(20, limits::Outcome::kDropped);
  call(11, limits::Outcome::kSuccess);
  EXPECT_GE(s.limit(), grown);
  const int held = s.limit();
  // Two windows in a row that show a queue (40 ms), the second with a
  // drop: multiplicative decrease.
  call(40, limits::Outcome::kSuccess);
  call(40, limits::Outcome::kSuccess);
  EXPECT_GE(s.limit(), held);
  call(40, limits::Outcome::kDropped);
  call(40, limits::Outcome::kSuccess);
  EXPECT_LT(s.limit(), held);
  // A canceled call is no sample.
  const int before = s.limit();
  const int64_t samples = s.Stats().inputs.samples;
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
            calls.Slot(101));
  clock.t += absl::Seconds(1);
  calls[101].slot.Release(limits::Outcome::kIgnore);
  EXPECT_EQ(s.limit(), before);
  EXPECT_EQ(s.Stats().inputs.samples, samples);
  EXPECT_EQ(s.Stats().algorithm, "aimd");
}

// How far AIMD grows in 40 saturated windows of 11 ms calls, each call
// admitted with `budget` left by its deadline (InfiniteDuration: none); its
// last queue share in `share`.
int AimdGrowth(absl::Duration budget, double* share) {
  FakeClock clock;
  // The fake clock runs an hour ahead: the deadlines' real timers never
  // fire during the test.
  clock.t = absl::Now() + absl::Hours(1);
  LoadShedderOptions o = Fixed(1, 0, clock);
  o.limit.algorithm = limits::Algorithm::kAimd;
  o.limit.aimd.bounds = {/*initial=*/4, /*min=*/1, /*max=*/100,
                         /*warmup_samples=*/0};
  o.limit.window.min_time = absl::Milliseconds(10);
  o.limit.window.min_samples = 1;
  LoadShedder s(o, nullptr);
  Calls calls;
  std::vector<CancelFunc> cancels;
  for (int i = 0; i < 40; ++i) {
    Context ctx = Background();
    if (budget != absl::InfiniteDuration()) {
      auto [c, cancel] = WithDeadline(Background(), clock.t + budget);
      ctx = c;
      cancels.push_back(std::move(cancel));
    }
    s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(1),
              calls.Slot(i));
    EXPECT_TRUE(calls.Admitted(i)) << i;
    if (!calls.Admitted(i)) break;
    clock.t += absl::Milliseconds(11);
    if (s.running() >= s.limit() - 1) {
      calls[i].slot.Release(limits::Outcome::kSuccess);
    }
  }
  *share = s.Stats().inputs.queue_share;
  for (CancelFunc& c : cancels) c();
  return s.limit() - 4;
}

// The shedder passes each call's budget at admission to its limit
// (limits::Sample::budget): calls whose deadlines leave them a quarter of
// their 11 ms handling time to wait grow AIMD by a quarter of a call per
// window instead of one (limits::QueueShare).
TEST(AdaptiveShedderTest, TightDeadlinesShrinkTheLimitsProbing) {
  double share = 0;
  const int loose = AimdGrowth(absl::InfiniteDuration(), &share);
  EXPECT_EQ(share, 1);
  EXPECT_GE(loose, 8);
  const int tight = AimdGrowth(absl::Microseconds(13750), &share);
  std::printf("AIMD grew by %d without deadlines, by %d with tight ones\n",
              loose, tight);
  EXPECT_NEAR(share, 0.25, 0.01);
  EXPECT_GE(tight, 1);
  EXPECT_LE(tight, loose / 3);
  // A deadline far away is no pressure.
  EXPECT_EQ(AimdGrowth(absl::Hours(1), &share), loose);
  EXPECT_EQ(share, 1);
}

TEST(AdaptiveShedderTest, ClassifyEndDropsOnlyCallsThatHadRoomToFinish) {
  const absl::Time t = absl::UnixEpoch();
  const absl::Duration ms = absl::Milliseconds(1);
  // Ran into a deadline that left room for the expected 50 ms: a drop.
  EXPECT_EQ(ClassifyEnd(t, t + 200 * ms, t + 200 * ms, 50 * ms, false),
            limits::Outcome::kDropped);
  // Its budget at admission (20 ms) was below the expected handling: its
  // own deadline ended it -- no sample.
  EXPECT_EQ(ClassifyEnd(t, t + 20 * ms, t + 20 * ms, 50 * ms, false),
            limits::Outcome::kIgnore);
  EXPECT_EQ(ClassifyEnd(t, t + 30 * ms, t + 20 * ms, 50 * ms, true),
            limits::Outcome::kIgnore);
  // Canceled by its client before its deadline: no sample.
  EXPECT_EQ(ClassifyEnd(t, t + 10 * ms, t + 200 * ms, 50 * ms, true),
            limits::Outcome::kIgnore);
  EXPECT_EQ(ClassifyEnd(t, t + 10 * ms, std::nullopt, 50 * ms, true),
            limits::Outcome::kIgnore);
  // Done in time, or without a deadline: a success.
  EXPECT_EQ(ClassifyEnd(t, t + 10 * ms, t + 200 * ms, 50 * ms, false),
            limits::Outcome::kSuccess);
  EXPECT_EQ(ClassifyEnd(t, t + 10 * ms, std::nullopt, 50 * ms, false),
            limits::Outcome::kSuccess);
}

TEST(AdaptiveShedderTest, SharesKeepASlotForCriticalCalls) {
  FakeClock clock;
  LoadShedderOptions o = Fixed(4, 8, clock);
  o.shares = {0, 0, 0.5};  // critical: 2 of 4 guaranteed
  LoadShedder s(o, nullptr);
  Calls calls;
  for (int i = 0; i < 4; ++i) {
    s.Acquire(Background(), Criticality::kSheddable, absl::Milliseconds(1),
              calls.Slot(i));
    ASSERT_TRUE(calls.Admitted(i));
  }
  // The limit is reached by sheddable calls: another sheddable one queues,
  // a critical one still runs (its criticality holds 0 < 2 slots), twice.
  s.Acquire(Background(), Criticality::kSheddable, absl::Milliseconds(1),
            calls.Slot(4));
  EXPECT_FALSE(calls.Decided(4));
  for (int i = 5; i < 7; ++i) {
    s.Acquire(Background(), Criticality::kCritical, absl::Milliseconds(1),
              calls.Slot(i));
    EXPECT_TRUE(calls.Admitted(i)) << i;
  }
  s.Acquire(Background(), Criticality::kCritical, absl::Milliseconds(1),
            calls.Slot(7));
  EXPECT_FALSE(calls.Decided(7));  // its guarantee is used: it queues
  EXPECT_EQ(s.running(), 6);
  // Slots freed: the critical call first, the sheddable one once the total
  // is below the limit again.
  calls[0].slot.Release();
  EXPECT_FALSE(calls.Decided(7));  // 5 running >= 4, critical holds 2
  calls[5].slot.Release();
  EXPECT_TRUE(calls.Admitted(7));
  EXPECT_FALSE(calls.Decided(4));
  calls[1].slot.Release();
  calls[2].slot.Release();
  EXPECT_TRUE(calls.Admitted(4));
  // Without shares the same critical arrival would have queued.
  LoadShedder plain(Fixed(1, 8, clock), nullptr);
  Calls p;
  plain.Acquire(Background(), Criticality::kSheddable, absl::Milliseconds(1),
                p.Slot(0));
  plain.Acquire(Background(), Criticality::kCritical, absl::Milliseconds(1),
                p.Slot(1));
  EXPECT_FALSE(p.Decided(1));
  p[0].slot.Release();
  EXPECT_TRUE(p.Admitted(1));
}

TEST(AdaptiveShedderTest, CodelRefusesOnceTheQueueStands) {
  FakeClock clock;
  PolicyCounters counters;
  LoadShedderOptions o = Fixed(1, 100, clock);
  o.codel_target = absl::Milliseconds(5);
  o.codel_interval = absl::Milliseconds(100);
  LoadShedder s(o, &counters);
  Calls calls;
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(2),
            calls.Slot(0));
  ASSERT_TRUE(calls.Admitted(0));
  // Queue young: waits up to the interval are allowed.
  for (int i = 1; i <= 3; ++i) {
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(2),
              calls.Slot(i));
    EXPECT_FALSE(calls.Decided(i));
  }
  // 150 ms later the queue has not been empty for a whole interval: the
  // oldest queued call (waited 150 ms > 5 ms) is refused when its turn
  // comes, and so are the others; the slot stays free for new calls.
  clock.t += absl::Milliseconds(150);
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(20),
            calls.Slot(4));  // standing queue, expected wait 80 ms > 5 ms
  ASSERT_TRUE(calls.Decided(4));
  EXPECT_EQ(calls[4].reason, ShedReason::kQueueDelay);
  calls[0].slot.Release();
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(calls.Decided(i));
    EXPECT_EQ(calls[i].reason, ShedReason::kQueueDelay) << i;
    EXPECT_TRUE(calls[i].queued);
  }
  EXPECT_EQ(s.queued(), 0);
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(counters.Get(PolicyCounter::kShedQueueDelay), 4);
  // Drained: the next call runs.
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(2),
            calls.Slot(5));
  EXPECT_TRUE(calls.Admitted(5));
}

// A queued call whose turn comes with less of its deadline left than its
// expected handling time is refused then, and the slot goes to the next one
// that can still finish (a slot spent on it would be wasted, and its end
// read as a drop).
TEST(AdaptiveShedderTest, RefusesAtItsTurnACallThatCanNoLongerFinish) {
  FakeClock clock;
  PolicyCounters counters;
  LoadShedder s(Fixed(1, 10, clock), &counters);
  Calls calls;
  const absl::Duration expected = absl::Milliseconds(200);
  s.Acquire(Background(), Criticality::kDefault, expected, calls.Slot(0));
  ASSERT_TRUE(calls.Admitted(0));
  // Deadlines far in real time (the Context's timers never fire here).
  auto [short_ctx, cancel_short] =
      WithDeadline(Background(), clock.t + absl::Minutes(10));
  auto [long_ctx, cancel_long] =
      WithDeadline(Background(), clock.t + absl::Minutes(20));
  s.Acquire(short_ctx, Criticality::kDefault, expected, calls.Slot(1));
  s.Acquire(long_ctx, Criticality::kDefault, expected, calls.Slot(2));
  EXPECT_EQ(s.queued(), 2);
  // Call 1's turn comes with 100 ms of its deadline left: refused.
  clock.t += absl::Minutes(10) - absl::Milliseconds(100);
  calls[0].slot.Release();
  ASSERT_TRUE(calls.Decided(1));
  EXPECT_EQ(calls[1].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(calls[1].reason, ShedReason::kShedAtArrival);
  EXPECT_TRUE(calls[1].queued);
  EXPECT_TRUE(calls.Admitted(2));
  EXPECT_EQ(counters.Get(PolicyCounter::kShedAtArrival), 1);
  EXPECT_EQ(s.queued(), 0);
  cancel_short();
  cancel_long();
}

// The queue's bound follows an adaptive limit (4 x the limit): when the
// limit falls below what is queued, a critical arrival evicts as many
// sheddable calls as it takes to make room, instead of being refused for
// calls a higher limit queued.
TEST(AdaptiveShedderTest, CriticalArrivalMakesRoomWhenTheQueueBoundFell) {
  FakeClock clock;
  PolicyCounters counters;
  LoadShedderOptions o = Fixed(1, -1, clock);  // queue: 4 x the limit
  o.limit.algorithm = limits::Algorithm::kAimd;
  o.limit.aimd.bounds = {/*initial=*/10, /*min=*/1, /*max=*/100,
                         /*warmup_samples=*/0};
  o.limit.aimd.backoff_ratio = 0.5;
  o.limit.window.min_time = absl::Milliseconds(1);
  o.limit.window.min_samples = 1;
  ASSERT_TRUE(ValidateLoadShedderOptions(o, "shedder").ok());
  LoadShedder s(o, &counters);
  Calls calls;
  for (int i = 0; i < 10; ++i) {
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              calls.Slot(i));
    ASSERT_TRUE(calls.Admitted(i));
  }
  for (int i = 10; i < 50; ++i) {
    s.Acquire(Background(), Criticality::kSheddable, absl::Milliseconds(1),
              calls.Slot(i));
    ASSERT_FALSE(calls.Decided(i)) << i;
  }
  ASSERT_EQ(s.queued(), 40);
  // A drop halves the limit (its window closes with the next sample); the
  // slots given back admitted two sheddable calls.
  clock.t += absl::Milliseconds(2);
  calls[0].slot.Release(limits::Outcome::kDropped);
  clock.t += absl::Milliseconds(2);
  calls[1].slot.Release(limits::Outcome::kSuccess);
  const int limit = s.limit();
  ASSERT_LT(limit, 10);
  const int queued = s.queued();
  ASSERT_GT(queued, 4 * limit);
  s.Acquire(Background(), Criticality::kCritical, absl::Milliseconds(1),
            calls.Slot(100));
  EXPECT_FALSE(calls.Decided(100));  // queued, not refused
  EXPECT_EQ(s.queued(), 4 * limit);
  EXPECT_EQ(counters.Get(PolicyCounter::kShedEvicted),
            queued - (4 * limit - 1));
  EXPECT_EQ(counters.Get(PolicyCounter::kShedQueueFull), 0);
}

TEST(AdaptiveShedderTest, DarkModeDecidesCountsAndNeverRefuses) {
  FakeClock clock;
  PolicyCounters counters;
  LoadShedderOptions o = Fixed(1, 0, clock);
  o.mode = ShedMode::kDark;
  LoadShedder s(o, &counters);
  Calls calls;
  for (int i = 0; i < 3; ++i) {
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              calls.Slot(i));
    ASSERT_TRUE(calls.Admitted(i)) << i;
  }
  EXPECT_FALSE(calls[0].would_queue);
  EXPECT_TRUE(calls[1].would_queue);  // over the limit: it would queue
  EXPECT_EQ(s.running(), 3);
  // A call that could not finish in time: counted, run anyway.
  auto [ctx, cancel] = WithTimeout(Background(), absl::Hours(1));
  s.Acquire(ctx, Criticality::kDefault, absl::Hours(2), calls.Slot(3));
  ASSERT_TRUE(calls.Admitted(3));
  EXPECT_EQ(calls[3].dark, ShedReason::kShedAtArrival);
  EXPECT_EQ(counters.Get(PolicyCounter::kDarkDecisions), 3);
  EXPECT_EQ(counters.Get(PolicyCounter::kShedAtArrival), 0);
  // Enforcing again: the same arrival is refused.
  s.SetMode(ShedMode::kEnforce);
  s.Acquire(ctx, Criticality::kDefault, absl::Hours(2), calls.Slot(4));
  EXPECT_EQ(calls[4].reason, ShedReason::kShedAtArrival);
  cancel();
}

TEST(AdaptiveShedderTest, KillSwitchAdmitsTheQueueAndEverythingAfter) {
  FakeClock clock;
  PolicyCounters counters;
  LoadShedder s(Fixed(1, 10, clock), &counters);
  Calls calls;
  for (int i = 0; i < 3; ++i) {
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              calls.Slot(i));
  }
  EXPECT_EQ(s.queued(), 2);
  s.SetMode(ShedMode::kOff);
  EXPECT_EQ(s.mode(), ShedMode::kOff);
  EXPECT_TRUE(calls.Admitted(1));
  EXPECT_TRUE(calls.Admitted(2));
  EXPECT_EQ(s.queued(), 0);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Hours(1));
  s.Acquire(ctx, Criticality::kSheddable, absl::Hours(2), calls.Slot(3));
  EXPECT_TRUE(calls.Admitted(3));  // no check at all
  EXPECT_FALSE(calls[3].dark.has_value());
  EXPECT_EQ(counters.Get(PolicyCounter::kDarkDecisions), 0);
  EXPECT_EQ(s.running(), 4);
  EXPECT_EQ(s.Stats().mode, ShedMode::kOff);
  cancel();
}

TEST(AdaptiveShedderTest, RefusalCapTurnsRefusalsIntoAdmissions) {
  FakeClock clock;
  PolicyCounters counters;
  RefusalCap cap(/*max_share=*/0.25, absl::Seconds(1));
  LoadShedder s(Fixed(1, 0, clock), &counters, &cap);
  Calls calls;
  for (int i = 0; i < 8; ++i) {
    cap.Arrived(clock.t);  // the owner counts arrivals
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              calls.Slot(i));
  }
  // 8 arrivals, 1 ran, 7 over the limit with no queue: a quarter of 8 = 2
  // refused, the other 5 admitted by the cap.
  int refused = 0, capped = 0;
  for (int i = 1; i < 8; ++i) {
    if (!calls[i].status.ok()) ++refused;
    if (calls[i].capped.has_value()) {
      ++capped;
      EXPECT_EQ(*calls[i].capped, ShedReason::kQueueFull);
    }
  }
  // Refusals are judged as they come: the first arrivals see few arrivals.
  EXPECT_EQ(refused + capped, 7);
  EXPECT_LE(refused, 2);
  EXPECT_EQ(counters.Get(PolicyCounter::kRefusalsCapped), capped);
  EXPECT_EQ(cap.capped(), capped);
}

TEST(AdaptiveShedderTest, CappedEvictionRunsTheArrivalAndCountsOnce) {
  FakeClock clock;
  PolicyCounters counters;
  RefusalCap cap(/*max_share=*/0.01, absl::Seconds(1));  // no refusal left
  LoadShedder s(Fixed(1, 1, clock), &counters, &cap);
  Calls calls;
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
            calls.Slot(0));
  s.Acquire(Background(), Criticality::kSheddable, absl::Milliseconds(1),
            calls.Slot(1));
  EXPECT_EQ(s.queued(), 1);
  // Queue full: evicting the sheddable call would be a refusal; the cap
  // allows none, so the critical arrival runs over the limit instead.
  s.Acquire(Background(), Criticality::kCritical, absl::Milliseconds(1),
            calls.Slot(2));
  ASSERT_TRUE(calls.Admitted(2));
  EXPECT_EQ(calls[2].capped, ShedReason::kQueueFull);
  EXPECT_FALSE(calls.Decided(1));
  EXPECT_EQ(counters.Get(PolicyCounter::kRefusalsCapped), 1);
  EXPECT_EQ(cap.capped(), 1);
}

TEST(RefusalCapTest, ShareOfTheWindowAndOfThePreviousOne) {
  RefusalCap cap(0.5, absl::Seconds(1));
  absl::Time t = absl::UnixEpoch();
  for (int i = 0; i < 10; ++i) cap.Arrived(t);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(cap.TryRefuse(t)) << i;
  EXPECT_FALSE(cap.TryRefuse(t));
  // Next window: judged by the previous window's 10 arrivals at first.
  t += absl::Milliseconds(1100);
  cap.Arrived(t);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(cap.TryRefuse(t)) << i;
  EXPECT_FALSE(cap.TryRefuse(t));
  // After a long gap, nothing to judge by but the window's own arrivals.
  t += absl::Seconds(10);
  cap.Arrived(t);
  EXPECT_FALSE(cap.TryRefuse(t));  // 1 x 0.5 < 1
  cap.Arrived(t);
  EXPECT_TRUE(cap.TryRefuse(t));
  EXPECT_EQ(cap.capped(), 3);
  RefusalCap none(1, absl::Seconds(1));
  EXPECT_TRUE(none.TryRefuse(t));  // no arrivals, no cap
}

TEST(AdaptiveShedderTest, OptionsValidatedNamingTheField) {
  auto error = [](const LoadShedderOptions& o) {
    return std::string(ValidateLoadShedderOptions(o, "shedder").message());
  };
  LoadShedderOptions o;
  o.max_concurrency = 0;
  EXPECT_EQ(error(o), "shedder.max_concurrency: must be >= 1 with a fixed "
                      "limit");
  o.limit.algorithm = limits::Algorithm::kVegas;  // max_concurrency unused
  EXPECT_TRUE(ValidateLoadShedderOptions(o, "shedder").ok());
  o.limit.vegas.smoothing = 2;
  EXPECT_EQ(error(o), "shedder.limit.vegas.smoothing: must be in (0, 1]");
  o = LoadShedderOptions();
  o.shares = {0.5, 0, 0.6};
  EXPECT_EQ(error(o), "shedder.shares: must sum to <= 1");
  o.shares = {0, 0, -1};
  EXPECT_EQ(error(o), "shedder.shares[2]: must be in [0, 1]");
  o = LoadShedderOptions();
  o.codel_target = absl::Milliseconds(50);
  o.codel_interval = absl::Milliseconds(10);
  EXPECT_EQ(error(o), "shedder.codel_interval: must be >= codel_target");
  MethodPolicy p;
  p.limit.algorithm = limits::Algorithm::kGradient;
  EXPECT_TRUE(SheddingOn(p));  // adaptive: no number needed
  p.limit.gradient.long_window = 0;
  EXPECT_EQ(ValidateMethodPolicy(p).message(),
            "method policy.limit.gradient.long_window: must be >= 1");
  p = MethodPolicy();
  p.max_refused_share = 0;
  EXPECT_EQ(ValidateMethodPolicy(p).message(),
            "method policy: max_refused_share out of range");
}

}  // namespace
}  // namespace reqctx::policy
