// VegasLimit: the limit follows an estimate of the calls queued behind the
// server's real capacity, from its minimum handling time (TCP Vegas;
// Netflix's VegasLimit).
//
// Per sample (each sample is usually one window's average, windowed_limit.h):
//   no_load = the smallest handling time seen over kNoLoadRun samples in a
//             row (the largest of the run, when under no_load), re-learned
//             by a probe (the minimum of single window means sits in the
//             low tail of their spread: 9% under the handling time in a
//             slow phase of +-20% per call, a phantom queue of 3 calls at a
//             limit of 32 that walked the limit down to 0.7 C);
//   probe   = (BBR's ProbeRTT, triggered as Netflix's Vegas probes) every
//             probe_multiplier x limit samples, and once a run of
//             decreases in a row has cut the limit by probe_after_fall
//             (a queue that does not drain as the limit falls may be a
//             slower server, not a longer queue), and when kNoLoadRun
//             samples in a row take under half of no_load (a slow phase
//             ended; the samples may still hold a queue): the limit halves,
//             and the smallest of the next 2 samples holding only calls
//             admitted after the halving becomes no_load; the limit then
//             grows back from the half by the rules below. Samples of
//             calls admitted before the halving are ignored;
//   slowdown = before a rise of the handling time above slowdown.rise x
//             no_load is cut, the slowdown check (slowdown_check.h) cuts
//             the limit by 30% and looks: a slower dependency (handling time
//             x5, same workers) keeps its handling time, which becomes
//             no_load at once, and the limit goes back to where it was --
//             no halving, no shrinking to min; a queue shrinks, and the
//             rules below cut on;
//   queue   = ceil(limit x (1 - no_load / rtt)): calls beyond those the
//             server runs without waiting;
//   with L = max(1, floor(log10(limit))):
//     dropped (deadline hit) while this sample and the one before show
//     queue >= alpha x L            -> limit - L (no step of a run toward
//                                      a probe: the baseline stands)
//     at least kQueueDropShare of the window's calls dropped
//                                   -> limit - max(L, limit / 10), and from
//                                      then to the next probe, or until 5
//                                      windows in a row without a dropped
//                                      call, every increase is L, never
//                                      beta x L (late calls cut
//                                      at their deadlines hide the queue
//                                      the fast growth reads: in limits_
//                                      test.cc's cut queue it climbed +3 at
//                                      a time to 20 of 16 workers; by L a
//                                      window, a limit 8 x the cores took
//                                      tens of seconds to come down)
//     inflight x 2 < limit          -> unchanged (application-limited)
//     queue >  beta x L             -> limit - L (before the drop rule)
//     queue <= threshold x L        -> limit + max(L, beta x L - queue)
//                                      (far below: grow fast, to the band's
//                                      top as this sample puts it; a whole
//                                      beta x L from C + 1, whose rounded-up
//                                      queue reads 1, took 16 workers' limit
//                                      to 20 and the slowdown check cut it
//                                      back, a cycle that kept overload_
//                                      bench's halved phase out of the band
//                                      for 6-10 s in some runs)
//     queue <  alpha x L            -> limit + L
//     otherwise                     -> unchanged (the target band)
//   an increase waits for a sample holding only calls admitted after the
//   last increase (one per round trip: with handling times of several
//   windows, +3 a window overshot by 9 calls before the queue showed);
//   limit = limit x (1 - smoothing) + new x smoothing, clamped to bounds.
// A drop in a sample that shows less queue (or in one sample alone: a
// window mean that high by chance seldom comes twice) is a call's own
// spread past a budget that only covered the mean handling -- a caller's
// choice, which a lower limit would not cure -- not a late call the limit
// made (limits_test.cc's AFewJustAdmittedCallsDoNotCollapseTheLimit: with
// every drop a loss, a tenth of the calls with such budgets held the limit
// at 2-17 of 32 workers).
// It settles where alpha x L <= queue <= beta x L: behind a saturated server
// of concurrency C, at C + 2..3 calls for limits under 100 with the
// defaults (within 20% of C from C = 15; Netflix's 3 and 6 settle at
// C + 3..6, 38% above a C of 16).
// The limit stays at bounds.initial during warm-up (no_load is learned).
// A probe's cost: half the limit for ~2 windows plus the regrowth (beta x L
// per window); at the defaults one every 30 x limit windows (5 min at a
// limit of 100 with 100 ms windows) and after each sustained fall.
//
// Thread-safety and lifetime: as every Limit (limit.h).
#ifndef REQCTX_LIMITS_VEGAS_LIMIT_H_
#define REQCTX_LIMITS_VEGAS_LIMIT_H_

#include <cstdint>

#include "limits/limit.h"
#include "limits/recent_max.h"
#include "limits/slowdown_check.h"

namespace reqctx::limits {

struct VegasOptions {
  LimitBounds bounds;
  // Multiples of L (see above): 0 < threshold <= alpha < beta.
  double threshold = 1;
  double alpha = 2;
  double beta = 3;
  // Share of the new limit taken per sample; in (0, 1].
  double smoothing = 1.0;
  // A probe every probe_multiplier x limit samples; >= 1.
  int probe_multiplier = 30;
  // A probe once decreases in a row cut the limit by this share; 0: never;
  // in [0, 1).
  double probe_after_fall = 0.25;
  // A slower server vs a longer queue (slowdown_check.h), judged before a
  // rise is cut: on a kRebaseline verdict no_load becomes the new handling time
  // without a probe's halving.
  SlowdownCheckOptions slowdown;

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
  SlowdownCheck check_;
  double limit_;
  static constexpr int kProbeSamples = 2;
  // Halves the limit and starts learning no_load from calls admitted from
  // `at` on.
  void StartProbe(absl::Time at);

  double no_load_ns_ = 0;  // 0: not known yet
  double last_ns_ = 0;
  // The last kNoLoadRun samples: a new no_load is the largest of them,
  // when it is under the old one.
  static constexpr int kNoLoadRun = 3;
  RecentMax<kNoLoadRun> recent_;
  // Sets no_load (a probe's or the slowdown check's reading).
  void SetNoLoad(double ns);
  // Gives `s` to the slowdown check; true if the check set the limit (the
  // sample is used up; its cut counts as no run of decreases).
  bool ApplyCheck(const Sample& s);
  absl::Time grew_at_ = absl::InfinitePast();  // the last increase
  double queue_ = 0;
  DropGate gate_;
  // A mostly-dropped window cut the limit since the last probe: grow by L,
  // never beta x L (cut calls hide the queue the fast growth reads).
  bool slow_growth_ = false;
  // Windows in a row without a dropped call; kCleanWindows of them end
  // slow_growth_ (the queue is gone: to the next probe -- 30 x limit
  // windows -- the limit regrew by L a window, 7-9 s from 64 to 128 in
  // limits_test.cc's RestoredAfterACutQueue; 3 windows let the cut queue
  // overshoot to 20 of 16).
  static constexpr int kCleanWindows = 5;
  int clean_windows_ = 0;
  int64_t samples_ = 0;
  int64_t since_probe_ = 0;
  int decreases_ = 0;         // in a row
  double fall_from_ = 0;      // the limit before this run of decreases
  int probe_left_ = 0;        // samples still to take; 0: not probing
  absl::Time probe_began_;    // the halving
  double probe_min_ns_ = 0;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_VEGAS_LIMIT_H_
