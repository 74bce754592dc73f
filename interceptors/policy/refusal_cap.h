// RefusalCap: a cap on the share of calls a server policy refuses per time
// window (issue 23's safety valve; Finagle's DeadlineFilter caps its
// rejections the same way). Once refusing one more call would push the
// window's refusals above `max_share` of its arrivals, the call is admitted
// instead: a policy that misjudges (a limit learned wrong, a minimum budget
// set too high) cannot turn away more than that share of the traffic.
//
// Windows are fixed, `window` long, aligned on the first arrival. The
// allowance is max_share x the larger of this window's and the previous
// window's arrivals, so the first calls of a window are judged by the
// traffic just seen, not by the handful that have arrived so far.
//
// Time comes in with every call (`now`); no clock, no thread.
// Thread-safety: all methods are safe from any thread (one std::mutex, never
// held while calling out). Lifetime: plain object; its owner (ServerPolicy's
// per-limit state) outlives the shedder that holds a pointer to it.
#ifndef REQCTX_INTERCEPTORS_POLICY_REFUSAL_CAP_H_
#define REQCTX_INTERCEPTORS_POLICY_REFUSAL_CAP_H_

#include <cstdint>
#include <mutex>

#include "absl/time/time.h"

namespace reqctx::policy {

class RefusalCap {
 public:
  // max_share in (0, 1] (1: no cap; validated by the policy's options);
  // window > 0.
  RefusalCap(double max_share, absl::Duration window);

  // Counts one arriving call (every call the policy decides, refused or
  // not), at `now`.
  void Arrived(absl::Time now);
  // True, and counts the refusal, if refusing one more call at `now` keeps
  // the window's refusals within the cap; false (nothing counted) if the
  // caller must admit the call instead.
  bool TryRefuse(absl::Time now);
  // Refusals the cap turned into admissions, since construction.
  int64_t capped() const;

 private:
  void RollLocked(absl::Time now);

  const double max_share_;
  const absl::Duration window_;
  mutable std::mutex mu_;
  bool started_ = false;          // Guarded by mu_.
  absl::Time window_start_;       // Guarded by mu_.
  int64_t arrivals_ = 0;          // Guarded by mu_.
  int64_t previous_arrivals_ = 0; // Guarded by mu_.
  int64_t refused_ = 0;           // Guarded by mu_.
  int64_t capped_ = 0;            // Guarded by mu_.
};

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_REFUSAL_CAP_H_
