// Limit: a concurrency-limit algorithm, apart from whoever enforces it
// (issue 23, section 1).
//
// A Limit turns samples of admitted calls -- when each started, how long it
// was handled, how many calls were in flight when it started, whether it was
// "dropped" -- into a concurrency limit. It knows nothing of gRPC, queues or
// clocks: every time comes in with the sample, so an algorithm is tested by
// feeding it synthetic samples on a fake timeline (limits_test.cc).
//
// The algorithms (one file each) follow the TCP congestion-control family
// Netflix's concurrency-limits library brought to RPC servers:
//   fixed_limit.h  a constant (the operator's number);
//   aimd_limit.h   additive increase, multiplicative decrease on drops or
//                  on a handling time above a threshold (loss-based);
//   gradient2_limit.h  long-term vs short-term handling-time ratio, with
//                  smoothing and a queue-size allowance (Netflix Gradient2);
//   vegas_limit.h  queue estimate from the minimum handling time (TCP Vegas).
// windowed_limit.h aggregates the samples of a time window into one before
// they reach an algorithm (as Netflix's WindowedLimit), slowdown_check.h
// tells a slower server from a longer queue before an algorithm cuts for a
// rise in handling time, and limit_options.h names, validates and builds
// them from one options value.
//
// What the enforcer reports (Outcome), as the literature does: a call that
// completed is a kSuccess sample; a call that ended by its caller's cancel
// is kIgnore (its handling time says nothing about the server; Netflix's
// gRPC server interceptor ignores cancels); a call still running when its
// own deadline passed is kDropped (its handling time is a lower bound, and a
// deadline hit is the server-side analogue of a TCP loss: AIMD and Vegas back
// off, Gradient2 uses its handling time like any other).
//
// Thread-safety: a Limit is NOT safe for concurrent use: its owner
// serialises calls (the LoadShedder calls it under its own mutex). Current()
// and Inputs() are cheap reads. No Limit starts a thread or a timer.
// Lifetime: plain objects, owned by their enforcer; no callbacks.
#ifndef REQCTX_LIMITS_LIMIT_H_
#define REQCTX_LIMITS_LIMIT_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace reqctx::limits {

// How an admitted call's slot was given back.
enum class Outcome {
  kSuccess,  // the call's handling ended normally (any status of its own)
  kIgnore,   // not a sample (canceled by its caller, or no measurement)
  kDropped,  // it was still being handled when its own deadline passed
};

// One admitted call, reported when its slot is given back.
// See Sample::dropped_share.
inline constexpr double kQueueDropShare = 0.75;

struct Sample {
  absl::Time start;      // when the call was admitted (got its slot); for a
                         // window (windowed_limit.h), its earliest admission
  absl::Duration rtt;    // handling time: admission to the end of its work
                         // (a window: the mean)
  int inflight = 0;      // calls holding a slot when it was admitted (itself
                         // included; a window: the most)
  bool dropped = false;  // Outcome::kDropped
  // What its deadline left the call when it reached the enforcer (before
  // any wait in the enforcer's own queue: the workload's budget);
  // InfiniteDuration: no deadline (a window: the mean over its calls, each
  // capped, a call without a deadline counting as the cap, or
  // InfiniteDuration if none had one: windowed_limit.h). Tight budgets
  // shrink AIMD's probing step (QueueShare).
  absl::Duration budget = absl::InfiniteDuration();
  // When the sample was taken: a window's close; InfinitePast: start + rtt
  // (one call).
  absl::Time taken = absl::InfinitePast();
  // A window: the share of its calls that were dropped (WindowedLimit);
  // 0 when not known (one call fed directly). AIMD (with a timeout) and
  // Vegas read a drop as a loss, whatever the handling time shows, when at
  // least kQueueDropShare of a window's calls were dropped: a queue makes
  // nearly every call late, and cuts its late calls' handling times at
  // their budgets, which can hide it from the handling time.
  double dropped_share = 0;
  absl::Time end() const {
    return taken == absl::InfinitePast() ? start + rtt : taken;
  }
};

// Whether at least kQueueDropShare of `s`'s calls were dropped: a queue
// whatever the handling time shows (Sample::dropped_share).
inline bool MostlyDropped(const Sample& s) {
  return s.dropped_share >= kQueueDropShare;
}

