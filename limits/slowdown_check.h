// SlowdownCheck: tells a slower server from a longer queue before a limit
// shrinks for it (issue 23, section 2, scenario 3).
//
// A latency-based limit reads any rise in handling time as queueing and
// cuts the limit. When a dependency gets slower (handling time x5, the same
// workers) that is wrong: the server's concurrency is unchanged, and a limit
// cut to a fraction of it throws away the capacity left. The two differ in
// one way only: cutting the limit shortens a queue, not a slower handler.
// So, as TCP Vegas and BBR re-measure their base RTT, the check cuts a
// little and looks:
//   1. rise: a sample whose handling time exceeds `rise` x the algorithm's
//      baseline (its no-queue estimate) starts a check; the limit L0 is held
//      (no decrease) until kReadingSamples samples holding only calls
//      admitted after that (Sample::start) give the handling time r0 at L0
//      (their mean); if r0 is no rise, the check ends there (one noisy
//      window: a check costs a cut);
//   2. cut: the limit is set to (1 - cut) x L0 and held until kReadingSamples
//      samples holding only calls admitted after the cut give r1;
//   3. verdict: while the cut limit still queues (L1 = (1 - cut) x L0 above
//      the server's concurrency C) handling time falls in proportion, r1 =
//      (1 - cut) x r0; a server that got slower and was at L0 <= C keeps r1
//      = r0, and one at L0 a little above C (an algorithm's band above
//      capacity) gets r1 = r0 x C / L0. So r1 >= (1 - 3 cut / 4) x r0 (for
//      the default cut, 0.775: any L0 up to 1.29 C) with r1 still a rise
//      (above rise x the baseline) says the server got slower (kRebaseline:
//      the algorithm takes r1, measured without a queue, as its new
//      baseline, and the limit goes back to L0 x min(1, r1 / r0): L0 when
//      it was within the server's concurrency, about C when it was above
//      -- the queue it had would make calls late that can no longer afford
//      to wait). When the cut took r1 back under the rise (not a slower
//      server: a queue of up to 29%, L0 up to 1.29 C, e.g. Vegas regrowing
//      past C after a probe, that the cut removed) the limit goes to
//      L0 x r1 / r0, the server's concurrency by Little's law (kHold, the
//      check over; read as a slower server, the limit went back to L0 and
//      the check ran again every few round trips: Vegas hovered in
//      [0.9 C, 1.4 C] after overload_bench's capacity halving; left at the
//      cut, a third of the server idled until the algorithm climbed back).
//      Otherwise (r1 fell with the limit) it is a queue (kPass from then
//      on: the algorithm cuts as it would have) until a sample shows no
//      rise.
//      While a confirmed queue lasts, once the algorithm's own cuts have
//      halved the limit and the rise is still there, the check runs again
//      from that limit: a verdict taken on a noisy window, or at an L0 so
//      far above C that the cut still queued, read a slower server as a
//      queue and let the limit sink to its minimum for the whole slow
//      phase (gradient 44 -> 3 under a +-20% spread of handling times in
//      limits_test.cc's model); a real queue is confirmed again, at the
//      cost of two round trips per halving. A slower-server verdict of such
//      a re-check returns the limit to the first check's L0 x r1 / r0 (its
//      estimate of C), not to the sunk limit it started from -- while r1 is
//      no rise over that check's r0 (above it, the server got slower after
//      that check, whose L0 is then no estimate of C: 32 -> 16 workers, then
//      handling x5, returned the limit to 2.2 C).
//      An r1 above rise x r0 (the server changed under the cut) is no
//      verdict: r0 is read again at L0, as a first check.
// The other way, a handling time under half the baseline (a slow phase
// ended) may still hold the queue of a limit learned on the slow server: the
// limit is cut to (1 - cut) x L0 for one round trip, and the first sample
// holding only calls admitted after the cut is the new baseline
// (kRebaseline, the limit back to L0) -- not a baseline that keeps that
// queue and lets the limit settle above capacity. "Half" is also read
// against the handling time of the last slower-server verdict: a slow phase
// that ends over a few windows (handling times spread) walks Gradient2's
// baseline down with it, no sample is ever under half the baseline, and the
// limit kept the slow phase's queue (1.35-1.5 C for 32 workers in
// limits_test.cc's model, and the next slowdown's check, at L0 > 1.29 C,
// then read a queue).
// The cost: one round trip at L0 and one at (1 - cut) x L0 before a real
// queue is cut further, and, for a slower server, one round trip at
// (1 - cut) x L0. The cut is deep enough that L1 falls below C when L0 is in
// an algorithm's usual band (up to 1.2 C): a shallower one cannot tell a
// small queue of a slower server from a big one. A slower server that also
// lost workers is read as slower only if the cut left no queue; what remains
// is the algorithm's to find.
// A window whose calls were nearly all late hides its handling time (cut at
// the budgets): it goes to the DropCheck first (drop_check.h), which tells
// a queue from a server slower than the budgets by the late share instead,
// and otherwise ends a check under way (the algorithm cuts).
//
// Thread-safety: not safe for concurrent use (its owner, a Limit, is not).
// Lifetime: a plain value owned by its algorithm.
#ifndef REQCTX_LIMITS_SLOWDOWN_CHECK_H_
#define REQCTX_LIMITS_SLOWDOWN_CHECK_H_

