// W3C traceparent parse/format (see traceparent.h); no gRPC, no //context.
#include "w3c/traceparent.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace reqctx {
namespace {

// Field layout of a version-00 traceparent.
constexpr size_t kTraceparentSize = 55;
constexpr size_t kTraceIdOffset = 3;
constexpr size_t kTraceIdSize = 32;
constexpr size_t kSpanIdOffset = 36;
constexpr size_t kSpanIdSize = 16;
constexpr size_t kFlagsOffset = 53;

// The parse runs on every incoming call: no branch per byte, no allocation
// (the ids are held inline).
//
// Per byte: its value for a lowercase hex digit (0..15), kNotHex for any
// other byte. OR-ing the entries of a field tells whether any byte was not
// a digit (kNotHex set).
constexpr uint8_t kNotHex = 0x10;
constexpr std::array<uint8_t, 256> kHexTable = [] {
  std::array<uint8_t, 256> t{};
  for (uint8_t& v : t) v = kNotHex;
  for (int c = '0'; c <= '9'; ++c) t[c] = static_cast<uint8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[c] = static_cast<uint8_t>(c - 'a' + 10);
  return t;
}();

// The OR of the table entries of p[0..N) (for the 2-digit fields).
template <size_t N>
uint8_t HexBits(const char* p) {
  uint8_t acc = 0;
  for (size_t i = 0; i < N; ++i) acc |= kHexTable[static_cast<unsigned char>(p[i])];
  return acc;
}

// For HexBits of a field: all lowercase hex.
constexpr bool IsHex(uint8_t bits) { return (bits & kNotHex) == 0; }

// The ids are checked 8 bytes at a time (SWAR): per byte b of a word, with
// its top bit cleared first so no sum carries into the next byte,
//   digit:  (b ^ 0x30) < 10,  i.e. bit 7 of (b ^ 0x30) + 0x76 is clear;
//   letter: 1 <= (b ^ 0x60) <= 6, i.e. bit 7 of (b ^ 0x60) + 0x7f is set
//           and bit 7 of (b ^ 0x60) + 0x79 is clear;
// and a byte whose top bit was set is not hex. Every sum stays below 0x100
// per byte, so the bytes never interact. The fuzz target checks this
// against a per-character reference.
constexpr uint64_t kOnes = 0x0101010101010101;
constexpr uint64_t kHigh = 0x8080808080808080;

// Bit 7 of each byte of the result: that byte of `w` is a lowercase hex
// digit.
constexpr uint64_t HexMask(uint64_t w) {
  const uint64_t low = w & ~kHigh;
  const uint64_t d = low ^ (0x30 * kOnes);
  const uint64_t l = low ^ (0x60 * kOnes);
  const uint64_t digit = ~(d + 0x76 * kOnes);
  const uint64_t letter = (l + 0x7f * kOnes) & ~(l + 0x79 * kOnes);
  return (digit | letter) & ~w & kHigh;
}

// True if the N bytes at `p` (N a multiple of 8) are lowercase hex digits,
// not all '0'.
template <size_t N>
bool IsNonZeroHexId(const char* p) {
  static_assert(N % 8 == 0);
  uint64_t hex = kHigh;
  uint64_t nonzero = 0;
  for (size_t i = 0; i < N; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    hex &= HexMask(w);
    nonzero |= w ^ (0x30 * kOnes);
  }
  return hex == kHigh && nonzero != 0;
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
  if (!IsNonZeroHexId<kTraceIdSize>(h + kTraceIdOffset) ||
      !IsNonZeroHexId<kSpanIdSize>(h + kSpanIdOffset) ||
      !IsHex(HexBits<2>(h + kFlagsOffset))) {
    return std::nullopt;
  }
  TraceContext tc;
  tc.trace_id = std::string_view(h + kTraceIdOffset, kTraceIdSize);
  tc.span_id = std::string_view(h + kSpanIdOffset, kSpanIdSize);
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
