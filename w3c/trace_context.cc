// TraceContext stored in a Context (the parser is in traceparent.cc).
#include "w3c/trace_context.h"

#include <utility>

namespace reqctx {
namespace {

inline constexpr Key<TraceContext> kTraceContextKey("reqctx.trace_context");

}  // namespace

namespace internal {
const TraceContext* FindTraceContext(const Context& ctx) {
  return ctx.Value(kTraceContextKey);
}
}  // namespace internal

std::optional<TraceContext> GetTraceContext(const Context& ctx) {
  const TraceContext* tc = internal::FindTraceContext(ctx);
  if (tc == nullptr) return std::nullopt;
  return *tc;
}

Context WithTraceContext(const Context& parent, TraceContext tc) {
  return WithValue(parent, kTraceContextKey, std::move(tc));
}

}  // namespace reqctx
