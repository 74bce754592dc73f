// W3C traceparent parse/format (see traceparent.h); no gRPC, no //context.
#include "w3c/traceparent.h"

#include <cstddef>

namespace reqctx {
namespace {

// Field layout of a version-00 traceparent.
constexpr size_t kTraceparentSize = 55;
constexpr size_t kTraceIdOffset = 3;
constexpr size_t kTraceIdSize = 32;
constexpr size_t kSpanIdOffset = 36;
constexpr size_t kSpanIdSize = 16;
constexpr size_t kFlagsOffset = 53;

constexpr bool IsLowerHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

constexpr int HexValue(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

// True if `s` is all lowercase hex and, when `nonzero`, not all '0'.
bool IsHexField(std::string_view s, bool nonzero) {
  bool any_nonzero = false;
  for (char c : s) {
    if (!IsLowerHex(c)) return false;
    any_nonzero |= (c != '0');
  }
  return any_nonzero || !nonzero;
}

}  // namespace

std::optional<TraceContext> ParseTraceparent(std::string_view header) {
  // Every version is at least as long as version 00; this also bounds all
  // further work (a longer header is only ever looked at up to here).
  if (header.size() < kTraceparentSize) return std::nullopt;
  const std::string_view version = header.substr(0, 2);
  if (!IsHexField(version, /*nonzero=*/false) || version == "ff") {
    return std::nullopt;  // "ff" is forbidden by the spec.
  }
  if (version == "00") {
    // Version 00 has exactly this size.
    if (header.size() != kTraceparentSize) return std::nullopt;
  } else if (header.size() > kTraceparentSize &&
             header[kTraceparentSize] != '-') {
    // A later version may append fields, each after a '-'.
    return std::nullopt;
  }
  if (header[2] != '-' || header[kSpanIdOffset - 1] != '-' ||
      header[kFlagsOffset - 1] != '-') {
    return std::nullopt;
  }
  std::string_view trace_id = header.substr(kTraceIdOffset, kTraceIdSize);
  std::string_view span_id = header.substr(kSpanIdOffset, kSpanIdSize);
  std::string_view flags = header.substr(kFlagsOffset, 2);
  if (!IsHexField(trace_id, /*nonzero=*/true) ||
      !IsHexField(span_id, /*nonzero=*/true) ||
      !IsHexField(flags, /*nonzero=*/false)) {
    return std::nullopt;
  }
  TraceContext tc;
  tc.trace_id = std::string(trace_id);
  tc.span_id = std::string(span_id);
  tc.sampled = (HexValue(flags[1]) & 0x1) != 0;
  return tc;
}

std::string FormatTraceparent(const TraceContext& tc) {
  std::string out;
  out.reserve(kTraceparentSize);
  out.append("00-");
  out.append(tc.trace_id);
  out.push_back('-');
  out.append(tc.span_id);
  out.append(tc.sampled ? "-01" : "-00");
  return out;
}

}  // namespace reqctx
