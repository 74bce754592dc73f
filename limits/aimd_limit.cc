#include "limits/aimd_limit.h"

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
  return absl::OkStatus();
}

AimdLimit::AimdLimit(const AimdOptions& options)
    : options_(options), limit_(options.bounds.initial) {}

void AimdLimit::OnSample(const Sample& s) {
  inputs_.last_rtt = s.rtt;
  if (++inputs_.samples <= options_.bounds.warmup_samples) return;
  const bool over = options_.timeout > absl::ZeroDuration() &&
                    s.rtt > options_.timeout;
  if (s.dropped || over) {
    // One decrease per round trip (TCP's rule): a sample holding calls
    // admitted before the last decrease shows the old limit's queue.
    if (s.start < backed_off_at_) return;
    limit_ = options_.bounds.Clamp(limit_ * options_.backoff_ratio);
    backed_off_at_ = s.end();
  } else if (s.inflight * 2 >= limit_) {
    limit_ = options_.bounds.Clamp(limit_ + 1);
  }
}

}  // namespace reqctx::limits