// Whether a sample's drop is a loss (late calls the limit made) or a call's
// own spread past a budget that only covered the mean (a caller's choice,
// which a lower limit would not cure): a loss when this sample and the one
// before show a queue by the algorithm's own reading of the handling time
// (a queue raises every call's handling time and lasts; a window mean that
// high by chance seldom comes twice in a row), or when the sample is
// MostlyDropped (a queue cuts its late calls at their budgets, which can
// hide it from the handling time). Without the gate a tenth of the calls
// with such budgets held the limit at 2-17 of 32 workers
// (limits_test.cc's AFewJustAdmittedCallsDoNotCollapseTheLimit).
// One per limit, fed every sample; not thread-safe (as its Limit).
class DropGate {
 public:
  // Whether `s` holds a loss; `queued`: `s` shows a queue.
  bool Loss(const Sample& s, bool queued) {
    const bool lasts = (queued && queued_before_) || MostlyDropped(s);
    queued_before_ = queued;
    return s.dropped && lasts;
  }
  // A sample that shows no queue and is not judged (Loss not called).
  void NoQueue() { queued_before_ = false; }

 private:
  bool queued_before_ = false;  // the sample before showed a queue
};

// What an algorithm bases its limit on, for metrics (zero when the
// algorithm has no such input).
struct LimitInputs {
  absl::Duration min_rtt = absl::ZeroDuration();   // Vegas' no-load RTT
  absl::Duration long_rtt = absl::ZeroDuration();  // Gradient2's baseline
  absl::Duration last_rtt = absl::ZeroDuration();  // latest (window) RTT
  double queue_estimate = 0;  // Vegas' queue / Gradient2's allowance
  double queue_share = 1;     // QueueShare of the latest sample
  int64_t samples = 0;        // samples taken (warm-up included)
};

// The bounds every adaptive algorithm shares.
struct LimitBounds {
  int initial = 20;  // limit until warm-up ends; in [min, max]
  int min = 1;       // >= 1
  int max = 1000;    // >= min
  // Samples the algorithm only learns from (its baseline RTT) before it
  // moves the limit away from `initial`; >= 0. Each is usually a window of
  // >= 100 ms (windowed_limit.h), up to ~2 round trips when the calls end in
  // batches: 5 is about a second at the initial limit (10 held a server of
  // 32 workers at 20 for 1.6 s, 6% of overload_bench's first 10 s).
  int warmup_samples = 5;

  // InvalidArgument naming "<prefix>.<field>" if out of range.
  absl::Status Validate(std::string_view prefix) const;
  // `v` clamped to [min, max] (the algorithm's own range, not a silent fix
  // of options: options are validated).
  double Clamp(double v) const;
};

// The share of its probing step (the calls an algorithm adds above the
// server's concurrency while it looks for more) the calls' deadlines can
// afford. A call admitted behind a full server waits for a worker, and when
// calls end in batches (a slow dependency answering every worker at about
// the same time) that wait is up to one whole handling time: a queue costs
// nothing while the calls' budget (Sample::budget) covers twice the
// no-queue handling time `baseline`, and makes every call in it late once
// the budget covers only the handling itself. So:
//   share = (budget - baseline) / baseline, clamped to [kMinQueueShare, 1];
// 1 when `budget` is infinite (no deadline) or `baseline` is zero (not
// learned yet). The budgets come from the calls the server admitted -- a
// caller can only shrink the step (never the limit itself) by sending
// deadlines just long enough to be admitted, in proportion to its share of
// the calls (windowed_limit.h).
// Only AIMD uses it (aimd_limit.h: past the point where a queue shows; a
// whole call per sample below it). Gradient2's allowance and Vegas' band
// also hold the limit up against the handling time's noise: shrunk by the
// share, a +-30% spread of handling times took them to their minimum in
// limits_test.cc's model (its disabled tests keep the repro).
inline constexpr double kMinQueueShare = 0.1;
double QueueShare(absl::Duration budget, absl::Duration baseline);

// InvalidArgument "<prefix>.<field>: <why>": how every option check here
// names the bad field.
absl::Status BadOption(std::string_view prefix, std::string_view field,
                       std::string_view why);

class Limit {
 public:
  virtual ~Limit() = default;
  // The limit now: >= 1.
  virtual int Current() const = 0;
  // Feeds one admitted call's sample (see Outcome for `dropped`).
  virtual void OnSample(const Sample& s) = 0;
  // The algorithm's inputs, for metrics.
  virtual LimitInputs Inputs() const = 0;
  // Stable lower-case name: "fixed", "aimd", "gradient", "vegas".
  virtual std::string_view Name() const = 0;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_LIMIT_H_
