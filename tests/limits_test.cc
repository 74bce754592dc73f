// Deterministic tests of //limits on a fake timeline: no clock, no threads.
//
// The server model: `capacity` calls run at once, each for `service`; more
// calls queue, so a call admitted with n in flight is handled in
// service x max(1, n / capacity). The load is saturating (closed loop): the
// enforcer keeps exactly `limit` calls in flight, and calls complete at the
// server's throughput, n / handling time. Each algorithm is checked for
// convergence up (from below capacity) and down (after capacity halves),
// its bounds, its warm-up, and the band it oscillates in once converged.
#include <algorithm>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "limits/aimd_limit.h"
#include "limits/fixed_limit.h"
#include "limits/gradient2_limit.h"
#include "limits/limit_options.h"
#include "limits/vegas_limit.h"
#include "limits/windowed_limit.h"

namespace reqctx::limits {
namespace {

struct Server {
  int capacity = 32;
  absl::Duration service = absl::Milliseconds(50);
  // Handling time of a call admitted with `n` in flight.
  absl::Duration Rtt(int n) const {
    return service * std::max(1.0, static_cast<double>(n) / capacity);
  }
};

// Drives `limit` against `server` for `d` of fake time from `*now`; returns
// the limit after each sample, with its time.
struct Point {
  absl::Time t;
  int limit;
};
std::vector<Point> Drive(Limit& limit, const Server& server, absl::Time* now,
                         absl::Duration d, bool dropped = false) {
  std::vector<Point> trace;
  const absl::Time end = *now + d;
  while (*now < end) {
    const int n = limit.Current();
    Sample s;
    s.start = *now;
    s.rtt = server.Rtt(n);
    s.inflight = n;
    s.dropped = dropped;
    limit.OnSample(s);
    *now += s.rtt / n;
    trace.push_back({*now, limit.Current()});
  }
  return trace;
}

// Smallest and largest limit in `trace` at or after `from`.
std::pair<int, int> Range(const std::vector<Point>& trace, absl::Time from) {
  int lo = 1 << 30, hi = 0;
  for (const Point& p : trace) {
    if (p.t < from) continue;
    lo = std::min(lo, p.limit);
    hi = std::max(hi, p.limit);
  }
  return {lo, hi};
}

// First time at or after `from` from which the limit stays in [lo, hi] to
// the end of `trace`; InfiniteFuture if it never settles.
absl::Time SettledAt(const std::vector<Point>& trace, int lo, int hi) {
  absl::Time settled = absl::InfiniteFuture();
  for (const Point& p : trace) {
    if (p.limit < lo || p.limit > hi) {
      settled = absl::InfiniteFuture();
    } else if (settled == absl::InfiniteFuture()) {
      settled = p.t;
    }
  }
  return settled;
}

LimitOptions Options(Algorithm a) {
  LimitOptions o;
  o.algorithm = a;
  LimitBounds b;
  b.initial = 10;
  b.min = 2;
  b.max = 500;
  b.warmup_samples = 5;
  o.aimd.bounds = o.gradient.bounds = o.vegas.bounds = b;
  // AIMD is loss-based: a handling time above 1.2 x the no-load time is
  // its "loss" (the bench and echo flag set the same relation).
  o.aimd.timeout = absl::Milliseconds(60);
  return o;
}

std::unique_ptr<Limit> Make(const LimitOptions& o) {
  absl::StatusOr<std::unique_ptr<Limit>> l = MakeLimit(o);
  EXPECT_TRUE(l.ok()) << l.status();
  return *std::move(l);
}

// The band each algorithm settles in around capacity C behind a saturated
// server, as its header states: AIMD's saw-tooth between backoff x the
// timeout's limit and that limit (timeout 1.2 x service: 1.2 C); Gradient2
// queue_size (4) above C plus its long average's lag; Vegas C + 3..6
// (L = 1 below 100), its target band, plus one step either side.
// Gradient2 comes back from a capacity drop higher: its long-term average
// learned the slower handling times, and it grows until the short-term one
// matches them (the drift Netflix documents); `restored_hi_factor` bounds it.
struct Band {
  double lo_factor, hi_factor;
  int lo_add, hi_add;
  double restored_hi_factor = 0;  // 0: hi_factor
  int Lo(int c) const { return static_cast<int>(c * lo_factor) + lo_add; }
  int Hi(int c) const { return static_cast<int>(c * hi_factor) + hi_add; }
};
Band BandOf(Algorithm a) {
  switch (a) {
    case Algorithm::kAimd:
      return {0.95, 1.2, 0, 2};
    case Algorithm::kGradient:
      return {1.0, 1.0, 0, 10, 1.5};
    case Algorithm::kVegas:
      return {1.0, 1.0, 1, 8};
    case Algorithm::kFixed:
      break;
  }
  return {1, 1, 0, 0};
}

class AdaptiveTest : public ::testing::TestWithParam<Algorithm> {};

TEST_P(AdaptiveTest, ConvergesUpThenDownThenUpWithinItsBand) {
  const Algorithm a = GetParam();
  const Band band = BandOf(a);
  auto limit = Make(Options(a));
  absl::Time now = absl::UnixEpoch();
  Server server;
  server.capacity = 32;
  // Up from 10 to capacity 32: settled within 5 s, and stays in the band.
  std::vector<Point> up = Drive(*limit, server, &now, absl::Seconds(20));
  const absl::Time up_settled =
      SettledAt(up, band.Lo(32), band.Hi(32));
  EXPECT_LE(up_settled - absl::UnixEpoch(), absl::Seconds(5))
      << AlgorithmName(a) << " final " << up.back().limit;
  auto [lo, hi] = Range(up, absl::UnixEpoch() + absl::Seconds(10));
  EXPECT_GE(lo, band.Lo(32)) << AlgorithmName(a);
  EXPECT_LE(hi, band.Hi(32)) << AlgorithmName(a);
  // Capacity halves: down to the band around 16 within 5 s.
  const absl::Time halved = now;
  server.capacity = 16;
  std::vector<Point> down = Drive(*limit, server, &now, absl::Seconds(20));
  EXPECT_LE(SettledAt(down, band.Lo(16), band.Hi(16)) - halved,
            absl::Seconds(5))
      << AlgorithmName(a) << " final " << down.back().limit;
  std::tie(lo, hi) = Range(down, halved + absl::Seconds(10));
  EXPECT_GE(lo, band.Lo(16)) << AlgorithmName(a);
  EXPECT_LE(hi, band.Hi(16)) << AlgorithmName(a);
  // Restored: back up within 5 s.
  const absl::Time restored = now;
  server.capacity = 32;
  std::vector<Point> again = Drive(*limit, server, &now, absl::Seconds(20));
  Band restored_band = band;
  if (band.restored_hi_factor > 0) {
    restored_band.hi_factor = band.restored_hi_factor;
  }
  EXPECT_LE(SettledAt(again, band.Lo(32), restored_band.Hi(32)) - restored,
            absl::Seconds(5))
      << AlgorithmName(a) << " final " << again.back().limit;
}

TEST_P(AdaptiveTest, StaysWithinMinAndMax) {
  LimitOptions o = Options(GetParam());
  for (LimitBounds* b : {&o.aimd.bounds, &o.gradient.bounds, &o.vegas.bounds}) {
    b->min = 8;
    b->max = 20;
    b->initial = 10;
  }
  auto limit = Make(o);
  absl::Time now = absl::UnixEpoch();
  Server big;  // capacity 32 > max: the limit stops at max.
  auto [lo, hi] = Range(Drive(*limit, big, &now, absl::Seconds(20)), now);
  EXPECT_LE(hi, 20);
  EXPECT_GE(lo, 8);
  EXPECT_EQ(limit->Current(), 20) << AlgorithmName(GetParam());
  Server tiny;  // capacity 2 < min: the limit stops at min.
  tiny.capacity = 2;
  const absl::Time from = now;
  std::vector<Point> t = Drive(*limit, tiny, &now, absl::Seconds(30));
  std::tie(lo, hi) = Range(t, from);
  EXPECT_GE(lo, 8);
  EXPECT_LE(hi, 20);
  // Each reaches min (Vegas leaves it by beta after each probe, which
  // re-learns its baseline from a queued handling time, then comes back).
  EXPECT_EQ(lo, 8) << AlgorithmName(GetParam());
}

TEST_P(AdaptiveTest, WarmupKeepsTheInitialLimit) {
  LimitOptions o = Options(GetParam());
  for (LimitBounds* b : {&o.aimd.bounds, &o.gradient.bounds, &o.vegas.bounds}) {
    b->warmup_samples = 50;
  }
  // Unwindowed, so each call is one sample of the algorithm.
  std::unique_ptr<Limit> limit;
  switch (GetParam()) {
    case Algorithm::kAimd:
      limit = std::make_unique<AimdLimit>(o.aimd);
      break;
    case Algorithm::kGradient:
      limit = std::make_unique<Gradient2Limit>(o.gradient);
      break;
    default:
      limit = std::make_unique<VegasLimit>(o.vegas);
      break;
  }
  absl::Time now = absl::UnixEpoch();
  Server server;
  for (int i = 0; i < 50; ++i) {
    Sample s{now, server.Rtt(10), 10, false};
    limit->OnSample(s);
    now += absl::Milliseconds(5);
    EXPECT_EQ(limit->Current(), 10) << "sample " << i;
  }
  EXPECT_EQ(limit->Inputs().samples, 50);
  for (int i = 0; i < 50; ++i) {
    Sample s{now, server.Rtt(10), 10, false};
    limit->OnSample(s);
    now += absl::Milliseconds(5);
  }
  EXPECT_GT(limit->Current(), 10) << AlgorithmName(GetParam());
}

TEST_P(AdaptiveTest, ApplicationLimitedDoesNotGrow) {
  auto limit = Make(Options(GetParam()));
  absl::Time now = absl::UnixEpoch();
  for (int i = 0; i < 2000; ++i) {
    // 2 calls in flight against a limit of 10: no evidence for more.
    Sample s{now, absl::Milliseconds(50), 2, false};
    limit->OnSample(s);
    now += absl::Milliseconds(25);
  }
  EXPECT_LE(limit->Current(), 10) << AlgorithmName(GetParam());
}

INSTANTIATE_TEST_SUITE_P(All, AdaptiveTest,
                         ::testing::Values(Algorithm::kAimd,
                                           Algorithm::kGradient,
                                           Algorithm::kVegas),
                         [](const auto& info) {
                           return std::string(AlgorithmName(info.param));
                         });

TEST(AimdLimit, BacksOffOnDropsAndGrowsOtherwise) {
  AimdOptions o;
  o.bounds.initial = 100;
  o.bounds.warmup_samples = 0;
  AimdLimit limit(o);
  absl::Time now = absl::UnixEpoch();
  limit.OnSample({now, absl::Milliseconds(1), 100, true});
  EXPECT_EQ(limit.Current(), 90);
  limit.OnSample({now, absl::Milliseconds(1), 90, false});
  EXPECT_EQ(limit.Current(), 91);
}

TEST(VegasLimit, DropsDecreaseAndProbeRelearnsTheBaseline) {
  VegasOptions o;
  o.bounds.initial = 20;
  o.bounds.warmup_samples = 0;
  o.probe_multiplier = 1;  // re-learn every `limit` samples
  VegasLimit limit(o);
  absl::Time now = absl::UnixEpoch();
  limit.OnSample({now, absl::Milliseconds(10), 20, false});  // baseline
  limit.OnSample({now, absl::Milliseconds(10), 20, true});
  EXPECT_EQ(limit.Current(), 19);
  EXPECT_EQ(limit.Inputs().min_rtt, absl::Milliseconds(10));
  // The baseline grows x5 (a slower dependency): a probe re-learns it.
  for (int i = 0; i < 40; ++i) {
    limit.OnSample({now, absl::Milliseconds(50), 19, false});
  }
  EXPECT_EQ(limit.Inputs().min_rtt, absl::Milliseconds(50));
}

TEST(Gradient2Limit, ShrinksWhenLatencyRisesAndRecoversLongRtt) {
  Gradient2Options o;
  o.bounds.initial = 50;
  o.bounds.warmup_samples = 10;
  Gradient2Limit limit(o);
  absl::Time now = absl::UnixEpoch();
  for (int i = 0; i < 10; ++i) {
    limit.OnSample({now, absl::Milliseconds(10), 50, false});
  }
  EXPECT_EQ(limit.Inputs().long_rtt, absl::Milliseconds(10));
  limit.OnSample({now, absl::Milliseconds(40), 50, false});
  // gradient clamped to 0.5: 50 x 0.8 + (25 + 4) x 0.2 = 45.8
  EXPECT_EQ(limit.Current(), 45);
}

TEST(WindowedLimit, OneSamplePerWindowAndThinWindowsDiscarded) {
  WindowOptions w;
  w.min_time = absl::Milliseconds(100);
  w.max_time = absl::Milliseconds(500);
  w.min_samples = 5;
  AimdOptions o;
  o.bounds.initial = 10;
  o.bounds.warmup_samples = 0;
  WindowedLimit limit(std::make_unique<AimdLimit>(o), w);
  absl::Time t = absl::UnixEpoch();
  // 20 samples in 100 ms: one window, one +1.
  for (int i = 0; i <= 20; ++i) {
    limit.OnSample({t + absl::Milliseconds(5 * i), absl::ZeroDuration(), 10,
                    false});
  }
  EXPECT_EQ(limit.Current(), 11);
  EXPECT_EQ(limit.Inputs().samples, 1);
  // 3 samples spread over 600 ms: too few, discarded.
  t += absl::Seconds(1);
  for (int i = 0; i < 3; ++i) {
    limit.OnSample({t + absl::Milliseconds(300 * i), absl::ZeroDuration(), 10,
                    true});
  }
  EXPECT_EQ(limit.Current(), 11);
  EXPECT_EQ(limit.Inputs().samples, 1);
}

TEST(FixedLimit, NeverMoves) {
  FixedLimit limit(7);
  limit.OnSample({absl::UnixEpoch(), absl::Seconds(9), 7, true});
  EXPECT_EQ(limit.Current(), 7);
  EXPECT_EQ(limit.Inputs().samples, 1);
}

TEST(LimitOptions, ValidationNamesTheBadField) {
  auto error = [](const LimitOptions& o) {
    return std::string(ValidateLimitOptions(o).message());
  };
  LimitOptions o;
  o.fixed = 0;
  EXPECT_EQ(error(o), "limit.fixed: must be >= 1");
  o = LimitOptions();
  o.algorithm = Algorithm::kGradient;
  o.gradient.smoothing = 0;
  EXPECT_EQ(error(o), "limit.gradient.smoothing: must be in (0, 1]");
  o.gradient.smoothing = 0.2;
  o.gradient.bounds.min = 30;  // initial 20 < min
  EXPECT_EQ(error(o), "limit.gradient.bounds.initial: must be in [min, max]");
  o = LimitOptions();
  o.algorithm = Algorithm::kVegas;
  o.vegas.beta = 2;
  EXPECT_EQ(error(o), "limit.vegas.beta: must be > alpha");
  o = LimitOptions();
  o.algorithm = Algorithm::kAimd;
  o.aimd.backoff_ratio = 1;
  EXPECT_EQ(error(o), "limit.aimd.backoff_ratio: must be in [0.5, 1)");
  o.aimd.backoff_ratio = 0.9;
  o.aimd.bounds.max = 0;
  EXPECT_EQ(error(o), "limit.aimd.bounds.max: must be >= min");
  o.aimd.bounds.max = 100;
  o.window.min_samples = 0;
  EXPECT_EQ(error(o), "limit.window.min_samples: must be >= 1");
  EXPECT_FALSE(MakeLimit(o).ok());
  EXPECT_EQ(ParseAlgorithm("gradient"), Algorithm::kGradient);
  EXPECT_EQ(ParseAlgorithm("Gradient"), std::nullopt);
}

}  // namespace
}  // namespace reqctx::limits
