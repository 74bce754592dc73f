// W3C `tracestate` (Trace Context level 1, "tracestate Header"): validation
// and trimming, free of gRPC and of //context so it builds alone (the
// traceparent fuzz target checks it too).
//
//   list        = list-member 0*31( OWS "," OWS list-member )
//   list-member = key "=" value / OWS
//   key         = simple-key / multi-tenant-key
//   simple-key  = lcalpha 0*255( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
//   multi-tenant-key = tenant-id "@" system-id
//   tenant-id   = ( lcalpha / DIGIT ) 0*240( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
//   system-id   = lcalpha 0*13( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
//   value       = 0*255( chr ) nblk-chr
//   nblk-chr    = %x21-2B / %x2D-3C / %x3E-7E
//   chr         = %x20 / nblk-chr
//
// SanitizeTracestate never fails as a whole: each malformed member (any byte
// outside the grammar, TAB, NUL, DEL or UTF-8 included) and each repeat of a
// key already seen is dropped and the others kept, in order; empty members
// are skipped. Then W3C's limits: at most kMaxTracestateMembers members (the
// first ones kept) and at most `max_bytes` of output (kMaxTracestateBytes by
// default): members longer than kTracestateLongMember characters are removed
// first, from the right, then any member from the right, until it fits
// (W3C "Limits"). The output is the kept members joined by ',' without
// whitespace, so every byte is in 0x20-0x7E (legal in a gRPC/HTTP header)
// and SanitizeTracestate(out).value == out. Work is linear in the input.
//
// Thread-safety: pure functions. Ownership: plain values.
#ifndef REQCTX_W3C_TRACESTATE_H_
#define REQCTX_W3C_TRACESTATE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace reqctx {

inline constexpr size_t kMaxTracestateMembers = 32;
inline constexpr size_t kMaxTracestateBytes = 512;
inline constexpr size_t kTracestateLongMember = 128;

// What SanitizeTracestate kept and how many members it dropped, by reason.
struct SanitizedTracestate {
  std::string value;      // "" when no member is left.
  size_t invalid = 0;     // Malformed members and repeated keys.
  size_t over_limit = 0;  // Past 32 members or `max_bytes`.
};

// The valid part of a `tracestate` value (several received headers joined
// with ','), within W3C's limits and `max_bytes` (see above).
SanitizedTracestate SanitizeTracestate(std::string_view header,
                                       size_t max_bytes = kMaxTracestateBytes);

// The grammar's `key` and `value` (see above).
bool IsValidTracestateKey(std::string_view key);
bool IsValidTracestateValue(std::string_view value);

}  // namespace reqctx

#endif  // REQCTX_W3C_TRACESTATE_H_
