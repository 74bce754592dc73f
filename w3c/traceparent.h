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

#include <optional>
#include <string>
#include <string_view>

namespace reqctx {

// One hop of a trace. `trace_id` is 32 and `span_id` 16 lowercase hex digits,
// neither all zeros; `sampled` is the W3C "sampled" flag (bit 0 of flags).
struct TraceContext {
  std::string trace_id;
  std::string span_id;
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
