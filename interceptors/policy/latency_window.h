// LatencyWindow: the most recent handling times of one method, and their
// quantiles (issue 12: the learned minimum budget, the hedging delay, the
// shedder's expected handling time).
//
// Keeps the last `capacity` samples in a ring. Quantile(q) is the sample of
// rank ceil(q * n) among them (nearest rank), or nullopt until `warmup`
// samples have been seen, so a policy that learns from it does nothing until
// it has enough evidence.
//
// Thread-safety: all methods are safe from any thread (one std::mutex; a
// quantile sorts a copy of at most `capacity` samples outside the lock).
// Lifetime: plain object; no threads or callbacks.
#ifndef REQCTX_INTERCEPTORS_POLICY_LATENCY_WINDOW_H_
#define REQCTX_INTERCEPTORS_POLICY_LATENCY_WINDOW_H_

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/time/time.h"

namespace reqctx::policy {

class LatencyWindow {
 public:
  // capacity >= 1 (smaller values are raised to 1); warmup is clamped to
  // [1, capacity].
  LatencyWindow(size_t capacity, size_t warmup);

  // Records one handling time (negative values count as zero).
  void Add(absl::Duration d);
  // The q-quantile (q clamped to [0, 1]) of the recent samples, or nullopt
  // before `warmup` samples.
  std::optional<absl::Duration> Quantile(double q) const;
  // Mean of the recent samples, or nullopt before `warmup` samples.
  std::optional<absl::Duration> Mean() const;
  // Mean of the `recent` most recent samples (all kept ones if fewer; at
  // least 1), or nullopt before `warmup` samples: follows a change of the
  // handling time within `recent` calls, where Mean() takes `capacity`.
  std::optional<absl::Duration> Mean(size_t recent) const;
  // Samples recorded so far (not capped by capacity).
  int64_t count() const;

 private:
  const size_t capacity_;
  const size_t warmup_;
  mutable std::mutex mu_;
  std::vector<int64_t> ring_ns_;  // Guarded by mu_.
  size_t next_ = 0;               // Guarded by mu_.
  int64_t count_ = 0;             // Guarded by mu_.
};

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_LATENCY_WINDOW_H_
