// AimdLimit: additive increase, multiplicative decrease (TCP Reno's rule;
// Netflix's AIMDLimit). Loss-based: it moves on drops, not on latency
// trends.
//
// Per sample (after warm-up):
//   * dropped (deadline hit while handled) -- with a timeout, only while
//     this sample and the one before show a queue (handling time above
//     `quiet`, halfway from the fastest window x the timeout's scale to the
//     scaled timeout), or whose window had at least kQueueDropShare of its
//     calls dropped (Sample::dropped_share) -- or handling time >
//     `timeout` when a timeout is set: limit = limit x backoff_ratio -- once
//     per round trip, as TCP does: a sample (window) holding a call
//     admitted before the last decrease changes nothing (its latency shows
//     the queue of the old, higher limit; backing off again for it
//     undershoots);
//   * else, if the server is using at least half the limit
//     (inflight x 2 >= limit): limit = limit + 1 up to one call under the
//     limit it last backed off from (the server ran those), or while the
//     handling time shows no queue (with a timeout: at most halfway from
//     the fastest window x the timeout's scale to the scaled timeout), and
//     limit + share otherwise, share = QueueShare(the sample's budget, the
//     fastest window x the timeout's scale) (limit.h: 1 unless the calls'
//     deadlines are too tight to wait for a worker: each step above
//     capacity then makes calls late until a drop shows it, a round trip
//     later; as TCP CUBIC, quick back to the last loss, careful beyond it).
//     Below capacity no call waits, so the share does not slow the climb
//     there: with the share's floor for every call it found doubled
//     capacity in > 20 s (1 call per second), and now as fast as without
//     deadlines (limits_test.cc);
//   * else (application-limited: too few calls to tell): unchanged.
// Then clamped to [bounds.min, bounds.max].
// A drop in a sample that shows no queue (or in one sample alone: a window
// mean above `quiet` by chance seldom comes twice) is a call's own spread
// past a budget that only covered the mean handling -- a caller's choice,
// which a lower limit would not cure -- not a late call the limit made
// (limits_test.cc's AFewJustAdmittedCallsDoNotCollapseTheLimit: with every
// drop a loss, a tenth of the calls with such budgets held the limit at
// 10-11 of 32 workers). Without a timeout there is no handling time to
// read a queue against, and every drop is a loss: where callers' deadlines
// are not trusted, set one (or use Gradient2, which does not read drops).
// "The fastest window" is the smallest largest-of-3-in-a-row (as Vegas'
// no_load): the smallest single window is the low tail of their spread
// (4-5% under the handling time at +-20% per call), which put `quiet` and
// the slowdown's scaled timeout that much higher, so a real queue's drops
// showed less often (overload_bench --jitter=0.2's slow phase: 0.78-0.79
// with single windows, 0.83 with runs; 0.86 without the drop gate).
// Its steady state is a saw-tooth: it grows until calls start to exceed the
// timeout, then drops by (1 - backoff_ratio). Behind a queue of fixed
// capacity C with handling time S, set `timeout` to 1.1 x S: the limit
// then saw-tooths in about [1.1 x C x backoff_ratio, 1.1 x C + 1], inside
// [0.8 C, 1.2 C] (limits_test.cc checks that band).
// A slower dependency (handling time x5, same workers) would put every call
// over the timeout and cut the limit to min, once per round trip. So a
// handling time above slowdown.rise x the timeout is first checked
// (slowdown_check.h): on a kRebaseline verdict the timeout is scaled by how much
// slower the server got (the verdict's handling time over the fastest window
// seen) and the limit goes back to where it was; when windows get twice as
// fast as the scaled timeout, the check re-measures the handling time
// without a queue and scales to it (1 at the first window within `timeout`
// itself).
//
// Thread-safety and lifetime: as every Limit (limit.h).
#ifndef REQCTX_LIMITS_AIMD_LIMIT_H_
#define REQCTX_LIMITS_AIMD_LIMIT_H_

#include "limits/limit.h"
#include "limits/recent_max.h"
#include "limits/slowdown_check.h"

namespace reqctx::limits {

struct AimdOptions {
  LimitBounds bounds;
  // Multiplier on a drop; in [0.5, 1).
  double backoff_ratio = 0.9;
  // A handling time above this counts as a drop; zero: only real drops
  // (deadlines hit) count. >= 0.
  absl::Duration timeout = absl::ZeroDuration();
  // A slower server vs a longer queue (slowdown_check.h: its rise check
  // with a timeout, its drop check always).
  SlowdownCheckOptions slowdown;

  // InvalidArgument naming "<prefix>.<field>".
  absl::Status Validate(std::string_view prefix) const;
};

class AimdLimit final : public Limit {
 public:

  // `options` must be valid (Validate).
  explicit AimdLimit(const AimdOptions& options);
  int Current() const override { return static_cast<int>(limit_); }
  void OnSample(const Sample& s) override;
  LimitInputs Inputs() const override { return inputs_; }
  std::string_view Name() const override { return "aimd"; }

 private:
  const AimdOptions options_;
  SlowdownCheck check_;
  double limit_;
  absl::Time backed_off_at_ = absl::InfinitePast();  // last decrease
  // The fastest window: the smallest of runs of 3 samples (0: none yet).
  double fastest_ns_ = 0;
  RecentMax<3> run_;  // the last 3 samples
  double scale_ = 1;       // the timeout's scale (>= 1)
  double recover_to_ = 0;  // one under the limit last backed off from
  DropGate gate_;
  LimitInputs inputs_;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_AIMD_LIMIT_H_
