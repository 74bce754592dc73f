#include "interceptors/internal/trace_propagation.h"

#include <cstdint>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"

namespace reqctx::internal {
namespace {

inline constexpr Key<std::string> kTracestateKey("reqctx.tracestate");

uint64_t RandomNonZero() {
  thread_local absl::BitGen gen;
  uint64_t v = 0;
  while (v == 0) v = absl::Uniform<uint64_t>(gen);  // 0 has odds 2^-64.
  return v;
}

std::string Hex16(uint64_t v) {
  return absl::StrCat(absl::Hex(v, absl::kZeroPad16));
}

}  // namespace

std::string NewTraceId() {
  // Both halves non-zero: trivially not all zeros, still 126 random bits.
  return Hex16(RandomNonZero()) + Hex16(RandomNonZero());
}

std::string NewSpanId() { return Hex16(RandomNonZero()); }

IncomingTrace ContinueTrace(const std::vector<std::string_view>& traceparents,
                            const std::vector<std::string_view>& tracestates) {
  IncomingTrace in;
  std::optional<TraceContext> parent;
  // More than one traceparent is ambiguous: treat it as invalid.
  if (traceparents.size() == 1) parent = ParseTraceparent(traceparents[0]);
  if (!parent) {
    in.trace.trace_id = NewTraceId();
    in.trace.span_id = NewSpanId();
    in.trace.sampled = true;
    return in;  // tracestate is meaningless without a valid traceparent.
  }
  in.trace.trace_id = std::move(parent->trace_id);
  in.trace.span_id = NewSpanId();
  in.trace.sampled = parent->sampled;
  // Repeated tracestate headers form one comma-separated list (RFC 9110).
  size_t total = 0;
  for (std::string_view v : tracestates) total += v.size() + 1;
  if (!tracestates.empty() && total - 1 <= kMaxTracestateSize) {
    std::string joined;
    joined.reserve(total);
    for (std::string_view v : tracestates) {
      if (!joined.empty()) joined.push_back(',');
      joined.append(v);
    }
    if (!joined.empty()) in.tracestate = std::move(joined);
  }
  return in;
}

Context WithTracestate(const Context& parent, std::string tracestate) {
  return WithValue(parent, kTracestateKey, std::move(tracestate));
}

const std::string* GetTracestate(const Context& ctx) {
  return ctx.Value(kTracestateKey);
}

OutgoingTrace OutgoingTraceFor(const Context& ctx) {
  OutgoingTrace out;
  std::optional<TraceContext> tc = GetTraceContext(ctx);
  if (!tc) {
    // A call made outside any trace starts one; the callee continues it.
    out.traceparent = FormatTraceparent(
        TraceContext{NewTraceId(), NewSpanId(), /*sampled=*/true});
    return out;
  }
  out.traceparent = FormatTraceparent(*tc);
  if (const std::string* ts = GetTracestate(ctx)) out.tracestate = *ts;
  return out;
}

}  // namespace reqctx::internal
