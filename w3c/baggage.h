// W3C Baggage (https://www.w3.org/TR/baggage/): parsing and formatting of the
// `baggage` header, free of gRPC and of //context so the codec builds alone
// (clang's libFuzzer build, tools/fuzz_baggage.sh). The Context side (typed
// accessors, propagation) is w3c/baggage_context.h.
//
//   baggage     = member *( OWS "," OWS member )
//   member      = key OWS "=" OWS value *( OWS ";" OWS property )
//   property    = key OWS "=" OWS value / key
//   key         = token (RFC 7230: ALPHA DIGIT ! # $ % & ' * + - . ^ _ ` | ~)
//   value       = *baggage-octet, percent-encoded octets allowed
//   baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
//
// Parsing never fails as a whole: a malformed member (no '=', empty or
// non-token key, a byte outside baggage-octet in a value, a '%' not followed
// by two hex digits, a malformed property) is dropped and the others kept;
// empty members (",,") are skipped. Values are percent-decoded into bytes
// (kept as bytes: non-UTF-8 is not rejected or replaced). Properties are kept
// as metadata, canonicalized (no whitespace, values not decoded) and passed
// on unchanged. A later member with an already seen key replaces that
// member's value and properties in place (the last one wins).
//
// Limits (W3C "Limits"): at most kMaxBaggageMembers members and
// kMaxBaggageBytes bytes of formatted header. Members are kept in order while
// both hold; the rest are dropped. Work is linear in the input. `drops`, if
// given, receives how many members were dropped and why.
//
// Every byte FormatBaggage writes is a token character, a baggage-octet or
// one of "=,;%": all in 0x21-0x7E, legal in a gRPC/HTTP header value, so a
// header it writes is never refused by gRPC. A caller short of room (the
// client interceptor's outbound header budget) passes a smaller `max_bytes`:
// whole members are dropped, never a part of one (W3C: "MUST NOT propagate
// any partial list-members").
//
// Formatting percent-encodes every value byte outside baggage-octet and '%'
// itself (uppercase hex), so for every header h:
//   ParseBaggage(FormatBaggage(ParseBaggage(h))) == ParseBaggage(h)
// and FormatBaggage's output never exceeds the limits.
//
// Thread-safety: pure functions. Ownership: plain values.
#ifndef REQCTX_W3C_BAGGAGE_H_
#define REQCTX_W3C_BAGGAGE_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace reqctx {

inline constexpr size_t kMaxBaggageBytes = 8192;
inline constexpr size_t kMaxBaggageMembers = 180;
inline constexpr char kBaggageHeader[] = "baggage";

// One list member. `key` is a token; `value` is the decoded value (any
// bytes); `properties` is "" or the canonical property list as it goes on the
// wire, each property preceded by ';' (e.g. ";ttl=10;private").
struct BaggageMember {
  std::string key;
  std::string value;
  std::string properties;

  bool operator==(const BaggageMember&) const = default;
};

// True if `key` is a non-empty RFC 7230 token (a valid baggage key).
bool IsValidBaggageKey(std::string_view key);

// How many members ParseBaggage or FormatBaggage dropped, by reason.
struct BaggageDrops {
  size_t invalid = 0;     // Malformed (ParseBaggage) or an invalid key.
  size_t over_limit = 0;  // Past the member count or the byte limit.
};

// The members of a `baggage` header value (several received headers may be
// joined with ','), malformed ones dropped, within the limits; the drops are
// added to `*drops` if given.
std::vector<BaggageMember> ParseBaggage(std::string_view header,
                                        BaggageDrops* drops = nullptr);

// The header for `members`: invalid keys are skipped, properties that are
// not a canonical property list are left out, and members that would exceed
// the limits (kMaxBaggageMembers, and min(max_bytes, kMaxBaggageBytes)
// bytes) are dropped (in order: the first ones that fit are kept); the drops
// are added to `*drops` if given. "" when nothing is left.
std::string FormatBaggage(const std::vector<BaggageMember>& members,
                          size_t max_bytes = kMaxBaggageBytes,
                          BaggageDrops* drops = nullptr);

// The wire form of one member ("key=encoded-value" plus its properties), or
// "" if its key is invalid. Properties are included only if canonical.
std::string FormatBaggageMember(const BaggageMember& member);

}  // namespace reqctx

#endif  // REQCTX_W3C_BAGGAGE_H_
