#include "limits/vegas_limit.h"

#include <algorithm>
#include <cmath>

#include <string>

namespace reqctx::limits {

absl::Status VegasOptions::Validate(std::string_view prefix) const {
  if (absl::Status s = bounds.Validate(std::string(prefix) + ".bounds");
      !s.ok()) {
    return s;
  }
  auto bad = [&](std::string_view field, std::string_view why) {
    return BadOption(prefix, field, why);
  };
  if (!(threshold > 0)) return bad("threshold", "must be > 0");
  if (!(alpha >= threshold)) return bad("alpha", "must be >= threshold");
  if (!(beta > alpha)) return bad("beta", "must be > alpha");
  if (!(smoothing > 0 && smoothing <= 1)) {
    return bad("smoothing", "must be in (0, 1]");
  }
  if (probe_multiplier < 1) return bad("probe_multiplier", "must be >= 1");
  if (!(probe_after_fall >= 0 && probe_after_fall < 1)) {
    return bad("probe_after_fall", "must be in [0, 1)");
  }
  return slowdown.Validate(std::string(prefix) + ".slowdown");
}

VegasLimit::VegasLimit(const VegasOptions& options)
    : options_(options),
      check_(options.slowdown),
      limit_(options.bounds.initial) {}

void VegasLimit::StartProbe(absl::Time at) {
  since_probe_ = 0;
  decreases_ = 0;
  probe_began_ = at;
  probe_left_ = kProbeSamples;
  probe_min_ns_ = 0;
  slow_growth_ = false;
  check_.Reset();
  limit_ = options_.bounds.Clamp(std::floor(limit_ / 2));
}

void VegasLimit::SetNoLoad(double ns) {
  no_load_ns_ = ns;
  recent_.Fill(ns);  // the next minimum takes a whole run again
}

bool VegasLimit::ApplyCheck(const Sample& s) {
  if (!ApplyCheckStep(
          check_.OnSample(s, limit_, absl::Nanoseconds(no_load_ns_)),
          options_.bounds, limit_, [&](absl::Duration rtt) {
            SetNoLoad(std::max(1.0, absl::ToDoubleNanoseconds(rtt)));
          })) {
    return false;
  }
  // The check's cut is no run of decreases (no probe for it).
  decreases_ = 0;
  return true;
}

void VegasLimit::OnSample(const Sample& s) {
  check_.Seen(s);
  const double rtt = std::max(1.0, absl::ToDoubleNanoseconds(s.rtt));
  last_ns_ = rtt;
  ++samples_;
  if (probe_left_ > 0) {
    // Draining: only calls admitted at the halved limit show the no-load
    // handling time.
    // A mostly-dropped window's handling times are its budgets (cut at
    // the deadlines), no no-load time: learned, a slowdown past every
    // budget left a no-load time of the budget, and after it every faster
    // window went to the minimum's run, none to the limit (Vegas held 2 of
    // 8 cores for 3 s in admission_flood_test.cc's
    // DISABLED_SlowdownPastEveryBudgetUnderOverload).
    if (s.start < probe_began_ || MostlyDropped(s)) return;
    probe_min_ns_ = probe_min_ns_ == 0 ? rtt : std::min(probe_min_ns_, rtt);
    if (--probe_left_ == 0) SetNoLoad(probe_min_ns_);
    return;
  }
  // No probe while the drop check looks or holds (drop_check.h): its look
  // is no limit of Vegas' own to probe from, and a probe would end the look
  // and leave the limit there.
  if (samples_ > options_.bounds.warmup_samples && !check_.holding_drops() &&
      (++since_probe_ >= options_.probe_multiplier * limit_ ||
       (options_.probe_after_fall > 0 && decreases_ > 0 &&
        limit_ <= fall_from_ * (1 - options_.probe_after_fall)))) {
    StartProbe(s.end());
    return;
  }
  // A new minimum needs kNoLoadRun samples in a row under the old one: the
  // minimum of single window means drifts to the low tail of their spread
  // (9% under the handling time in a slow phase of +-20% per call: a queue
  // estimate of 3 calls at 32, and the limit walked down to 22-26 of 32
  // workers in limits_test.cc's model; with runs of 3: 28-37).
  recent_.Add(rtt);
  const double run = recent_.Max();
  if (no_load_ns_ == 0 || rtt < no_load_ns_) {
    gate_.NoQueue();
    // A look of the drop check (drop_check.h) ends on its first window
    // mostly in time: a server that recovered during a look at a few
    // calls, whose windows come faster than the old minimum, is read here
    // too (returned before it, a look at 2 calls stayed 1.1-1.6 s after
    // the recovery with +-20% jitter in limits_test.cc's model).
    if (check_.holding_drops() && ApplyCheck(s)) {
      no_load_ns_ = std::min(no_load_ns_, run);
      return;
    }
    // Under half the baseline, a run of kNoLoadRun samples long: the server
    // changed (a slow phase ended), and this sample may still hold a queue:
    // probe it. (Half, not less: a mix of fast and slow calls moves window
    // means by less, and each probe costs the server half its limit for a
    // few windows. A run, not one sample: with the minimum taking runs,
    // one fast window of a noisy real server -- 2 ms handlers on a loaded
    // machine -- set off probes that halved the limit for good in
    // admission_flood_test.)
    if (no_load_ns_ != 0 && options_.probe_after_fall > 0 &&
        samples_ > options_.bounds.warmup_samples &&
        run < no_load_ns_ / 2) {
      StartProbe(s.end());
      return;
    }
    if (no_load_ns_ == 0) {
      SetNoLoad(rtt);
    } else {
      no_load_ns_ = std::min(no_load_ns_, run);
    }
    return;
  }
  queue_ = std::ceil(limit_ * (1 - no_load_ns_ / rtt));
  const double log =
      std::max(1.0, std::floor(std::log10(std::max(limit_, 1.0))));
  // A drop is a loss by the DropGate, a queue being at least alpha's.
  const bool loss = gate_.Loss(s, queue_ >= options_.alpha * log);
  // kCleanWindows windows in a row without a late call: the queue that cut
  // calls hid is gone; fast growth again.
  clean_windows_ = s.dropped ? 0 : clean_windows_ + 1;
  if (clean_windows_ >= kCleanWindows) slow_growth_ = false;
  if (samples_ <= options_.bounds.warmup_samples) return;
  double next;
  if (!loss && s.inflight * 2 < limit_) return;
  if (ApplyCheck(s)) return;
  // Nearly every call late: a queue far beyond beta's that cut handling
  // times hide; a tenth of the limit per window, not L.
  const double step =
      s.dropped && MostlyDropped(s) ? std::max(log, 0.1 * limit_) : log;
  if (queue_ > options_.beta * log) {
    if (decreases_++ == 0) fall_from_ = limit_;
    next = limit_ - log;
  } else if (loss) {
    // Late calls behind alpha's queue: a decrease that ends a run toward
    // a probe (the handling time does not question the baseline; counted,
    // a few callers whose budgets only cover the mean set off probes that
    // halved the limit to 10-12 of 32 in limits_test.cc).
    decreases_ = 0;
    next = limit_ - step;
    if (step > log) slow_growth_ = true;
  } else if (queue_ < options_.alpha * log) {
    decreases_ = 0;
    // One increase per round trip: a sample holding calls admitted before
    // the last increase cannot show its queue yet (with handling times of
    // several windows, +3 a window overshot by 9 calls and the limit swung
    // between 0.8 C and 1.3 C in limits_test.cc's model).
    if (s.start < grew_at_) return;
    grew_at_ = s.end();
    // Fast growth stops at the band's top as this sample puts it (beta x L
    // less its queue; vegas_limit.h).
    next = limit_ + (queue_ <= options_.threshold * log && !slow_growth_
                         ? std::max(log, options_.beta * log - queue_)
                         : log);
  } else {
    decreases_ = 0;
    return;
  }
  next = options_.bounds.Clamp(next);
  limit_ = options_.bounds.Clamp(limit_ * (1 - options_.smoothing) +
                                 next * options_.smoothing);
}

LimitInputs VegasLimit::Inputs() const {
  LimitInputs in;
  in.min_rtt = absl::Nanoseconds(no_load_ns_);
  in.last_rtt = absl::Nanoseconds(last_ns_);
  in.queue_estimate = queue_;
  in.samples = samples_;
  return in;
}

}  // namespace reqctx::limits
