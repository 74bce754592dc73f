// Criticality: how important a request is, for load shedding (issue 12).
//
// It travels end to end as one entry of the W3C `baggage` header
// (https://www.w3.org/TR/baggage/): `criticality=critical|default|sheddable`.
// A server reads it from the incoming header (CriticalityFromBaggage), keeps
// it in the call's Context (WithCriticality / CriticalityOf) and passes it on
// to outbound calls (BaggageWithCriticality). Anything else in the header is
// left as it is.
//
// This is deliberately the smallest parser that serves the shedder: it only
// finds or replaces the `criticality` entry in a raw header value. When the
// shared W3C baggage codec lands (//w3c), these functions are the one place to
// point at it.
//
// Thread-safety: pure functions over values; safe from any thread.
// Lifetime: no state.
#ifndef REQCTX_INTERCEPTORS_POLICY_CRITICALITY_H_
#define REQCTX_INTERCEPTORS_POLICY_CRITICALITY_H_

#include <string>
#include <string_view>

#include "context/core.h"

namespace reqctx::policy {

// Ordered: a higher value is more important and is shed later.
enum class Criticality { kSheddable = 0, kDefault = 1, kCritical = 2 };

inline constexpr char kBaggageHeader[] = "baggage";
inline constexpr char kCriticalityKey[] = "criticality";

// "sheddable", "default" or "critical".
std::string_view CriticalityName(Criticality c);

// The criticality named by the first `criticality` entry of a raw `baggage`
// header value (entries are `key=value[;properties]`, separated by commas,
// optional whitespace around each). A missing, empty, malformed or unknown
// value gives kDefault; this never fails.
Criticality CriticalityFromBaggage(std::string_view baggage);

// `baggage` with its `criticality` entries replaced by one for `c` (appended
// last; other entries kept in order). For c == kDefault the entry is removed
// (default is what a missing entry means). Returns "" if nothing is left.
std::string BaggageWithCriticality(std::string_view baggage, Criticality c);

// The criticality stored in `ctx` by WithCriticality, or kDefault.
Criticality CriticalityOf(const Context& ctx);
// A child of `parent` carrying `c`.
Context WithCriticality(const Context& parent, Criticality c);

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_CRITICALITY_H_
