#include "interceptors/policy/latency_window.h"

#include <algorithm>
#include <cmath>

namespace reqctx::policy {
namespace {

// Calls f(ns) for each of the `recent` newest samples of `ring` (clamped to
// [1, ring.size()]; ring not empty), whose next write goes to `next`;
// returns how many.
template <typename F>
size_t EachRecent(const std::vector<int64_t>& ring, size_t next,
                  size_t recent, F f) {
  const size_t n = std::clamp<size_t>(recent, 1, ring.size());
  // The newest sample is just before next (the ring wraps at its size).
  for (size_t i = 1; i <= n; ++i) {
    f(ring[(next + ring.size() - i) % ring.size()]);
  }
  return n;
}

}  // namespace

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
  long double sum = 0;
  const size_t n = EachRecent(ring_ns_, next_, recent,
                              [&](int64_t ns) { sum += ns; });
  return absl::Nanoseconds(static_cast<int64_t>(sum / n));
}

std::optional<absl::Duration> LatencyWindow::Max(size_t recent) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (count_ < static_cast<int64_t>(warmup_)) return std::nullopt;
  int64_t max = 0;
  EachRecent(ring_ns_, next_, recent,
             [&](int64_t ns) { max = std::max(max, ns); });
  return absl::Nanoseconds(max);
}

int64_t LatencyWindow::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

}  // namespace reqctx::policy