#include <optional>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "limits/drop_check.h"
#include "limits/limit.h"

namespace reqctx::limits {

struct SlowdownCheckOptions {
  // Share of the limit cut to look; in [0, 0.5]; 0: no check (every rise is
  // queueing, the algorithm's literature behaviour).
  double cut = 0.3;
  // A handling time above rise x the baseline starts a check; > 1.
  double rise = 1.25;

  // InvalidArgument naming "<prefix>.<field>".
  absl::Status Validate(std::string_view prefix) const;
};

// What the algorithm does with one sample (a value: SlowdownCheck::OnSample).
struct CheckStep {
  enum class Kind {
    kPass,    // no check, or a queue confirmed: the algorithm's own rule
    kHold,    // a check is under way, or ended setting the limit: the limit
              // is `limit`, nothing else
    // the server's own handling time changed: baseline = `rtt`, limit =
    // `limit`
    kRebaseline,
  };
  Kind kind = Kind::kPass;
  double limit = 0;
  absl::Duration rtt = absl::ZeroDuration();
};

// What every algorithm does with a step (one place for it): kPass returns
// false (the algorithm's own rule goes on with the sample); kRebaseline
// calls `rebaseline(step.rtt)` (the algorithm takes the new handling time
// as its baseline); then kHold and kRebaseline set `limit` to step.limit,
// clamped to `bounds`, and return true (the sample is used up).
// `rebaseline` must not throw.
bool ApplyCheckStep(const CheckStep& step, const LimitBounds& bounds,
                    double& limit,
                    absl::FunctionRef<void(absl::Duration)> rebaseline);

class SlowdownCheck {
 public:
  // r0 and r1 are each the mean of this many samples (windows, each
  // holding only calls admitted after the step before): one window's mean
  // of ~10 calls spread +-20% is off by ~4%, enough to read a slower server
  // at 1.1 C as a queue (r1 / r0 under 0.775) in 1 run of 4 in
  // limits_test.cc's model.
  static constexpr int kReadingSamples = 2;
  // `options` must be valid (Validate).
  explicit SlowdownCheck(const SlowdownCheckOptions& options)
      : options_(options), drops_(options.cut) {}
  // One sample `s` of an algorithm whose limit is `limit` and whose baseline
  // (no-queue handling time) is `baseline` (zero: none yet; no check).
  CheckStep OnSample(const Sample& s, double limit, absl::Duration baseline);
  // Every sample the algorithm is given, first (DropCheck::Seen).
  void Seen(const Sample& s) { drops_.Seen(s); }
  // Forgets a check under way (the algorithm moved the limit on its own,
  // e.g. a Vegas probe).
  void Reset() {
    state_ = State::kIdle;
    drops_.Reset();
  }
  // Whether the drop check looks or holds the limit (DropCheck::holding).
  bool holding_drops() const { return drops_.holding(); }
  // Whether a check is under way (holding the limit).
  bool checking() const {
    return state_ == State::kMeasuring || state_ == State::kCut ||
           state_ == State::kFastCut || drops_.busy();
  }

 private:
  enum class State { kIdle, kMeasuring, kCut, kQueueing, kFastCut };
  CheckStep Hold(double limit) const {
    return {CheckStep::Kind::kHold, limit, absl::ZeroDuration()};
  }
  // Reads r0 at limit `l0` from calls admitted from `at` on (kMeasuring);
  // `first`: a first check of a rise (its l0 and r0 are where a slower-
  // server verdict returns the limit to), else a re-check that keeps them.
  CheckStep StartMeasuring(double l0, absl::Time at, bool first);
  struct Reading {
    absl::Duration sum = absl::ZeroDuration();
    int n = 0;
    // Adds `rtt`; the mean once kReadingSamples are in (and starts over).
    std::optional<absl::Duration> Add(absl::Duration rtt);
  };
  const SlowdownCheckOptions options_;
  // Nearly every call late: a queue, or a server slower than the budgets?
  DropCheck drops_;
  State state_ = State::kIdle;
  Reading reading_;                // r0 or r1 being read
  double l0_ = 0;                  // the limit when the rise was seen
  absl::Time since_;               // calls admitted from then on count
  absl::Duration r0_;              // handling time at l0_
  // The limit and r0 of the first check of this rise (a re-check keeps
  // them): where a slower-server verdict returns the limit to.
  double first_l0_ = 0;
  absl::Duration first_r0_ = absl::ZeroDuration();
  // The handling time of the last slower-server verdict (kCut's
  // kRebaseline); zero: none since the last fall.
  absl::Duration slow_ = absl::ZeroDuration();
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_SLOWDOWN_CHECK_H_
