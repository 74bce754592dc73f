#include "interceptors/policy/refusal_cap.h"

#include <algorithm>

namespace reqctx::policy {

RefusalCap::RefusalCap(double max_share, absl::Duration window)
    : max_share_(max_share), window_(window) {}

void RefusalCap::RollLocked(absl::Time now) {
  if (!started_) {
    started_ = true;
    window_start_ = now;
    return;
  }
  if (now - window_start_ < window_) return;
  // A gap of more than one window leaves no traffic to judge by.
  previous_arrivals_ = now - window_start_ < 2 * window_ ? arrivals_ : 0;
  const int64_t windows = (now - window_start_) / window_;
  window_start_ += windows * window_;
  arrivals_ = 0;
  refused_ = 0;
}

void RefusalCap::Arrived(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  RollLocked(now);
  ++arrivals_;
}

bool RefusalCap::TryRefuse(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  RollLocked(now);
  if (max_share_ >= 1) {
    ++refused_;
    return true;
  }
  const double allowed =
      max_share_ * static_cast<double>(std::max(arrivals_, previous_arrivals_));
  if (static_cast<double>(refused_ + 1) <= allowed) {
    ++refused_;
    return true;
  }
  ++capped_;
  return false;
}

int64_t RefusalCap::capped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capped_;
}

}  // namespace reqctx::policy
