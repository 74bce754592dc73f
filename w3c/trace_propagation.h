// How trace context crosses a hop (gRPC or HTTP), free of gRPC: used by
// //interceptors and //integrations/http; not a public API (namespace
// internal). Was interceptors/internal/trace_propagation.h, which still
// forwards here.
//
// Incoming: a valid `traceparent` keeps its trace id and this hop gets a
// fresh span id; a missing, repeated, malformed or oversized one starts a new
// random trace (counted as a dropped traceparent, w3c/header_rules.h). The
// `tracestate` headers (joined) are kept only with a valid traceparent, and
// only their valid members within W3C's limits (w3c/tracestate.h:
// SanitizeTracestate; at most 32 members, 512 bytes, trimmed by W3C's rules);
// each member dropped is counted. Nothing here fails a call.
// Outgoing: the Context's trace (or, if it has none, a fresh one) goes out as
// `traceparent`, with its tracestate if any. Both are legal gRPC/HTTP header
// values whatever the peer sent or the application stored: the tracestate in
// a Context is always sanitized (by ContinueTraceOf or WithTracestate).
//
// Thread-safety: safe from any thread (ids come from a per-thread generator,
// seeded from the OS). fork(): a pthread_atfork child handler makes every
// generator reseed at its first use in the child, so parent and child never
// continue the same sequence of ids.
#ifndef REQCTX_W3C_TRACE_PROPAGATION_H_
#define REQCTX_W3C_TRACE_PROPAGATION_H_

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "context/core.h"
#include "w3c/trace_context.h"
#include "w3c/tracestate.h"

namespace reqctx::internal {

inline constexpr char kTraceparentHeader[] = "traceparent";
inline constexpr char kTracestateHeader[] = "tracestate";
inline constexpr size_t kMaxTracestateSize = kMaxTracestateBytes;

// 32 / 16 random lowercase hex digits, never all zeros.
TraceId NewTraceId();
SpanId NewSpanId();

// The trace of an incoming call, given every value of its traceparent and
// tracestate headers (in arrival order).
struct IncomingTrace {
  TraceContext trace;
  std::optional<std::string> tracestate;
};
IncomingTrace ContinueTrace(const std::vector<std::string_view>& traceparents,
                            const std::vector<std::string_view>& tracestates);
// The same over any contiguous storage, so the server glue can gather the
// header values without a heap allocation per call.
IncomingTrace ContinueTraceOf(std::span<const std::string_view> traceparents,
                              std::span<const std::string_view> tracestates);

// The sanitized form of a tracestate list (SanitizeTracestate with W3C's
// limits), its drops counted; nullopt if no member is left.
std::optional<std::string> SanitizedTracestateOf(std::string_view list);

// A child of `parent` that also carries `tracestate` (sanitized as by
// SanitizedTracestateOf) for outbound calls; `parent` itself if no member
// is left.
Context WithTracestate(const Context& parent, std::string tracestate);
// The tracestate stored in `ctx`, or nullptr.
const std::string* GetTracestate(const Context& ctx);

// The headers an outbound call made under `ctx` carries.
struct OutgoingTrace {
  std::string traceparent;
  std::optional<std::string> tracestate;
};
OutgoingTrace OutgoingTraceFor(const Context& ctx);
// OutgoingTraceFor(ctx).traceparent, written into `*out` (replacing what it
// held; no allocation once `*out` has held one): for a caller that reuses
// one string per thread.
void WriteOutgoingTraceparent(const Context& ctx, std::string* out);

// The TraceContext stored in `ctx` (by WithTraceContext), or nullptr; unlike
// GetTraceContext it does not copy the ids. Defined in trace_context.cc.
const TraceContext* FindTraceContext(const Context& ctx);

}  // namespace reqctx::internal

#endif  // REQCTX_W3C_TRACE_PROPAGATION_H_
