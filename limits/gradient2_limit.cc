#include "limits/gradient2_limit.h"

#include <algorithm>

#include <string>

namespace reqctx::limits {

absl::Status Gradient2Options::Validate(std::string_view prefix) const {
  if (absl::Status s = bounds.Validate(std::string(prefix) + ".bounds");
      !s.ok()) {
    return s;
  }
  auto bad = [&](std::string_view field, std::string_view why) {
    return BadOption(prefix, field, why);
  };
  if (!(smoothing > 0 && smoothing <= 1)) {
    return bad("smoothing", "must be in (0, 1]");
  }
  if (long_window < 1) return bad("long_window", "must be >= 1");
  if (!(queue_size >= 0)) return bad("queue_size", "must be >= 0");
  if (!(queue_share >= 0 && queue_share < 1)) {
    return bad("queue_share", "must be in [0, 1)");
  }
  if (!(max_long_ratio >= 1)) return bad("max_long_ratio", "must be >= 1");
  return slowdown.Validate(std::string(prefix) + ".slowdown");
}

Gradient2Limit::Gradient2Limit(const Gradient2Options& options)
    : options_(options),
      check_(options.slowdown),
      limit_(options.bounds.initial) {}

void Gradient2Limit::OnSample(const Sample& s) {
  check_.Seen(s);
  // A zero handling time would make the ratio infinite: count it as 1 ns.
  const double rtt = std::max(1.0, absl::ToDoubleNanoseconds(s.rtt));
  last_ns_ = rtt;
  ++samples_;
  const int warmup = options_.bounds.warmup_samples;
  if (samples_ <= std::max(warmup, 1)) {
    long_ns_ += (rtt - long_ns_) / static_cast<double>(samples_);
  } else {
    const double factor = 2.0 / (options_.long_window + 1);
    long_ns_ = long_ns_ * (1 - factor) + rtt * factor;
  }
  if (samples_ <= warmup) return;
  const double baseline = long_ns_;
  // Two windows in a row, not one: one window's mean under a spread of
  // handling times is 5% low often enough (1 in 15 at +-20% per call) to
  // hold the long average a few % under the handling time, and the limit's
  // climb with it.
  recent_.Add(rtt);
  long_ns_ = std::min(long_ns_, recent_.Max() * options_.max_long_ratio);
  if (s.inflight < limit_ / 2) return;
  if (ApplyCheckStep(check_.OnSample(s, limit_, absl::Nanoseconds(baseline)),
                     options_.bounds, limit_, [&](absl::Duration rtt) {
                       long_ns_ = std::max(1.0, absl::ToDoubleNanoseconds(rtt));
                       recent_.Fill(long_ns_);
                     })) {
    return;
  }
  // A window whose calls were nearly all late is a queue whatever the
  // handling times show (cut at their budgets, they hide it; a long average
  // learned under that queue hides it too): the gradient's floor.
  const double gradient = MostlyDropped(s)
                              ? 0.5
                              : std::clamp(long_ns_ / rtt, 0.5, 1.0);
  const double target = limit_ * gradient + Allowance();
  // Smoothing damps decreases (its purpose in Netflix's Gradient2); an
  // increase is taken whole (the target's fixed point is the same either
  // way): a gradient a hair under 1 (window means a few % apart) would
  // otherwise grow the limit by a fifth of the allowance per window.
  const double smoothing = target < limit_ ? options_.smoothing : 1.0;
  limit_ = options_.bounds.Clamp(limit_ * (1 - smoothing) +
                                 target * smoothing);
}

double Gradient2Limit::Allowance() const {
  return options_.queue_size + options_.queue_share * limit_;
}

LimitInputs Gradient2Limit::Inputs() const {
  LimitInputs in;
  in.long_rtt = absl::Nanoseconds(long_ns_);
  in.last_rtt = absl::Nanoseconds(last_ns_);
  in.queue_estimate = Allowance();
  in.samples = samples_;
  return in;
}

}  // namespace reqctx::limits
