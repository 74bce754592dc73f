#include "limits/slowdown_check.h"

#include <algorithm>

namespace reqctx::limits {

absl::Status SlowdownCheckOptions::Validate(std::string_view prefix) const {
  if (!(cut >= 0 && cut <= 0.5)) {
    return BadOption(prefix, "cut", "must be in [0, 0.5]");
  }
  if (!(rise > 1)) return BadOption(prefix, "rise", "must be > 1");
  return absl::OkStatus();
}

bool ApplyCheckStep(const CheckStep& step, const LimitBounds& bounds,
                    double& limit,
                    absl::FunctionRef<void(absl::Duration)> rebaseline) {
  switch (step.kind) {
    case CheckStep::Kind::kPass:
      return false;
    case CheckStep::Kind::kRebaseline:
      rebaseline(step.rtt);
      break;
    case CheckStep::Kind::kHold:
      break;
  }
  limit = bounds.Clamp(step.limit);
  return true;
}

CheckStep SlowdownCheck::OnSample(const Sample& s, double limit,
                                  absl::Duration baseline) {
  const bool rising = options_.cut > 0 && baseline > absl::ZeroDuration() &&
                      s.rtt > baseline * options_.rise;
  const bool falling = options_.cut > 0 && s.rtt * 2 < baseline;
  switch (state_) {
    case State::kIdle:
      if (falling) {
        state_ = State::kFastCut;
        l0_ = limit;
        since_ = s.end();
        return Hold(l0_ * (1 - options_.cut));
      }
      if (!rising) return {};
      state_ = State::kMeasuring;
      l0_ = limit;
      since_ = s.end();
      return Hold(l0_);
    case State::kFastCut:
      if (s.start < since_) return Hold(l0_ * (1 - options_.cut));
      state_ = State::kIdle;
      return {CheckStep::Kind::kRebaseline, l0_, s.rtt};
    case State::kMeasuring:
      if (s.start < since_) return Hold(l0_);  // admitted before the rise
      if (!rising) {
        state_ = State::kIdle;  // it passed
        return {};
      }
      r0_ = s.rtt;
      since_ = s.end();
      state_ = State::kCut;
      return Hold(l0_ * (1 - options_.cut));
    case State::kCut:
      if (s.start < since_) return Hold(l0_ * (1 - options_.cut));
      // It fell with the limit, or back under the rise: a queue.
      if (s.rtt < r0_ * (1 - 0.75 * options_.cut) || !rising) {
        state_ = State::kQueueing;
        return {};
      }
      state_ = State::kIdle;
      // Back to L0, less the queue L0 had over the server's concurrency:
      // r1 = r0 x C / L0 when L0 > C (none when L0 <= C: r1 = r0).
      return {CheckStep::Kind::kRebaseline,
              l0_ * std::min(1.0, absl::FDivDuration(s.rtt, r0_)), s.rtt};
    case State::kQueueing:
      if (!rising) {
        state_ = State::kIdle;
        return {};
      }
      // The algorithm's own cuts halved the limit and the rise stays: look
      // again (a real queue is confirmed again at half the limit; a slower
      // server misread as a queue -- a verdict taken at L0 above 1.29 C,
      // where even the cut queued -- is seen at last).
      if (limit <= l0_ / 2) {
        state_ = State::kMeasuring;
        l0_ = limit;
        since_ = s.end();
        return Hold(l0_);
      }
      return {};
  }
  return {};
}

}  // namespace reqctx::limits
