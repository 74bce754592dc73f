// W3C Trace Context (https://www.w3.org/TR/trace-context/) for reqctx: the
// trace a request belongs to, carried in its Context and, between services,
// in the `traceparent` header (version 00; later versions are read by the
// version-00 rules and passed on as version 00).
//
//   traceparent = "00-" <32 hex trace id> "-" <16 hex span id> "-" <2 hex flags>
//
// TraceContext, ParseTraceparent and FormatTraceparent (strict, bounded
// parsing) live in w3c/traceparent.h, included here. Free of gRPC (the
// //w3c package); was interceptors/trace_context.h, which still forwards
// here.
//
// Thread-safety: all functions are pure or read immutable Contexts; safe from
// any thread. Ownership: TraceContext is a plain value; WithTraceContext
// copies it into the new Context, which owns it for its lifetime.
#ifndef REQCTX_W3C_TRACE_CONTEXT_H_
#define REQCTX_W3C_TRACE_CONTEXT_H_

#include <optional>

#include "context/core.h"
#include "w3c/traceparent.h"  // IWYU pragma: export

namespace reqctx {

// The trace context stored in `ctx` (by WithTraceContext, or by the server
// glue for each incoming call), or nullopt.
std::optional<TraceContext> GetTraceContext(const Context& ctx);
// A child of `parent` carrying `tc`. Does not validate `tc`.
Context WithTraceContext(const Context& parent, TraceContext tc);

}  // namespace reqctx

#endif  // REQCTX_W3C_TRACE_CONTEXT_H_
