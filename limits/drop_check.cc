#include "limits/drop_check.h"

#include <algorithm>

namespace reqctx::limits {

double DropCheck::StartCut(const Sample& s, double level) {
  state_ = State::kCut;
  level_ = std::max(1.0, level);
  since_ = s.end();
  share_sum_ = 0;
  shares_ = 0;
  return level_;
}

void DropCheck::Seen(const Sample& s) {
  if (s.dropped_share < 1 - kQueueDropShare) in_time_ = s.inflight;
}

std::optional<double> DropCheck::OnSample(const Sample& s, double limit) {
  if (cut_ <= 0) return std::nullopt;
  const bool late = MostlyDropped(s);
  switch (state_) {
    case State::kIdle:
      // Not mostly late, a concurrency the server did not just handle in
      // time, one call (no cut can shorten it), or calls the limit held
      // back (within a call of it): the algorithm's.
      if (!late || s.inflight > in_time_ * kInflightSpread ||
          s.inflight <= 1 || s.inflight + 1 > limit) {
        return std::nullopt;
      }
      l0_ = limit;
      late_inflight_ = s.inflight;
      return StartCut(s, (1 - cut_) * std::min<double>(limit, s.inflight));
    case State::kCut:
      if (s.start < since_) return level_;  // admitted before the cut
      share_sum_ += s.dropped_share;
      if (++shares_ < kReadingSamples) return level_;
      if (share_sum_ / shares_ < kQueueDropShare) {
        // A queue the cut shortened: the algorithm brakes from the
        // concurrency that was late.
        state_ = State::kQueue;
        return std::min<double>(l0_, late_inflight_);
      }
      state_ = State::kPastBudgets;
      held_ = 0;
      return l0_;
    case State::kQueue:
      if (!late) state_ = State::kIdle;
      return std::nullopt;
    case State::kPastBudgets:
      if (!late) {
        state_ = State::kIdle;
        return std::nullopt;
      }
      if (++held_ < kRecheckSamples || level_ <= 1) return l0_;
      return StartCut(s, (1 - cut_) * level_);
  }
  return std::nullopt;
}

}  // namespace reqctx::limits
