#include "limits/windowed_limit.h"

#include <algorithm>

#include <string>

namespace reqctx::limits {

absl::Status WindowOptions::Validate(std::string_view prefix) const {
  auto bad = [&](std::string_view field, std::string_view why) {
    return BadOption(prefix, field, why);
  };
  if (min_time <= absl::ZeroDuration()) return bad("min_time", "must be > 0");
  if (max_time < min_time) return bad("max_time", "must be >= min_time");
  if (min_samples < 1) return bad("min_samples", "must be >= 1");
  if (!(drop_share >= 0 && drop_share < 1)) {
    return bad("drop_share", "must be in [0, 1)");
  }
  return absl::OkStatus();
}

WindowedLimit::WindowedLimit(std::unique_ptr<Limit> inner,
                             const WindowOptions& options)
    : inner_(std::move(inner)), options_(options) {}

void WindowedLimit::OnSample(const Sample& s) {
  const absl::Time end = s.end();
  if (!open_) {
    open_ = true;
    opened_ = end;
    earliest_ = s.start;
  }
  earliest_ = std::min(earliest_, s.start);
  sum_ += s.rtt;
  ++count_;
  max_inflight_ = std::max(max_inflight_, s.inflight);
  if (s.dropped) ++dropped_;
  if (s.budget != absl::InfiniteDuration()) {
    budget_sum_ += std::min(s.budget, budget_cap_);
    ++budgeted_;
    ++deadlined_;
  } else if (budget_cap_ != absl::InfiniteDuration()) {
    budget_sum_ += budget_cap_;  // can wait as long as any call can
    ++budgeted_;
  }
  const absl::Duration age = end - opened_;
  // A window of min_samples, or at max_time one that holds at least a call
  // per slot of a smaller limit: at a limit of L, a window holds about
  // L x max_time / rtt calls, and with handling times near max_time / L or
  // above, a limit of a few calls never fills min_samples -- it would take
  // no sample again, and stay where it is for good (Vegas sank to 1 in
  // flight in admission_flood_test.cc's slowdown under overload).
  const bool enough =
      count_ >= options_.min_samples ||
      (age >= options_.max_time && count_ >= inner_->Current());
  if (!((age >= options_.min_time && enough) || age >= options_.max_time)) {
    return;
  }
  if (enough) {
    Sample w;
    w.start = earliest_;
    w.taken = end;
    w.rtt = sum_ / count_;
    w.inflight = max_inflight_;
    if (deadlined_ > 0) w.budget = budget_sum_ / budgeted_;
    budget_cap_ =
        w.rtt > absl::ZeroDuration() ? 2 * w.rtt : absl::InfiniteDuration();
    // Application-limited: under half the limit in flight (the rule AIMD
    // and Vegas grow by), so the limit did not make its calls late.
    const bool app_limited = max_inflight_ * 2 < inner_->Current();
    w.dropped_share = static_cast<double>(dropped_) / count_;
    w.dropped = dropped_ > options_.drop_share * count_ ||
                (dropped_ > 0 && !app_limited);
    inner_->OnSample(w);
  }
  open_ = false;
  sum_ = absl::ZeroDuration();
  count_ = 0;
  max_inflight_ = 0;
  dropped_ = 0;
  budget_sum_ = absl::ZeroDuration();
  budgeted_ = 0;
  deadlined_ = 0;
}

}  // namespace reqctx::limits
