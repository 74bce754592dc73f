#include "interceptors/policy/latency_window.h"

#include <algorithm>
#include <cmath>

namespace reqctx::policy {

LatencyWindow::LatencyWindow(size_t capacity, size_t warmup)
    : capacity_(std::max<size_t>(capacity, 1)),
      warmup_(std::clamp<size_t>(warmup, 1, std::max<size_t>(capacity, 1))) {
  ring_ns_.reserve(capacity_);
}

void LatencyWindow::Add(absl::Duration d) {
  int64_t ns = std::max<int64_t>(0, absl::ToInt64Nanoseconds(d));
  std::lock_guard<std::mutex> lock(mu_);
  if (ring_ns_.size() < capacity_) {
    ring_ns_.push_back(ns);
  } else {
    ring_ns_[next_] = ns;
  }
  next_ = (next_ + 1) % capacity_;
  ++count_;
}

std::optional<absl::Duration> LatencyWindow::Quantile(double q) const {
  std::vector<int64_t> samples;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (count_ < static_cast<int64_t>(warmup_)) return std::nullopt;
    samples = ring_ns_;
  }
  if (!(q >= 0)) q = 0;  // Also NaN.
  q = std::min(q, 1.0);
  size_t rank = static_cast<size_t>(std::ceil(q * samples.size()));
  size_t index = rank == 0 ? 0 : rank - 1;
  std::nth_element(samples.begin(), samples.begin() + index, samples.end());
  return absl::Nanoseconds(samples[index]);
}

std::optional<absl::Duration> LatencyWindow::Mean() const {
  return Mean(capacity_);  // Every kept sample.
}

std::optional<absl::Duration> LatencyWindow::Mean(size_t recent) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (count_ < static_cast<int64_t>(warmup_)) return std::nullopt;
  const size_t n = std::clamp<size_t>(recent, 1, ring_ns_.size());
  long double sum = 0;
  // The newest sample is just before next_ (the ring wraps at its size).
  for (size_t i = 1; i <= n; ++i) {
    sum += ring_ns_[(next_ + ring_ns_.size() - i) % ring_ns_.size()];
  }
  return absl::Nanoseconds(static_cast<int64_t>(sum / n));
}

int64_t LatencyWindow::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

}  // namespace reqctx::policy
