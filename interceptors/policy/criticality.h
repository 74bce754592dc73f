// Criticality: how important a request is, for load shedding (issue 12).
//
// It travels end to end as one member of the W3C `baggage` header
// (https://www.w3.org/TR/baggage/): `criticality=critical|default|sheddable`.
// Every header is read and written by the one W3C codec (//w3c:baggage), so
// the rules are the codec's: optional whitespace, properties and
// percent-encoding are allowed, malformed members are dropped, a later
// member with the same key wins, and the W3C limits apply. A malformed
// header or value gives kDefault; nothing here ever fails a call.
//
// On a server, reqctx's glue puts the incoming baggage in the call's Context
// (w3c/baggage_context.h), where CriticalityOf finds it; the shedder reads
// the raw header with CriticalityFromBaggage. WithCriticality sets it both as
// a Context value and in the Context's baggage, so every outbound call made
// with NewClientContext carries it on: one header, written by the codec.
// BaggageWithCriticality edits a raw header value the same way.
//
// Thread-safety: pure functions over values; safe from any thread.
// Lifetime: no state.
#ifndef REQCTX_INTERCEPTORS_POLICY_CRITICALITY_H_
#define REQCTX_INTERCEPTORS_POLICY_CRITICALITY_H_

#include <string>
#include <string_view>

#include "context/core.h"
#include "w3c/baggage.h"  // kBaggageHeader

namespace reqctx::policy {

// Ordered: a higher value is more important and is shed later.
enum class Criticality { kSheddable = 0, kDefault = 1, kCritical = 2 };

inline constexpr char kCriticalityKey[] = "criticality";

// "sheddable", "default" or "critical".
std::string_view CriticalityName(Criticality c);

// The criticality named by the `criticality` member of a raw `baggage`
// header value, as ParseBaggage keeps it (the last of several wins). A
// missing, empty, malformed or unknown value gives kDefault; never fails.
Criticality CriticalityFromBaggage(std::string_view baggage);

// `baggage` as the codec keeps it, with its `criticality` member replaced by
// one for `c` (appended last; other members kept in order; put first instead
// if the W3C limits would otherwise drop it). For c == kDefault the member
// is removed (default is what a missing member means). "" if nothing is
// left.
std::string BaggageWithCriticality(std::string_view baggage, Criticality c);

// The criticality set in `ctx` by WithCriticality, else the one its baggage
// names (Baggage(ctx)), else kDefault.
Criticality CriticalityOf(const Context& ctx);
// A child of `parent` carrying `c`, as a value and as the `criticality`
// member of its baggage (removed for kDefault), so outbound calls made with
// NewClientContext pass it on.
Context WithCriticality(const Context& parent, Criticality c);

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_CRITICALITY_H_
