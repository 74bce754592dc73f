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
  return absl::OkStatus();
}

VegasLimit::VegasLimit(const VegasOptions& options)
    : options_(options), limit_(options.bounds.initial) {}

void VegasLimit::OnSample(const Sample& s) {
  const double rtt = std::max(1.0, absl::ToDoubleNanoseconds(s.rtt));
  last_ns_ = rtt;
  ++samples_;
  if (++since_probe_ >= options_.probe_multiplier * limit_ &&
      samples_ > options_.bounds.warmup_samples) {
    // Probe: forget the baseline; this sample is the new one.
    since_probe_ = 0;
    no_load_ns_ = rtt;
    return;
  }
  if (no_load_ns_ == 0 || rtt < no_load_ns_) {
    no_load_ns_ = rtt;
    return;
  }
  queue_ = std::ceil(limit_ * (1 - no_load_ns_ / rtt));
  if (samples_ <= options_.bounds.warmup_samples) return;
  const double log =
      std::max(1.0, std::floor(std::log10(std::max(limit_, 1.0))));
  double next;
  if (s.dropped) {
    next = limit_ - log;
  } else if (s.inflight * 2 < limit_) {
    return;
  } else if (queue_ <= options_.threshold * log) {
    next = limit_ + options_.beta * log;
  } else if (queue_ < options_.alpha * log) {
    next = limit_ + log;
  } else if (queue_ > options_.beta * log) {
    next = limit_ - log;
  } else {
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
