#include "limits/drop_check.h"

#include <algorithm>

namespace reqctx::limits {

double DropCheck::StartCut(const Sample& s, State state, double level) {
  state_ = state;
  level_ = std::max(1.0, level);
  since_ = s.end();
  share_sum_ = 0;
  shares_ = 0;
  return level_;
}

void DropCheck::Seen(const Sample& s) {
  if (s.dropped_share < 1 - kQueueDropShare) in_time_ = s.inflight;
}

std::optional<double> DropCheck::Read(const Sample& s) {
  if (s.start < since_) return std::nullopt;  // admitted before the cut
  share_sum_ += s.dropped_share;
  if (++shares_ < kReadingSamples) return std::nullopt;
  return share_sum_ / shares_;
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
      look_ = (1 - cut_) * std::min<double>(limit, s.inflight);
      searching_ = true;
      first_ = true;
      return StartCut(s, State::kCut, look_);
    case State::kCut: {
      std::optional<double> share = Read(s);
      // A window mostly in time ends the look at once (a server that
      // recovered during a long look at a few calls).
      if (s.start >= since_ && s.dropped_share < 1 - kQueueDropShare) {
        share = s.dropped_share;
      }
      if (!share.has_value()) return level_;
      const bool first = first_;
      first_ = false;
      if (*share < kQueueDropShare) {
        if (!first) {
          // In time at a deeper look or a re-check: a deep queue, or the
          // server recovered during the look. Back at the late concurrency
          // (a re-check: the limit held) for a window to tell.
          deep_ = level_;
          return StartCut(s, State::kConfirm,
                          searching_ ? std::min<double>(l0_, late_inflight_)
                                     : l0_);
        }
        // A queue the cut shortened: the algorithm brakes from the
        // concurrency that was late.
        state_ = State::kQueue;
        return std::min<double>(l0_, late_inflight_);
      }
      // Still mostly late: a server slower than the budgets, or a queue
      // this cut does not clear (most workers lost). The first check
      // searches deeper at once.
      if (searching_ && level_ * kSearchStep >= kSearchFloor) {
        return StartCut(s, State::kCut, level_ * kSearchStep);
      }
      searching_ = false;
      state_ = State::kPastBudgets;
      held_ = 0;
      return l0_;
    }
    case State::kConfirm:
      // One window back up: mostly late again, the deep queue (the limit
      // goes to the level in time); not, the server recovered during the
      // look (the limit stays where the window was read).
      if (s.start < since_) return level_;
      if (late) {
        state_ = State::kQueue;
        return deep_;
      }
      state_ = State::kIdle;
      return std::nullopt;
    case State::kQueue:
      if (!late) state_ = State::kIdle;
      return std::nullopt;
    case State::kPastBudgets:
      if (!late) {
        state_ = State::kIdle;
        return std::nullopt;
      }
      if (++held_ < kRecheckSamples || look_ <= 1) return l0_;
      look_ = std::max(1.0, (1 - cut_) * look_);
      searching_ = false;
      return StartCut(s, State::kCut, look_);
  }
  return std::nullopt;
}

}  // namespace reqctx::limits
