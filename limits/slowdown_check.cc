#include "limits/slowdown_check.h"

#include <algorithm>
#include <optional>

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

std::optional<absl::Duration> SlowdownCheck::Reading::Add(absl::Duration rtt) {
  sum += rtt;
  if (++n < kReadingSamples) return std::nullopt;
  const absl::Duration mean = sum / n;
  *this = {};
  return mean;
}

CheckStep SlowdownCheck::StartMeasuring(double l0, absl::Time at,
                                       bool first) {
  state_ = State::kMeasuring;
  l0_ = l0;
  reading_ = {};
  since_ = at;
  if (first) {
    first_l0_ = l0;
    first_r0_ = absl::ZeroDuration();
  }
  return Hold(l0_);
}

CheckStep SlowdownCheck::OnSample(const Sample& s, double limit,
                                  absl::Duration baseline) {
  // A mostly-dropped window is no reading of the handling time: its late
  // calls were cut at their deadlines, so a cut shortens no handling time
  // and r1 / r0 read a slower server (AIMD, with its timeout scaled up,
  // held 43-61 of 8 cores in admission_flood_test's
  // AQueueWithTightBudgetsBrakes in a CI run). The drop check (drop_check.h)
  // tells a queue from a server slower than the budgets by the late share;
  // a hold of its ends a check under way, and a window it leaves to the
  // algorithm ends one too (the algorithm cuts: limit.h's MostlyDropped).
  if (const std::optional<double> held = drops_.OnSample(s, limit)) {
    state_ = State::kIdle;
    return Hold(*held);
  }
  if (MostlyDropped(s)) {
    state_ = State::kIdle;
    return {};
  }
  const bool rising = options_.cut > 0 && baseline > absl::ZeroDuration() &&
                      s.rtt > baseline * options_.rise;
  // A fall is read against the baseline and against the handling time of
  // the last slower-server verdict: a slow phase that ends gradually (a
  // spread of handling times) walks an algorithm's baseline down window by
  // window (Gradient2's min(long, 1.05 x short)), and no sample is ever
  // under half of it, although the server is back to its old speed and the
  // baseline may hold the queue of the slow phase's limit.
  const bool falling =
      options_.cut > 0 && s.rtt * 2 < std::max(baseline, slow_);
  switch (state_) {
    case State::kIdle:
      if (falling) {
        state_ = State::kFastCut;
        l0_ = limit;
        since_ = s.end();
        return Hold(l0_ * (1 - options_.cut));
      }
      if (!rising) return {};
      return StartMeasuring(limit, s.end(), /*first=*/true);
    case State::kFastCut:
      if (s.start < since_) return Hold(l0_ * (1 - options_.cut));
      state_ = State::kIdle;
      slow_ = absl::ZeroDuration();  // the server's speed is learned again
      return {CheckStep::Kind::kRebaseline, l0_, s.rtt};
    case State::kMeasuring: {
      if (s.start < since_) return Hold(l0_);  // admitted before the rise
      const std::optional<absl::Duration> r0 = reading_.Add(s.rtt);
      if (!r0.has_value()) return Hold(l0_);
      if (!(*r0 > baseline * options_.rise)) {
        state_ = State::kIdle;  // it passed (or one noisy window)
        return {};
      }
      r0_ = *r0;
      if (first_r0_ == absl::ZeroDuration()) first_r0_ = r0_;
      since_ = s.end();
      state_ = State::kCut;
      return Hold(l0_ * (1 - options_.cut));
    }
    case State::kCut: {
      if (s.start < since_) return Hold(l0_ * (1 - options_.cut));
      const std::optional<absl::Duration> r1 = reading_.Add(s.rtt);
      if (!r1.has_value()) return Hold(l0_ * (1 - options_.cut));
      // The handling time rose again under the cut: the server changed
      // during the check (lost workers, then a slower dependency), and r1 /
      // r0 compares two servers (read as a slower server, L0 came back
      // whole, and the new baseline held the queue of the cut: 1.5-2.2 C
      // with 16 workers in limits_test.cc's model). Read r0 again, at L0,
      // on the server as it is now, as a first check.
      if (*r1 > r0_ * options_.rise) {
        return StartMeasuring(l0_, s.end(), /*first=*/true);
      }
      // It fell with the limit: a queue; the algorithm cuts on.
      if (*r1 < r0_ * (1 - 0.75 * options_.cut)) {
        state_ = State::kQueueing;
        return {};
      }
      // Back under the rise: a small queue (L0 up to 1.29 C) that the cut
      // removed. The limit goes to the server's concurrency, C = L0 x r1 /
      // r0 (Little's law), not to L0 (the queue again) nor the cut (0.7 L0:
      // a third of the server idle until the algorithm climbs back).
      if (!(*r1 > baseline * options_.rise)) {
        state_ = State::kIdle;
        return Hold(l0_ * std::min(1.0, absl::FDivDuration(*r1, r0_)));
      }
      state_ = State::kIdle;
      slow_ = *r1;
      // Back to the limit of the first check of this rise, less the queue it
      // had over the server's concurrency: C = L x r1 / r at a limit L > C
      // whose handling time was r (Little's law; r1 = r when L <= C). For a
      // first check that is L0 x min(1, r1 / r0); after a re-check (a first
      // verdict misread the slower server as a queue and the limit sank) it
      // is the first check's limit and reading, not the sunk limit's.
      // The first check's reading counts only while the server is the one
      // it read: r1, without a queue, above rise x that check's r0 (with
      // its queue) is a server that got slower since (it lost workers, the
      // first check saw their queue, then its dependency slowed down), and
      // that check's L0 (2.2 C in limits_test.cc's model) says nothing of
      // its concurrency now.
      double back = l0_ * std::min(1.0, absl::FDivDuration(*r1, r0_));
      if (!(*r1 > first_r0_ * options_.rise)) {
        back = std::max(back, first_l0_ * std::min(1.0, absl::FDivDuration(
                                                           *r1, first_r0_)));
      }
      return {CheckStep::Kind::kRebaseline, back, *r1};
    }
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
        return StartMeasuring(limit, s.end(), /*first=*/false);
      }
      return {};
  }
  return {};
}

}  // namespace reqctx::limits
