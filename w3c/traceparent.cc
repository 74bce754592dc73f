// W3C traceparent parse/format (see traceparent.h); no gRPC, no //context.
#include "w3c/traceparent.h"

#include <array>
#include <cstddef>
#include <cstdint>

namespace reqctx {
namespace {

// Field layout of a version-00 traceparent.
constexpr size_t kTraceparentSize = 55;
constexpr size_t kTraceIdOffset = 3;
constexpr size_t kTraceIdSize = 32;
constexpr size_t kSpanIdOffset = 36;
constexpr size_t kSpanIdSize = 16;
constexpr size_t kFlagsOffset = 53;

// Per byte: its value for a lowercase hex digit (0..15), kNotHex for any
// other byte. OR-ing the entries of a field gives, in one accumulator,
// whether any byte was not a digit (kNotHex set) and whether any digit was
// non-zero (a low bit set): one load, one lookup and one OR per byte, no
// branch, no allocation. (The parse runs on every incoming call.)
constexpr uint8_t kNotHex = 0x10;
constexpr std::array<uint8_t, 256> kHexTable = [] {
  std::array<uint8_t, 256> t{};
  for (uint8_t& v : t) v = kNotHex;
  for (int c = '0'; c <= '9'; ++c) t[c] = static_cast<uint8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[c] = static_cast<uint8_t>(c - 'a' + 10);
  return t;
}();

// The OR of the table entries of p[0..N).
template <size_t N>
uint8_t HexBits(const char* p) {
  uint8_t acc = 0;
  for (size_t i = 0; i < N; ++i) acc |= kHexTable[static_cast<unsigned char>(p[i])];
  return acc;
}

// For HexBits of a field: all lowercase hex, and (when `nonzero`) not all
// '0'.
constexpr bool IsHex(uint8_t bits) { return (bits & kNotHex) == 0; }
constexpr bool IsNonZeroHex(uint8_t bits) {
  return IsHex(bits) && (bits & 0x0f) != 0;
}

}  // namespace

std::optional<TraceContext> ParseTraceparent(std::string_view header) {
  // Every version is at least as long as version 00; this also bounds all
  // further work (a longer header is only ever looked at up to here).
  if (header.size() < kTraceparentSize) return std::nullopt;
  const char* h = header.data();
  if (!IsHex(HexBits<2>(h)) || (h[0] == 'f' && h[1] == 'f')) {
    return std::nullopt;  // "ff" is forbidden by the spec.
  }
  if (h[0] == '0' && h[1] == '0') {
    // Version 00 has exactly this size.
    if (header.size() != kTraceparentSize) return std::nullopt;
  } else if (header.size() > kTraceparentSize && h[kTraceparentSize] != '-') {
    // A later version may append fields, each after a '-'.
    return std::nullopt;
  }
  if (h[2] != '-' || h[kSpanIdOffset - 1] != '-' ||
      h[kFlagsOffset - 1] != '-') {
    return std::nullopt;
  }
  if (!IsNonZeroHex(HexBits<kTraceIdSize>(h + kTraceIdOffset)) ||
      !IsNonZeroHex(HexBits<kSpanIdSize>(h + kSpanIdOffset)) ||
      !IsHex(HexBits<2>(h + kFlagsOffset))) {
    return std::nullopt;
  }
  TraceContext tc;
  tc.trace_id.assign(h + kTraceIdOffset, kTraceIdSize);
  tc.span_id.assign(h + kSpanIdOffset, kSpanIdSize);
  tc.sampled = (kHexTable[static_cast<unsigned char>(h[kFlagsOffset + 1])] &
                0x1) != 0;
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
