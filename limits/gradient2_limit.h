// Gradient2Limit: the limit follows the ratio of a long-term to a
// short-term handling time (Netflix's Gradient2Limit).
//
// Per sample (each sample is usually one window's average, windowed_limit.h):
//   short = the sample's handling time;
//   long  = exponential average of the samples over `long_window` samples
//           (a plain mean over the first bounds.warmup_samples);
//   long  = min(long, max(short, the sample before) x max_long_ratio):
//           when handling gets faster (an overload or a slow dependency
//           ended) the baseline follows within two samples instead of over
//           long_window samples (Netflix decays it by 0.9 per sample past
//           2x; with that rule the limit settled 1.5 C after a 5x slow phase
//           in limits_test.cc's model); two in a row, not one, as one
//           window's mean under a spread of handling times is often low
//           enough to hold long a few % under the real handling time, and
//           the limit's climb with it;
//   if inflight < limit / 2: unchanged (application-limited: too few calls
//           to tell whether more would queue) -- before the slowdown and
//           drop checks, so the drop check (drop_check.h: a limit that
//           holds no call back) acts here only between limit / 2 and a
//           call under the limit;
//   gradient = clamp(long / short, 0.5, 1)   (1: no queueing seen);
//           0.5 in a sample with at least kQueueDropShare of its calls
//           dropped (limit.h): late calls cut at their deadlines cap the
//           handling times, and a long average learned under that queue
//           hides it too (a real queue of callers with budgets 1.25 x the
//           work held the limit at 64 of 8 cores; limits_test.cc's cut
//           queue ran to bounds.max);
//   allowance = queue_size + queue_share x limit  (Netflix's queueSize as a
//           function of the limit: it lets the limit grow while latency
//           stays flat, probing for more capacity, in proportion to it)
//   target = limit x gradient + allowance
//   limit = target when target >= limit, else
//           limit x (1 - smoothing) + target x smoothing; clamped to bounds
//           -- smoothing damps decreases (what Netflix documents it for):
//           an increase is taken whole (up to the allowance per sample), so
//           the limit climbs back from a low limit in seconds, not tens of
//           seconds, even when window means a few % apart put the gradient
//           a hair under 1.
// At equilibrium behind a saturated server of concurrency C, gradient =
// 1 - allowance / limit: the limit settles near (C + queue_size) / (1 -
// queue_share) (17-18 for C = 16, 33-35 for C = 32 with the defaults,
// in limits_test.cc and the bench), then creeps up as
// the long average learns the queueing (~0.1 per second with 100 ms
// windows); when capacity falls, short jumps while long lags, and the limit
// falls by up to 10% (smoothing x 0.5) per sample. The limit stays at
// bounds.initial during warm-up. A slower dependency looks like queueing
// until the slowdown check (slowdown_check.h, `slowdown`) has cut the limit
// by 30% and seen the handling time stay: the long average then takes the
// new handling time at once and the limit returns to where it was, instead
// of shrinking until a 600-sample average has learned it.
//
// Thread-safety and lifetime: as every Limit (limit.h).
#ifndef REQCTX_LIMITS_GRADIENT2_LIMIT_H_
#define REQCTX_LIMITS_GRADIENT2_LIMIT_H_

#include "limits/limit.h"
#include "limits/recent_max.h"
#include "limits/slowdown_check.h"

namespace reqctx::limits {

struct Gradient2Options {
  LimitBounds bounds;
  // Share of a lower estimate taken per sample; in (0, 1].
  double smoothing = 0.2;
  // Samples the long-term average spans; >= 1.
  int long_window = 600;
  // Calls the limit may exceed the no-queue estimate by: queue_size (>= 0)
  // plus queue_share (in [0, 1)) x the limit.
  double queue_size = 0.5;
  double queue_share = 0.03;
  // The long average is kept <= short x max_long_ratio; >= 1.
  double max_long_ratio = 1.05;
  // A slower server vs a longer queue (slowdown_check.h): on a kRebaseline
  // verdict the long average becomes the new handling time.
  SlowdownCheckOptions slowdown;

  // InvalidArgument naming "<prefix>.<field>".
  absl::Status Validate(std::string_view prefix) const;
};

class Gradient2Limit final : public Limit {
 public:
  // `options` must be valid (Validate).
  explicit Gradient2Limit(const Gradient2Options& options);
  int Current() const override { return static_cast<int>(limit_); }
  void OnSample(const Sample& s) override;
  LimitInputs Inputs() const override;
  std::string_view Name() const override { return "gradient"; }

 private:
  double Allowance() const;
  const Gradient2Options options_;
  SlowdownCheck check_;
  double limit_;
  double long_ns_ = 0;
  double last_ns_ = 0;
  RecentMax<2> recent_;  // this sample and the one before: long <= short
  int64_t samples_ = 0;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_GRADIENT2_LIMIT_H_
