// libFuzzer target for ParseBaggage / FormatBaggage (w3c/baggage.h).
//
// Besides "never crash, never read out of bounds" (ASan/UBSan in the clang
// build, tools/fuzz_baggage.sh), every input is checked against:
//   1. the limits: at most 180 members, unique valid keys, a formatted header
//      of at most 8,192 bytes;
//   2. the round-trip property: ParseBaggage(FormatBaggage(P)) == P for
//      P = ParseBaggage(input), and formatting that again gives the same
//      header (idempotence);
//   3. an independent reference of the W3C grammar (a character-by-character
//      state machine, written differently from the parser's split-and-trim),
//      for inputs small enough that no limit applies: the members it accepts,
//      later duplicates winning, are exactly what ParseBaggage returns.
// A violation calls __builtin_trap(), which libFuzzer reports as a crash and
// the gcc-built regression test (baggage_corpus_test) as a signal.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "w3c/baggage.h"
#include "w3c/header_rules.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

bool RefToken(unsigned char c) {
  static const std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
         (c >= 'A' && c <= 'Z') || kExtra.find(c) != std::string_view::npos;
}

// baggage-octet: printable US-ASCII but space, '"', ',', ';' and '\'.
bool RefOctet(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '"' && c != ',' && c != ';' &&
         c != '\\';
}

int RefHex(unsigned char c) {
  const std::string_view lower = "0123456789abcdef";
  const std::string_view upper = "0123456789ABCDEF";
  size_t p = lower.find(c);
  if (p == std::string_view::npos) p = upper.find(c);
  return p == std::string_view::npos ? -1 : static_cast<int>(p);
}

// One member by a state machine over its characters; nullopt if rejected.
// An all-whitespace member is "skip" (reported as a member with empty key).
std::optional<reqctx::BaggageMember> RefMember(std::string_view s) {
  enum State { kLead, kKey, kBeforeEq, kAfterEq, kValue, kAfterValue,
               kPropLead, kPropKey, kPropBeforeEq, kPropAfterEq, kPropValue,
               kPropAfterValue };
  State st = kLead;
  reqctx::BaggageMember m;
  std::string prop_key, prop_value;
  bool prop_has_eq = false;
  auto flush_prop = [&] {
    m.properties += ";" + prop_key;
    if (prop_has_eq) m.properties += "=" + prop_value;
    prop_key.clear();
    prop_value.clear();
    prop_has_eq = false;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = s[i];
    const bool ws = c == ' ' || c == '\t';
    switch (st) {
      case kLead:
        if (ws) break;
        if (!RefToken(c)) return std::nullopt;
        m.key.push_back(c);
        st = kKey;
        break;
      case kKey:
        if (RefToken(c)) { m.key.push_back(c); break; }
        if (ws) { st = kBeforeEq; break; }
        if (c == '=') { st = kAfterEq; break; }
        return std::nullopt;
      case kBeforeEq:
        if (ws) break;
        if (c == '=') { st = kAfterEq; break; }
        return std::nullopt;
      case kAfterEq:
        if (ws) break;
        st = kValue;
        [[fallthrough]];
      case kValue:
        if (c == ';') { st = kPropLead; break; }
        if (ws) { st = kAfterValue; break; }
        if (!RefOctet(c)) return std::nullopt;
        if (c == '%') {
          if (i + 2 >= s.size()) return std::nullopt;
          const int hi = RefHex(s[i + 1]), lo = RefHex(s[i + 2]);
          if (hi < 0 || lo < 0) return std::nullopt;
          m.value.push_back(static_cast<char>(hi * 16 + lo));
          i += 2;
        } else {
          m.value.push_back(c);
        }
        break;
      case kAfterValue:
        if (ws) break;
        if (c == ';') { st = kPropLead; break; }
        return std::nullopt;
      case kPropLead:
        if (ws) break;
        if (!RefToken(c)) return std::nullopt;
        prop_key.push_back(c);
        st = kPropKey;
        break;
      case kPropKey:
        if (RefToken(c)) { prop_key.push_back(c); break; }
        if (ws) { st = kPropBeforeEq; break; }
        if (c == '=') { prop_has_eq = true; st = kPropAfterEq; break; }
        if (c == ';') { flush_prop(); st = kPropLead; break; }
        return std::nullopt;
      case kPropBeforeEq:
        if (ws) break;
        if (c == '=') { prop_has_eq = true; st = kPropAfterEq; break; }
        if (c == ';') { flush_prop(); st = kPropLead; break; }
        return std::nullopt;
      case kPropAfterEq:
        if (ws) break;
        st = kPropValue;
        [[fallthrough]];
      case kPropValue:
        if (c == ';') { flush_prop(); st = kPropLead; break; }
        if (ws) { st = kPropAfterValue; break; }
        if (!RefOctet(c)) return std::nullopt;
        prop_value.push_back(c);
        break;
      case kPropAfterValue:
        if (ws) break;
        if (c == ';') { flush_prop(); st = kPropLead; break; }
        return std::nullopt;
    }
  }
  switch (st) {
    case kLead:
      return reqctx::BaggageMember{};  // Blank: skipped.
    case kKey:
    case kBeforeEq:
    case kPropLead:  // A ';' with no property after it.
      return std::nullopt;
    case kPropKey:
    case kPropBeforeEq:
    case kPropAfterEq:
    case kPropValue:
    case kPropAfterValue:
      flush_prop();
      return m;
    default:
      return m;
  }
}

