// VegasLimit: the limit follows an estimate of the calls queued behind the
// server's real capacity, from its minimum handling time (TCP Vegas;
// Netflix's VegasLimit).
//
// Per sample (each sample is usually one window's average, windowed_limit.h):
//   no_load = the smallest handling time seen (re-learned from the next
//             sample every probe_multiplier x limit samples, so a server
//             whose baseline grew -- a slower dependency -- is not taken for
//             a queue forever);
//   queue   = ceil(limit x (1 - no_load / rtt)): calls beyond those the
//             server runs without waiting;
//   with L = max(1, floor(log10(limit))):
//     dropped (deadline hit)       -> limit - L
//     inflight x 2 < limit          -> unchanged (application-limited)
//     queue <= threshold x L        -> limit + beta x L   (far below: grow fast)
//     queue <  alpha x L            -> limit + L
//     queue >  beta x L             -> limit - L
//     otherwise                     -> unchanged (the target band)
//   limit = limit x (1 - smoothing) + new x smoothing, clamped to bounds.
// It settles where alpha x L <= queue <= beta x L: behind a saturated server
// of concurrency C, at C + 2..3 calls for limits under 100 with the
// defaults (within 20% of C from C = 15; Netflix's 3 and 6 settle at
// C + 3..6, 38% above a C of 16).
// The limit stays at bounds.initial during warm-up (no_load is learned).
//
// Thread-safety and lifetime: as every Limit (limit.h).
#ifndef REQCTX_LIMITS_VEGAS_LIMIT_H_
#define REQCTX_LIMITS_VEGAS_LIMIT_H_

#include "limits/limit.h"

namespace reqctx::limits {

struct VegasOptions {
  LimitBounds bounds;
  // Multiples of L (see above): 0 < threshold <= alpha < beta.
  double threshold = 1;
  double alpha = 2;
  double beta = 3;
  // Share of the new limit taken per sample; in (0, 1].
  double smoothing = 1.0;
  // no_load is re-learned every probe_multiplier x limit samples; >= 1.
  int probe_multiplier = 30;

  // InvalidArgument naming "<prefix>.<field>".
  absl::Status Validate(std::string_view prefix) const;
};

class VegasLimit final : public Limit {
 public:
  // `options` must be valid (Validate).
  explicit VegasLimit(const VegasOptions& options);
  int Current() const override { return static_cast<int>(limit_); }
  void OnSample(const Sample& s) override;
  LimitInputs Inputs() const override;
  std::string_view Name() const override { return "vegas"; }

 private:
  const VegasOptions options_;
  double limit_;
  double no_load_ns_ = 0;  // 0: not known yet
  double last_ns_ = 0;
  double queue_ = 0;
  int64_t samples_ = 0;
  int64_t since_probe_ = 0;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_VEGAS_LIMIT_H_
