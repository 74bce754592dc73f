// W3C `traceparent` parsing and formatting (version 00), free of gRPC and of
// //context, so the parser can be built alone: by clang for the libFuzzer
// target (tools/fuzz_traceparent.sh) and by any tool that only needs the
// header format. Included by w3c/trace_context.h, which is the public header
// to use (it adds TraceContext in a Context). Was interceptors/traceparent.h,
// which still forwards here.
//
//   traceparent = "00-" <32 hex trace id> "-" <16 hex span id> "-" <2 hex flags>
//
// Parsing is strict and bounded: lowercase hex only, non-zero ids; anything
// else (uppercase, wrong lengths, version ff, junk) is rejected, and only the
// first 56 bytes of any input are ever read, so a hostile header costs O(55)
// work. Version 00 is exactly 55 characters. A header with a later version
// (01..fe) is parsed by the version-00 rules, as W3C Trace Context (level 1,
// "Versioning of traceparent") requires: it must be at least 55 characters,
// and anything after the flags must start with '-' (fields a later version
// adds, ignored). Such a header is passed on as version 00 (the only version
// this library writes). Of the flags only bit 0 ("sampled") is kept: W3C
// Trace Context (level 1, "Other Flags") says the other bits MUST be set to
// zero by vendors, so a header with flags other than 00/01 formats back with
// them cleared.
//
// Thread-safety: pure functions. Ownership: TraceContext is a plain value.
#ifndef REQCTX_W3C_TRACEPARENT_H_
#define REQCTX_W3C_TRACEPARENT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>

namespace reqctx {

// An id of a trace (N = 32) or span (N = 16), held inline: up to N
// characters, never an allocation (a std::string of 32 or 16 characters
// allocates, once per id and copy, on every call). A valid W3C id is exactly
// N lowercase hex digits, not all zeros; HexId itself does not check (as a
// string did not): it holds whatever it was given, cut to its first N
// characters (no valid id is longer). Reads as a std::string_view (implicit
// conversion, view()); compares with another HexId or any string;
// std::string(id) or id.str() makes a string. A plain value: copyable,
// trivially destructible; not thread-safe for concurrent writes (like any
// value).
template <size_t N>
class HexId {
 public:
  static_assert(N > 0 && N < 256);
  static constexpr size_t kMaxSize = N;

  // Empty.
  constexpr HexId() = default;
  // The first N characters of `s` (all of it if shorter).
  constexpr HexId(std::string_view s)  // NOLINT: implicit, as std::string's.
      : size_(static_cast<uint8_t>(std::min(s.size(), N))) {
    std::copy_n(s.data(), size_, digits_);
  }
  // From anything that reads as a string_view (a std::string, a literal, a
  // char pointer): the same.
  template <typename S>
    requires(std::is_convertible_v<const S&, std::string_view> &&
             !std::is_same_v<std::remove_cvref_t<S>, HexId> &&
             !std::is_same_v<std::remove_cvref_t<S>, std::string_view>)
  constexpr HexId(const S& s)  // NOLINT: implicit, as std::string's.
      : HexId(std::string_view(s)) {}

  constexpr std::string_view view() const { return {digits_, size_}; }
  constexpr operator std::string_view() const { return view(); }  // NOLINT
  std::string str() const { return std::string(view()); }
  constexpr const char* data() const { return digits_; }
  constexpr size_t size() const { return size_; }
  constexpr bool empty() const { return size_ == 0; }
  constexpr const char* begin() const { return digits_; }
  constexpr const char* end() const { return digits_ + size_; }

  // With another HexId (a template so that only a HexId itself matches:
  // a string compares as a string, never converted, so never cut to N).
  template <typename T>
    requires std::is_same_v<T, HexId>
  friend constexpr bool operator==(const HexId& a, const T& b) {
    return a.view() == b.view();
  }
  friend constexpr bool operator==(const HexId& a, std::string_view b) {
    return a.view() == b;
  }
  template <typename T>
    requires std::is_same_v<T, HexId>
  friend constexpr auto operator<=>(const HexId& a, const T& b) {
    return a.view() <=> b.view();
  }
  friend std::ostream& operator<<(std::ostream& os, const HexId& id) {
    return os << id.view();
  }

 private:
  char digits_[N] = {};
  uint8_t size_ = 0;
};

using TraceId = HexId<32>;  // 32 lowercase hex digits when valid.
using SpanId = HexId<16>;   // 16 lowercase hex digits when valid.

// One hop of a trace. `trace_id` is 32 and `span_id` 16 lowercase hex digits,
// neither all zeros; `sampled` is the W3C "sampled" flag (bit 0 of flags).
// The ids are held inline (HexId): a TraceContext never allocates.
struct TraceContext {
  TraceId trace_id;
  SpanId span_id;
  bool sampled = true;
};

// Parses a W3C traceparent header (version 00, or a later version by the
// version-00 rules; see above); nullopt if it is invalid.
std::optional<TraceContext> ParseTraceparent(std::string_view header);
// The version-00 header for `tc` ("...-01" when sampled, "...-00" if not).
// ParseTraceparent(FormatTraceparent(tc)) == tc for every valid tc, and
// FormatTraceparent(*ParseTraceparent(h)) == h for every valid h whose flags
// are 00 or 01 and whose version is 00 (other flags come back with the
// unknown bits cleared; a later version comes back as "00-" with the same ids
// and no extra fields).
std::string FormatTraceparent(const TraceContext& tc);

}  // namespace reqctx

#endif  // REQCTX_W3C_TRACEPARENT_H_
