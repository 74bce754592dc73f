#include "interceptors/policy/criticality.h"

#include <optional>
#include <vector>

namespace reqctx::policy {
namespace {

inline constexpr Key<Criticality> kCriticalityValue("reqctx.criticality");

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits `s` at commas into trimmed, non-empty list members.
std::vector<std::string_view> Members(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    size_t comma = s.find(',');
    std::string_view m = Trim(s.substr(0, comma));
    if (!m.empty()) out.push_back(m);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

// The key of a member `key=value;props`, trimmed.
std::string_view MemberKey(std::string_view m) {
  return Trim(m.substr(0, m.find('=')));
}

std::optional<Criticality> Parse(std::string_view v) {
  if (v == "critical") return Criticality::kCritical;
  if (v == "default") return Criticality::kDefault;
  if (v == "sheddable") return Criticality::kSheddable;
  return std::nullopt;
}

}  // namespace

std::string_view CriticalityName(Criticality c) {
  switch (c) {
    case Criticality::kSheddable:
      return "sheddable";
    case Criticality::kCritical:
      return "critical";
    case Criticality::kDefault:
      break;
  }
  return "default";
}

Criticality CriticalityFromBaggage(std::string_view baggage) {
  for (std::string_view m : Members(baggage)) {
    size_t eq = m.find('=');
    if (eq == std::string_view::npos || MemberKey(m) != kCriticalityKey) {
      continue;
    }
    std::string_view value = m.substr(eq + 1);
    value = Trim(value.substr(0, value.find(';')));
    return Parse(value).value_or(Criticality::kDefault);
  }
  return Criticality::kDefault;
}

std::string BaggageWithCriticality(std::string_view baggage, Criticality c) {
  std::string out;
  for (std::string_view m : Members(baggage)) {
    if (MemberKey(m) == kCriticalityKey) continue;
    if (!out.empty()) out += ',';
    out.append(m.data(), m.size());
  }
  if (c != Criticality::kDefault) {
    if (!out.empty()) out += ',';
    out += kCriticalityKey;
    out += '=';
    out += CriticalityName(c);
  }
  return out;
}

Criticality CriticalityOf(const Context& ctx) {
  const Criticality* c = ctx.Value(kCriticalityValue);
  return c == nullptr ? Criticality::kDefault : *c;
}

Context WithCriticality(const Context& parent, Criticality c) {
  return WithValue(parent, kCriticalityValue, c);
}

}  // namespace reqctx::policy
