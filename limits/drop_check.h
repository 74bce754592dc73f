// DropCheck: tells a server slower than its callers' budgets from a queue
// when nearly every call is late (issue 23).
//
// A window whose calls were nearly all late (limit.h's MostlyDropped) is
// read as a queue: cut at their budgets, late calls hide a queue from the
// handling time, so the algorithms cut on the late share alone. But a
// server that got slower than every caller's budget (a dependency x3 for
// callers whose deadlines are 2 x the work) makes every call late at any
// limit, queue or not: there the cuts refuse calls to no end, and leave the
// limit at a fraction of the server's concurrency when the slowdown ends
// (3-6 of 8 cores, a third to a half of the calls served in the second
// after: admission_flood_test.cc's SlowdownPastEveryBudget). The two differ
// in one way: fewer calls in flight shorten a queue's waits, so its late
// share falls; a slower server's stays. So, as SlowdownCheck does for the
// handling time, the check cuts and looks, on the late share instead:
//   1. A mostly-dropped window whose calls were admitted at a concurrency
//      (Sample::inflight, the window's most) the server just handled in
//      time -- at most kInflightSpread x the in-flight of the last window
//      with under 1 - kQueueDropShare of its calls late -- starts a check,
//      when the limit held no call back (in-flight at least a call under
//      it). Otherwise it is the algorithm's to cut: calls the server never
//      handled in time are a queue (a queue from the start, where no window
//      was ever in time, is cut as before), and so are calls the limit held
//      back (a limit that made the queue looks the same, and a look that
//      does not clear it -- 32 workers halved to 16 under budgets of 1.02 x
//      the work: the look at 0.7 x 32 still queues -- would hold it; a look
//      once the algorithm's brake reached half the concurrency last handled
//      in time was tried, and held a real queue in a CI run: on a loaded
//      machine a few windows read 64 in flight in time on 8 cores, and the
//      look at 0.7 x 31 still queued).
//   2. cut: the limit L0 is held at (1 - cut) x the window's in-flight
//      (`cut` is SlowdownCheckOptions::cut) until kReadingSamples samples
//      holding only calls admitted after the cut give the mean late share.
//   3. verdict: a share under kQueueDropShare is a queue the cut shortened:
//      the limit goes to the smaller of L0 and the late window's in-flight,
//      and the algorithm brakes on from there while windows stay mostly
//      late. Still mostly late: the server is slower than the budgets, and
//      no limit helps; the limit goes back to L0 and is held there while
//      windows stay mostly late. Every kRecheckSamples held samples the
//      check looks again, each time at (1 - cut) x the cut before, down to
//      one call: a server that lost most of its workers is a queue one cut
//      does not clear.
// A window not mostly late ends a hold (the algorithm's own rule again).
// The cost: a queue at a concurrency the server just handled in time is
// braked two windows later; a server slower than the budgets serves
// kReadingSamples windows at the cut, and again at every re-check, while no
// call of its could be in time anyway; a server that lost more than 1 -
// cut of its workers with the limit not holding calls back is read as
// slower, and braked only at a re-check. Under overload (the limit holding
// calls back) a slowdown past every budget still brakes the limit
// (admission_flood_test.cc's DISABLED_SlowdownPastEveryBudgetUnderOverload).
//
// Thread-safety: not safe for concurrent use (its owner, a Limit, is not).
// Lifetime: a plain value owned by a SlowdownCheck.
#ifndef REQCTX_LIMITS_DROP_CHECK_H_
#define REQCTX_LIMITS_DROP_CHECK_H_

#include <optional>

#include "absl/time/time.h"
#include "limits/limit.h"

namespace reqctx::limits {

// What the algorithm does with one sample: the limit to hold, or (no
// value) the algorithm's own rule.
class DropCheck {
 public:
  // Late shares are read as the mean of this many samples (windows).
  static constexpr int kReadingSamples = 2;
  // Held samples between two looks while the server stays slower than the
  // budgets (about 2 s of 100 ms windows).
  static constexpr int kRecheckSamples = 20;
  // A late window's in-flight up to this many times the last in-time
  // window's is a concurrency the server just handled: a late call holds
  // its slot until its handler ends, past its client's deadline, while the
  // client's next call is admitted (8 closed-loop callers read 9-11 in
  // flight in late windows, 8 in time).
  static constexpr double kInflightSpread = 1.5;
  // `cut` in (0, 0.5]; 0: no check (every mostly-late window is the
  // algorithm's, as before).
  explicit DropCheck(double cut) : cut_(cut) {}
  // Every sample `s` the algorithm is given, before any rule of its own
  // may skip it: a window with under 1 - kQueueDropShare of its calls late
  // is a concurrency (its in-flight) the server handles in time.
  void Seen(const Sample& s);
  // One sample `s` of an algorithm whose limit is `limit` (also given to
  // Seen): the limit to hold (the sample is used up), or nullopt.
  std::optional<double> OnSample(const Sample& s, double limit);
  // Forgets a check or hold under way (the algorithm moved the limit on its
  // own); keeps the concurrency last handled in time.
  void Reset() { state_ = State::kIdle; }
  // Whether a check or hold is under way.
  bool busy() const { return state_ != State::kIdle; }
  // Whether it sets the limit now (a look, or a hold past the budgets).
  bool holding() const {
    return state_ == State::kCut || state_ == State::kPastBudgets;
  }

 private:
  enum class State { kIdle, kCut, kQueue, kPastBudgets };
  // Holds the limit at `level` (at least 1), reading calls admitted from
  // `s`'s end on.
  double StartCut(const Sample& s, double level);
  const double cut_;
  State state_ = State::kIdle;
  int in_time_ = 0;     // in-flight of the last window mostly in time
  double l0_ = 0;       // the limit when the late windows came
  int late_inflight_ = 0;  // their in-flight
  double level_ = 0;    // the cut being looked at
  absl::Time since_;    // calls admitted from then on count
  double share_sum_ = 0;
  int shares_ = 0;
  int held_ = 0;        // samples held since the last look
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_DROP_CHECK_H_
