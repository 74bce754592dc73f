#include "interceptors/internal/incoming_deadline.h"

#include <cstdint>

#include "w3c/header_rules.h"

namespace reqctx::internal {
namespace {

// Envoy's milliseconds: 1 to 18 digits (no int64 overflow), nothing else.
std::optional<int64_t> ParseEnvoyMs(std::string_view value) {
  if (value.empty() || value.size() > 18) return std::nullopt;
  int64_t ms = 0;
  for (char c : value) {
    if (c < '0' || c > '9') return std::nullopt;
    ms = ms * 10 + (c - '0');
  }
  return ms;
}

}  // namespace

std::optional<absl::Duration> EnvoyRemaining(
    std::optional<absl::Duration> remaining,
    absl::Span<const std::string_view> envoy_values) {
  for (std::string_view v : envoy_values) {
    const std::optional<int64_t> ms = ParseEnvoyMs(v);
    if (!ms.has_value()) {
      CountDroppedHeaders(DroppedHeader::kEnvoyExpectedTimeout,
                          DropReason::kInvalid);
      continue;
    }
    if (*ms == 0) continue;  // Envoy's "no timeout".
    const absl::Duration envoy = absl::Milliseconds(*ms);
    if (!remaining.has_value() || envoy < *remaining) remaining = envoy;
  }
  return remaining;
}

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
