#include "interceptors/internal/grpc_timeout.h"

#include <algorithm>

namespace reqctx::internal {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int64_t kMsPerMinute = 60 * 1000;
constexpr int64_t kMsPerHour = 60 * kMsPerMinute;
constexpr int64_t kMaxHours = 27000;

// One rung of gRPC's table (seconds, or minutes): `value` units written
// exactly below 1,000, rounded up to 10 units below 10,000 and to 100 units
// below 100,000; -1 if the value is larger, or if the rounded value is a
// whole number of the next unit (`next` of these), which gRPC then writes in
// that unit (the caller goes on with the next rung).
int64_t RoundInRanges(int64_t value, int64_t next) {
  if (value < 1000) return value % next != 0 ? value : -1;
  if (value < 10000) {
    const int64_t v = CeilDiv(value, 10) * 10;
    return v % next != 0 ? v : -1;
  }
  if (value < 100000) {
    const int64_t v = CeilDiv(value, 100) * 100;
    return v % next != 0 ? v : -1;
  }
  return -1;
}

// The units of the table below kFixedPointsBelowMs, in ms, ascending: a
// value gRPC writes exactly there is a multiple of one of them.
constexpr int64_t kUnitsMs[] = {1,    10,           100,        1000,
                                10000, kMsPerMinute, 100 * 1000, 10 * kMsPerMinute};

// Below this the encoding is non-decreasing and rounds up to the smallest
// value it writes exactly (its fixed points). From 60,000 s on it is not
// quite: a multiple of 100 s that is a whole number of minutes is written in
// 10-minute units, rounded up past the next multiples of 100 s.
constexpr int64_t kFixedPointsBelowMs = 60000 * int64_t{1000};

// The largest g with GrpcEncodedTimeoutMs(g) <= target_ms by binary search
// (the answer for the far timeouts, >= kFixedPointsBelowMs).
int64_t LargestEncodedBySearch(int64_t target_ms) {
  int64_t lo = 0, hi = target_ms;  // E(lo) <= target; answer in [lo, hi].
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (GrpcEncodedTimeoutMs(mid) <= target_ms) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace

int64_t LargestEncodedAtMost(int64_t target_ms) {
  if (target_ms < 1000) return target_ms;  // Exact below 1 s.
  if (target_ms >= kFixedPointsBelowMs) return LargestEncodedBySearch(target_ms);
  // The answer is the largest fixed point <= target_ms: a multiple of a
  // unit, written in it with fewer than 100,000 of it. For each such unit,
  // its largest multiple <= target_ms, or the one before it (a multiple
  // that is also a whole number of the next unit is written in that unit,
  // rounded up: never two in a row), checked; the best. A few dozen integer
  // operations instead of a binary search's ~25 encodings.
  int64_t best = 0;
  for (const int64_t unit : kUnitsMs) {
    if (unit > target_ms) break;
    if (target_ms / unit >= 100000) continue;
    int64_t c = target_ms / unit * unit;
    for (int tries = 0; tries < 2 && c > best; ++tries, c -= unit) {
      if (GrpcEncodedTimeoutMs(c) <= target_ms) {
        best = c;
        break;
      }
    }
  }
  return best;
}

int64_t GrpcEncodedTimeoutMs(int64_t millis) {
  if (millis <= 0) return 1;  // "1n", decoded rounded up to 1 ms.
  // Milliseconds: exact below 1 s, then 10 ms and 100 ms units, unless the
  // value is a whole number of seconds.
  if (millis < 1000) return millis;
  if (millis < 10000) {
    const int64_t v = CeilDiv(millis, 10) * 10;
    if (v % 1000 != 0) return v;
  } else if (millis < 100000) {
    const int64_t v = CeilDiv(millis, 100) * 100;
    if (v % 1000 != 0) return v;
  }
  // Seconds, then minutes (each: 1, 10, 100 units), unless a whole number of
  // the next unit.
  const int64_t seconds = CeilDiv(millis, 1000);
  if (const int64_t s = RoundInRanges(seconds, 60); s > 0) return s * 1000;
  const int64_t minutes = CeilDiv(seconds, 60);
  if (const int64_t m = RoundInRanges(minutes, 60); m > 0) {
    return m * kMsPerMinute;
  }
  return std::min(CeilDiv(minutes, 60), kMaxHours) * kMsPerHour;
}

absl::Duration OutboundGrpcTimeout(absl::Duration left) {
  if (left == absl::InfiniteDuration()) return left;
  const int64_t left_ms = absl::ToInt64Milliseconds(left);  // Truncates.
  if (left_ms <= 0) return absl::ZeroDuration();
  // What the encoding may reach: 97% of the whole ms left, rounded down
  // (computed without overflow), so that a re-sent earlier timeout, less
  // than the encoding / 0.97, is still within `left` (see the header).
  constexpr int64_t kKeep = 100 - kHpackTimeoutReusePercent;
  const int64_t target_ms = left_ms / 100 * kKeep + left_ms % 100 * kKeep / 100;
  const int64_t t = LargestEncodedAtMost(target_ms) - kGrpcTimeoutSlackMs;
  return t > 0 ? absl::Milliseconds(t) : absl::ZeroDuration();
}

}  // namespace reqctx::internal