// The members of `h` by the reference; nullopt when a limit could apply.
std::optional<std::vector<reqctx::BaggageMember>> RefParse(std::string_view h) {
  if (h.size() > reqctx::kMaxBaggageBytes) return std::nullopt;
  std::vector<reqctx::BaggageMember> out;
  size_t raw_members = 0;
  size_t start = 0;
  while (start <= h.size()) {
    size_t end = h.find(',', start);
    if (end == std::string_view::npos) end = h.size();
    std::optional<reqctx::BaggageMember> m = RefMember(h.substr(start, end - start));
    start = end + 1;
    if (!m || m->key.empty()) continue;
    if (++raw_members > reqctx::kMaxBaggageMembers) return std::nullopt;
    bool replaced = false;
    for (auto& seen : out) {
      if (seen.key == m->key) { seen = *m; replaced = true; }
    }
    if (!replaced) out.push_back(*m);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view header(reinterpret_cast<const char*>(data), size);
  const std::vector<reqctx::BaggageMember> parsed = reqctx::ParseBaggage(header);

  Check(parsed.size() <= reqctx::kMaxBaggageMembers);
  std::set<std::string> keys;
  for (const auto& m : parsed) {
    Check(reqctx::IsValidBaggageKey(m.key));
    Check(keys.insert(m.key).second);
  }
  const std::string formatted = reqctx::FormatBaggage(parsed);
  // What is forwarded is legal on gRPC's wire, and a byte bound (the
  // outbound header budget) keeps whole members only.
  Check(reqctx::IsLegalGrpcHeaderValue(formatted));
  const std::string bounded =
      reqctx::FormatBaggage(parsed, formatted.size() / 2);
  Check(bounded.size() <= formatted.size() / 2);
  for (const reqctx::BaggageMember& m : reqctx::ParseBaggage(bounded)) {
    bool found = false;
    for (const reqctx::BaggageMember& p : parsed) found = found || p == m;
    Check(found);
  }
  Check(formatted.size() <= reqctx::kMaxBaggageBytes);
  Check(reqctx::ParseBaggage(formatted) == parsed);
  Check(reqctx::FormatBaggage(reqctx::ParseBaggage(formatted)) == formatted);

  if (std::optional<std::vector<reqctx::BaggageMember>> ref = RefParse(header)) {
    Check(*ref == parsed);
  }
  return 0;
}
