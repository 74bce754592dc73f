// IncomingDeadline: an incoming call's deadline on the monotonic clock, and
// the one place that decides whether a cancel seen near it is the caller's
// deadline (reported as DEADLINE_EXCEEDED) or a real cancel (CANCELLED).
// Internal to //interceptors.
//
// Why a window: a caller's deadline reaches the next hop as `grpc-timeout`,
// which gRPC C++ 1.51 rounds UP (src/core/lib/transport/timeout_encoding.cc:
// exact in ms below 1 s, then to 10 ms below 10 s, 100 ms below 100 s, 1 s,
// 10 s, 100 s, 1 min, 10 min, 100 min and 1 h units as the timeout grows,
// each step rounding up again). So a hop's own deadline lies after its
// caller's by the transit time plus up to that rounding. When the caller's
// deadline fires first, the hop learns of it as a cancel (the caller resets
// the stream) arriving before the hop's own deadline. A cancel that arrives
// within Window() of the hop's deadline is therefore the caller's deadline:
// the hop's Context is left to its own deadline timer, which fires within
// that window, so every hop reports DEADLINE_EXCEEDED; a cancel earlier than
// that cancels at once.
//
// The window is GrpcTimeoutRoundUp(remaining at arrival) + kTransitSlack: at
// most ~1% of the timeout plus 100 ms (101 ms below 1 s, 201 ms at 15 s,
// ~1.1 s at 100 s). A genuine client cancel inside that window is reported
// as the deadline, when the deadline fires (at most the window later).
//
// Behind Envoy (ServerCallRules::behind_envoy): Envoy's router tells the
// upstream how long it will wait for the request in
// `x-envoy-expected-rq-timeout-ms` (whole milliseconds; its route timeout,
// or per-try timeout, minus the time the request already spent in Envoy),
// and resets the stream when that time is up, whatever `grpc-timeout` said.
// EnvoyRemaining gives the smaller of the two; the call's deadline is then
// that one (and this window is computed from it, so Envoy's reset at its
// timeout is reported as DEADLINE_EXCEEDED).
//
// Thread-safety: immutable after construction; every method is const and
// safe from any thread. Pure functions otherwise; EnvoyRemaining adds to the
// process-wide drop counters (w3c/header_rules.h; relaxed atomics).
#ifndef REQCTX_INTERCEPTORS_INTERNAL_INCOMING_DEADLINE_H_
#define REQCTX_INTERCEPTORS_INTERNAL_INCOMING_DEADLINE_H_

#include <chrono>
#include <optional>
#include <string_view>

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace reqctx::internal {

// Transit and scheduling time allowed on top of the rounding: how much
// later than the caller computed the timeout this hop may have read it (the
// request headers' transit, and queueing on a loaded host). 20 ms proved
// too little: under ThreadSanitizer on a loaded 2-core machine a 200 ms
// deadline's cancel arrived more than 20 ms before this hop's deadline.
inline constexpr absl::Duration kTransitSlack = absl::Milliseconds(100);

// The most gRPC C++ 1.51's grpc-timeout encoding adds to a timeout of about
// `timeout` by rounding it up (see above). Monotonic in `timeout`.
absl::Duration GrpcTimeoutRoundUp(absl::Duration timeout);

// Envoy's header (see above).
inline constexpr std::string_view kEnvoyExpectedTimeoutHeader =
    "x-envoy-expected-rq-timeout-ms";

// The smaller of `remaining` (from grpc-timeout; nullopt: none) and every
// valid value in `envoy_values` (the call's x-envoy-expected-rq-timeout-ms
// headers, in any order). Valid: 1 to 18 decimal digits, nothing else (no
// sign, space or unit). "0" is Envoy's "no timeout" (Envoy never sends it)
// and changes nothing. Any other value is ignored and counted once in
// DroppedHeader::kEnvoyExpectedTimeout / DropReason::kInvalid. The result is
// never longer than `remaining`: Envoy can only shorten a deadline.
std::optional<absl::Duration> EnvoyRemaining(
    std::optional<absl::Duration> remaining,
    absl::Span<const std::string_view> envoy_values);

class IncomingDeadline {
 public:
  // `remaining`: the call's deadline minus now, read once when the call
  // arrives (<= 0: already expired). Measured from now on the monotonic
  // clock, so stepping the wall clock changes nothing.
  explicit IncomingDeadline(absl::Duration remaining);

  absl::Duration remaining_at_arrival() const { return remaining_; }
  // How long before the deadline a cancel still counts as the caller's
  // deadline (see above).
  absl::Duration Window() const { return window_; }
  // True if a cancel seen now is the caller's deadline: now is at or after
  // deadline - Window(), on the monotonic clock.
  bool CancelIsCallersDeadline() const;
  // True once the deadline itself has passed (monotonic clock): a call that
  // ends now without having been canceled ended by its deadline.
  bool Expired() const;

 private:
  absl::Duration remaining_;
  absl::Duration window_;
  // deadline - window on the steady clock; time_point::max() when the
  // deadline is too far away to matter (beyond ~100 years).
  std::chrono::steady_clock::time_point window_start_;
  // The deadline on the steady clock; time_point::max() when too far away,
  // as window_start_.
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_INCOMING_DEADLINE_H_
