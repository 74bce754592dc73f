// The last check of an outgoing call's initial metadata before gRPC sees it
// (the client interceptor's PRE_SEND_INITIAL_METADATA hook), free of gRPC so
// it is unit-tested alone. Internal to //interceptors; the contract users see
// is in client_interceptor.h.
//
// EnforceOutboundHeaders(metadata, budget) guarantees that gRPC 1.51 accepts
// every entry left (w3c/header_rules.h) and that the propagation headers
// (traceparent, tracestate, baggage) take at most `budget` bytes, counted as
// gRPC and HPACK count a header list (RFC 7541 section 4.1: name + value +
// 32 per entry):
//   * an entry with an illegal key, or an illegal value under a key not
//     ending in "-bin", is removed -- except tracestate and baggage, whose
//     valid members are kept (below);
//   * all tracestate entries become one, sanitized (w3c/tracestate.h); all
//     baggage entries become one (ParseBaggage of the joined values, then
//     FormatBaggage), in their order;
//   * over the budget, the room left after the traceparent entries goes
//     first to tracestate (at most 512 bytes anyway), trimmed by W3C's rules
//     if it does not fit, then to baggage, trimmed by whole members (the
//     first ones that fit are kept, the kBudgetFirstBaggageKey member --
//     the call's criticality -- ahead of all others); a list with no member
//     left is removed.
//     traceparent entries are never trimmed (each is at most 98 bytes when
//     written by NewClientContext).
// Every member or header removed is counted (w3c/header_rules.h). A call
// whose metadata is already legal, has at most one tracestate and one
// baggage entry and is within the budget is left untouched (one pass over
// its bytes, no allocation).
//
// Thread-safety: reentrant; `metadata` belongs to the caller's one call.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_OUTBOUND_HEADERS_H_
#define REQCTX_INTERCEPTORS_INTERNAL_OUTBOUND_HEADERS_H_

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

namespace reqctx::internal {

// The size of one header entry as gRPC's metadata limit counts it.
constexpr size_t HeaderEntrySize(std::string_view key, std::string_view value) {
  return key.size() + value.size() + 32;
}

// See above.
void EnforceOutboundHeaders(std::multimap<std::string, std::string>& metadata,
                            size_t budget);

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_OUTBOUND_HEADERS_H_
