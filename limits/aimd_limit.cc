#include "limits/aimd_limit.h"

#include <algorithm>
#include <string>

namespace reqctx::limits {

absl::Status AimdOptions::Validate(std::string_view prefix) const {
  if (absl::Status s = bounds.Validate(std::string(prefix) + ".bounds");
      !s.ok()) {
    return s;
  }
  if (!(backoff_ratio >= 0.5 && backoff_ratio < 1)) {
    return BadOption(prefix, "backoff_ratio", "must be in [0.5, 1)");
  }
  if (timeout < absl::ZeroDuration()) {
    return BadOption(prefix, "timeout", "must be >= 0");
  }
  return slowdown.Validate(std::string(prefix) + ".slowdown");
}

AimdLimit::AimdLimit(const AimdOptions& options)
    : options_(options),
      check_(options.slowdown),
      limit_(options.bounds.initial) {}

void AimdLimit::OnSample(const Sample& s) {
  check_.Seen(s);
  inputs_.last_rtt = s.rtt;
  const double rtt = std::max(1.0, absl::ToDoubleNanoseconds(s.rtt));
  if (fastest_ns_ == 0) run_.Fill(rtt);
  run_.Add(rtt);
  fastest_ns_ = fastest_ns_ == 0 ? rtt : std::min(fastest_ns_, run_.Max());
  // Within the timeout itself: the server is not slower.
  if (s.rtt <= options_.timeout) scale_ = 1;
  inputs_.queue_share =
      QueueShare(s.budget, absl::Nanoseconds(fastest_ns_ * scale_));
  if (++inputs_.samples <= options_.bounds.warmup_samples) return;
  const absl::Duration timeout = options_.timeout * scale_;
  // Without a timeout (no baseline) only the check's drop check runs.
  if (ApplyCheckStep(check_.OnSample(s, limit_, timeout), options_.bounds,
                     limit_, [&](absl::Duration rtt) {
                       scale_ = std::max(
                           1.0, absl::ToDoubleNanoseconds(rtt) / fastest_ns_);
                     })) {
    return;
  }
  const bool over = timeout > absl::ZeroDuration() && s.rtt > timeout;
  // Halfway from the fastest window (scaled) to the timeout: above it the
  // calls wait for a worker.
  const absl::Duration quiet =
      (absl::Nanoseconds(fastest_ns_ * scale_) + timeout) / 2;
  const bool no_queue = timeout > absl::ZeroDuration() && s.rtt <= quiet;
  // A drop is a loss by the DropGate, a queue being a window mean above
  // `quiet`. Without a timeout there is no handling time to read a queue
  // against: every drop is a loss.
  const bool gate_loss = gate_.Loss(s, !no_queue);
  const bool loss =
      timeout == absl::ZeroDuration() ? s.dropped : gate_loss;
  if (loss || over) {
    // One decrease per round trip (TCP's rule): a sample holding calls
    // admitted before the last decrease shows the old limit's queue.
    if (s.start < backed_off_at_) return;
    recover_to_ = limit_ - 1;
    limit_ = options_.bounds.Clamp(limit_ * options_.backoff_ratio);
    backed_off_at_ = s.end();
  } else if (s.inflight * 2 >= limit_) {
    // Back to just under where it last backed off, or while no queue
    // shows, a whole call per sample (no call waits); past that, the share.
    const double step =
        limit_ + 1 <= recover_to_ || no_queue ? 1 : inputs_.queue_share;
    limit_ = options_.bounds.Clamp(limit_ + step);
  }
}

}  // namespace reqctx::limits
