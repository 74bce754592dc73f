#include "interceptors/internal/incoming_deadline.h"

namespace reqctx::internal {

absl::Duration GrpcTimeoutRoundUp(absl::Duration timeout) {
  using absl::Hours;
  using absl::Milliseconds;
  using absl::Minutes;
  using absl::Seconds;
  // Each range: its own unit plus what the finer steps before it may have
  // added (gRPC rounds to ms, then to the range's unit; from 100 s on it
  // goes through whole seconds and, from ~28 h on, whole minutes).
  if (timeout < Seconds(1)) return Milliseconds(1);
  if (timeout < Seconds(10)) return Milliseconds(10) + Milliseconds(1);
  if (timeout < Seconds(100)) return Milliseconds(100) + Milliseconds(1);
  if (timeout < Seconds(1000)) return Seconds(1) + Milliseconds(1);
  if (timeout < Seconds(10000)) return Seconds(10) + Seconds(1);
  if (timeout < Seconds(100000)) return Seconds(100) + Seconds(1);
  if (timeout < Minutes(1000)) return Minutes(1) + Seconds(1);
  if (timeout < Minutes(10000)) return Minutes(10) + Minutes(1);
  if (timeout < Minutes(100000)) return Minutes(100) + Minutes(1);
  return Hours(1) + Minutes(1);
}

IncomingDeadline::IncomingDeadline(absl::Duration remaining)
    : remaining_(remaining),
      window_(GrpcTimeoutRoundUp(remaining) + kTransitSlack) {
  const auto now = std::chrono::steady_clock::now();
  const absl::Duration until_window = remaining_ - window_;
  // steady_clock counts int64 nanoseconds from boot: +-292 years. A deadline
  // beyond 100 years (e.g. grpc-timeout "99999999H") never comes in practice.
  if (until_window > absl::Hours(24 * 365 * 100)) {
    window_start_ = std::chrono::steady_clock::time_point::max();
    deadline_ = std::chrono::steady_clock::time_point::max();
  } else {
    deadline_ = now + std::chrono::duration_cast<
                          std::chrono::steady_clock::duration>(
                          absl::ToChronoNanoseconds(remaining_));
    window_start_ = now + std::chrono::duration_cast<
                              std::chrono::steady_clock::duration>(
                              absl::ToChronoNanoseconds(until_window));
  }
}

bool IncomingDeadline::CancelIsCallersDeadline() const {
  return std::chrono::steady_clock::now() >= window_start_;
}

bool IncomingDeadline::Expired() const {
  return std::chrono::steady_clock::now() >= deadline_;
}

}  // namespace reqctx::internal
