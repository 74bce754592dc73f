// Server pushback on the wire: the `grpc-retry-pushback-ms` trailing
// metadata of gRPC's retry design (gRFC A6, "Pushback").
//
// A server that refuses a call (e.g. RESOURCE_EXHAUSTED from the load
// shedder) may tell the client when to try again: the value is the delay in
// milliseconds, an ASCII signed 32-bit integer. A6's rules, which
// ParsePushback encodes for the client side:
//   * a valid value >= 0: retry (or send the next hedged attempt) after
//     exactly that delay, not sooner;
//   * a negative value, or one that is not a valid 32-bit integer (empty,
//     signs other than a leading '-', spaces, other characters, overflow):
//     do not retry and send no further hedged attempt;
//   * no header: the client's own backoff applies.
// FormatPushback is the server side: what reqctx's server policy sends.
// Nothing here depends on gRPC and nothing here fails: every input has an
// answer.
//
// Thread-safety: pure functions over values; safe from any thread.
// Lifetime: no state.
#ifndef REQCTX_INTERCEPTORS_POLICY_PUSHBACK_H_
#define REQCTX_INTERCEPTORS_POLICY_PUSHBACK_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace reqctx::policy {

inline constexpr char kRetryPushbackHeader[] = "grpc-retry-pushback-ms";

// What one response's pushback says.
struct Pushback {
  enum class Kind {
    kNone,        // No header: the client's own backoff.
    kRetryAfter,  // Retry after `delay` (>= 0), not sooner.
    kStop,        // Negative or malformed: no retry, no further hedge.
  };
  Kind kind = Kind::kNone;
  absl::Duration delay = absl::ZeroDuration();  // kRetryAfter only.

  static Pushback None() { return {}; }
  static Pushback RetryAfter(absl::Duration d) {
    return {Kind::kRetryAfter, d};
  }
  static Pushback Stop() { return {Kind::kStop, absl::ZeroDuration()}; }
  friend bool operator==(const Pushback& a, const Pushback& b) {
    return a.kind == b.kind && a.delay == b.delay;
  }
};

// The meaning of a `grpc-retry-pushback-ms` value (see the file comment);
// nullopt (no header) gives kNone.
Pushback ParsePushback(std::optional<std::string_view> value);

// The header value for a server asking the client to wait `delay`: whole
// milliseconds rounded up, at least 1 (0 would invite an immediate retry
// storm) and at most INT32_MAX (the wire type).
std::string FormatPushback(absl::Duration delay);

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_PUSHBACK_H_
