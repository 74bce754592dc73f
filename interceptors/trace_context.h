// W3C Trace Context (https://www.w3.org/TR/trace-context/) for reqctx: the
// trace a request belongs to, carried in its Context and, between services,
// in the `traceparent` header (version 00 only).
//
//   traceparent = "00-" <32 hex trace id> "-" <16 hex span id> "-" <2 hex flags>
//
// Parsing is strict and bounded: exactly 55 characters, lowercase hex only,
// non-zero ids; anything else (uppercase, wrong lengths, other versions, ff,
// junk, oversized input) is rejected, so a hostile header costs O(55) work.
//
// Thread-safety: all functions are pure or read immutable Contexts; safe from
// any thread. Ownership: TraceContext is a plain value; WithTraceContext
// copies it into the new Context, which owns it for its lifetime.
#ifndef REQCTX_INTERCEPTORS_TRACE_CONTEXT_H_
#define REQCTX_INTERCEPTORS_TRACE_CONTEXT_H_

#include <optional>
#include <string>
#include <string_view>

#include "context/core.h"

namespace reqctx {

// One hop of a trace. `trace_id` is 32 and `span_id` 16 lowercase hex digits,
// neither all zeros; `sampled` is the W3C "sampled" flag (bit 0 of flags).
struct TraceContext {
  std::string trace_id;
  std::string span_id;
  bool sampled = true;
};

// The trace context stored in `ctx` (by WithTraceContext, or by the server
// glue for each incoming call), or nullopt.
std::optional<TraceContext> GetTraceContext(const Context& ctx);
// A child of `parent` carrying `tc`. Does not validate `tc`.
Context WithTraceContext(const Context& parent, TraceContext tc);

// Parses a W3C version-00 traceparent header; nullopt if it is invalid.
std::optional<TraceContext> ParseTraceparent(std::string_view header);
// The version-00 header for `tc` ("...-01" when sampled, "...-00" if not).
// ParseTraceparent(FormatTraceparent(tc)) == tc for every valid tc.
std::string FormatTraceparent(const TraceContext& tc);

}  // namespace reqctx

#endif  // REQCTX_INTERCEPTORS_TRACE_CONTEXT_H_
