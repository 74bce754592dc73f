// WindowedLimit: feeds an algorithm one sample per time window instead of
// one per call (Netflix's WindowedLimit), so a limit moves at a rate set in
// time, not in calls, and single outliers are averaged away.
//
// A window opens at its first sample's end time and closes at the first
// sample that ends at least `min_time` after it opened once it holds
// `min_samples` samples, or at least `max_time` after (a window with fewer
// than `min_samples` samples is then discarded: too little evidence --
// unless it holds at least as many samples as the current limit, a call
// per slot: a limit of a few calls with long handling times never fills
// `min_samples`, and would never move again). A
// closed window becomes one sample for the wrapped limit: start = the
// earliest admission among its calls (so an algorithm can tell a window
// holding calls admitted before its last change: aimd_limit.h), taken = the
// close, rtt = the mean handling time, inflight = the most calls in flight
// seen, budget = the mean budget of its calls (below; InfiniteDuration if
// none had a deadline),
// dropped = whether any call was dropped while the limit was in use (at
// least half of it in flight), or, when it was not, whether more than
// `drop_share` of its calls were.
//
// The budget's mean counts each call's budget up to a cap, twice the
// previous window's mean handling time, and a call without a deadline as
// the cap. QueueShare (limit.h) is 1 from a budget of twice the no-queue
// handling time on, so a longer budget affords no more waiting. Uncapped,
// one call with a far deadline (a batch job's hour, or a `grpc-timeout` of
// 99999999H: 11,400 years) outweighed every other call of its window, and
// the calls whose deadlines could not afford a queue got the whole
// allowance's queue (mean 1 h / 100 calls = 36 s: share 1 for 99 calls of
// 100 ms budgets on 80 ms of handling); and with the calls without a
// deadline left out, a tenth of the calls with tight deadlines (a hostile
// caller's, among callers that set none) made the share 0.1 for all. So
// the window's share falls with the fraction of its calls that cannot wait
// (half of them: about half), whatever the others' deadlines. The first
// window (no cap yet, or a previous mean of zero) takes the plain mean of
// the calls that had a deadline; a sum that saturates there (absl::
// Duration's infinity) reads as no deadline: share 1.
//
// Why not any drop: a call still running at its own deadline is reported
// dropped (limit.h), and a few callers that send expensive requests with
// short deadlines make such calls on a server that is neither slow nor
// full; with "any drop" each of them marks a whole window dropped and a
// handful a second hold AIMD and Vegas near their minimum, although the
// limit (far above the calls in flight) made no call late and lowering it
// frees nothing. A server at its limit keeps "any drop" (the brake that
// holds AIMD and Vegas near capacity); one below it needs a share of its
// calls dropped. The handling time of every call, dropped or not, goes
// into the window's mean.
//
// Thread-safety and lifetime: as every Limit (limit.h).
#ifndef REQCTX_LIMITS_WINDOWED_LIMIT_H_
#define REQCTX_LIMITS_WINDOWED_LIMIT_H_

#include <memory>

#include "limits/limit.h"

namespace reqctx::limits {

struct WindowOptions {
  absl::Duration min_time = absl::Milliseconds(100);  // > 0
  absl::Duration max_time = absl::Seconds(1);         // >= min_time
  int min_samples = 10;                               // >= 1
  // Below half its limit in flight, a window is dropped only when more than
  // this share of its calls were; in [0, 1); 0: any drop (Netflix's
  // WindowedLimit).
  double drop_share = 0.1;

  // InvalidArgument naming "<prefix>.<field>".
  absl::Status Validate(std::string_view prefix) const;
};

class WindowedLimit final : public Limit {
 public:
  // `inner` not null; `options` valid (Validate).
  WindowedLimit(std::unique_ptr<Limit> inner, const WindowOptions& options);
  int Current() const override { return inner_->Current(); }
  void OnSample(const Sample& s) override;
  LimitInputs Inputs() const override { return inner_->Inputs(); }
  std::string_view Name() const override { return inner_->Name(); }

 private:
  const std::unique_ptr<Limit> inner_;
  const WindowOptions options_;
  bool open_ = false;
  absl::Time opened_;
  absl::Time earliest_;  // earliest start in the open window
  absl::Duration sum_ = absl::ZeroDuration();
  int count_ = 0;
  int max_inflight_ = 0;
  int dropped_ = 0;  // dropped calls in the open window
  absl::Duration budget_sum_ = absl::ZeroDuration();  // finite budgets,
                                                      // capped
  int budgeted_ = 0;   // calls counted in budget_sum_ (open window)
  int deadlined_ = 0;  // calls with a finite budget in the open window
  // Cap of each budget in the open window: 2 x the last closed window's
  // mean handling time (InfiniteDuration: none yet).
  absl::Duration budget_cap_ = absl::InfiniteDuration();
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_WINDOWED_LIMIT_H_
