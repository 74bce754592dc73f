// Clocks of the core: every deadline fires by the monotonic clock.
//
// Deadlines are kept twice: as an absl::Time (what Context::Deadline()
// reports, on the wall clock) and as a point on the monotonic clock (what the
// timer service and every wait compare against). The conversion happens once,
// when the deadline is made, as Go's WithDeadline does with time.Until: so
// stepping the system clock back or forth neither delays nor hurries a
// pending deadline.
//
// Thread-safety: all functions are thread-safe.
#ifndef REQCTX_CONTEXT_INTERNAL_CLOCK_H_
#define REQCTX_CONTEXT_INTERNAL_CLOCK_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace reqctx::internal {

// A point on the monotonic clock in nanoseconds (std::chrono::steady_clock).
// kMonoNever: no deadline.
using MonoTime = int64_t;
inline constexpr MonoTime kMonoNever = std::numeric_limits<int64_t>::max();

inline MonoTime MonoNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// `from + d`, saturating: an infinite or huge d gives kMonoNever (or the
// smallest value for a hugely negative one).
inline MonoTime MonoAdd(MonoTime from, absl::Duration d) {
  if (d == absl::InfiniteDuration()) return kMonoNever;
  if (d == -absl::InfiniteDuration()) return std::numeric_limits<int64_t>::min();
  const int64_t ns = absl::ToInt64Nanoseconds(d);  // Saturates.
  if (ns > 0 && from > kMonoNever - ns) return kMonoNever;
  if (ns < 0 && from < std::numeric_limits<int64_t>::min() - ns) {
    return std::numeric_limits<int64_t>::min();
  }
  return from + ns;
}

// The duration from `from` to `to` (may be negative; infinite for kMonoNever).
inline absl::Duration MonoUntil(MonoTime from, MonoTime to) {
  if (to == kMonoNever) return absl::InfiniteDuration();
  // absl::Duration spans far more than int64 nanoseconds: no overflow.
  return absl::Nanoseconds(to) - absl::Nanoseconds(from);
}

namespace clock_internal {
inline std::atomic<int64_t> wall_offset_ns{0};
}  // namespace clock_internal

// The wall clock as the core sees it: absl::Now(), plus the offset a test set
// with SetWallClockOffsetForTesting (to simulate a clock step).
inline absl::Time WallNow() {
  return absl::Now() + absl::Nanoseconds(clock_internal::wall_offset_ns.load(
                           std::memory_order_relaxed));
}

// Testing hook: from now on WallNow() is absl::Now() + `offset`, as if the
// system clock had been stepped by `offset`.
inline void SetWallClockOffsetForTesting(absl::Duration offset) {
  clock_internal::wall_offset_ns.store(absl::ToInt64Nanoseconds(offset),
                                       std::memory_order_relaxed);
}

// Waits on `cv` (`lock` held, as for std::condition_variable) until `pred()`
// holds or the monotonic clock reaches `end` (kMonoNever: no limit); returns
// pred(). Waits in bounded slices, so an absurd `end` cannot overflow chrono.
template <typename Pred>
bool WaitUntilMono(std::condition_variable& cv,
                   std::unique_lock<std::mutex>& lock, MonoTime end,
                   Pred pred) {
  while (!pred()) {
    if (end == kMonoNever) {
      cv.wait(lock);
      continue;
    }
    const absl::Duration left = MonoUntil(MonoNow(), end);
    if (left <= absl::ZeroDuration()) return false;
    cv.wait_for(lock,
                absl::ToChronoNanoseconds(std::min(left, absl::Hours(1))));
  }
  return true;
}

// The monotonic point matching the wall time `t`, as of now.
inline MonoTime MonoFromWall(absl::Time t) {
  if (t == absl::InfiniteFuture()) return kMonoNever;
  return MonoAdd(MonoNow(), t - WallNow());
}

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_CLOCK_H_
