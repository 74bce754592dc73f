// Gradient2Limit: the limit follows the ratio of a long-term to a
// short-term handling time (Netflix's Gradient2Limit).
//
// Per sample (each sample is usually one window's average, windowed_limit.h):
//   short = the sample's handling time;
//   long  = exponential average of the samples over `long_window` samples
//           (a plain mean over the first bounds.warmup_samples);
//   if long / short > 2 (a long overload just ended): long = long x 0.9, so
//           the baseline comes back down faster than the average would;
//   if inflight < limit / 2: unchanged (application-limited: too few calls
//           to tell whether more would queue);
//   gradient = clamp(long / short, 0.5, 1)   (1: no queueing seen)
//   target = limit x gradient + queue_size   (the allowance lets the limit
//           grow while latency stays flat, and probes for more capacity)
//   limit = limit x (1 - smoothing) + target x smoothing, clamped to bounds.
// At equilibrium behind a saturated server, gradient = 1 - queue_size /
// limit: the limit settles `queue_size` (plus the long average's lag) above
// what the server can run without queueing; when capacity falls, short
// jumps while long lags, and the limit falls by up to half per sample. The
// limit stays at bounds.initial during warm-up.
//
// Thread-safety and lifetime: as every Limit (limit.h).
#ifndef REQCTX_LIMITS_GRADIENT2_LIMIT_H_
#define REQCTX_LIMITS_GRADIENT2_LIMIT_H_

#include "limits/limit.h"

namespace reqctx::limits {

struct Gradient2Options {
  LimitBounds bounds;
  // Share of the new estimate taken per sample; in (0, 1].
  double smoothing = 0.2;
  // Samples the long-term average spans; >= 1.
  int long_window = 600;
  // Calls the limit may exceed the no-queue estimate by; >= 0.
  double queue_size = 4;

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
  const Gradient2Options options_;
  double limit_;
  double long_ns_ = 0;
  double last_ns_ = 0;
  int64_t samples_ = 0;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_GRADIENT2_LIMIT_H_
