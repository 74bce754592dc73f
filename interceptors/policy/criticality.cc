#include "interceptors/policy/criticality.h"

#include <optional>
#include <utility>
#include <vector>

#include "w3c/baggage.h"
#include "w3c/baggage_context.h"

namespace reqctx::policy {
namespace {

inline constexpr Key<Criticality> kCriticalityValue("reqctx.criticality");

std::optional<Criticality> Parse(std::string_view v) {
  if (v == "critical") return Criticality::kCritical;
  if (v == "default") return Criticality::kDefault;
  if (v == "sheddable") return Criticality::kSheddable;
  return std::nullopt;
}

// The criticality an already parsed member list names (the codec keeps one
// member per key), or kDefault.
Criticality FromMembers(const std::vector<BaggageMember>& members) {
  for (const BaggageMember& m : members) {
    if (m.key == kCriticalityKey) {
      return Parse(m.value).value_or(Criticality::kDefault);
    }
  }
  return Criticality::kDefault;
}

// `members` without their `criticality` member, plus one for `c` unless it
// is kDefault. The criticality member goes last, unless the limits would
// then drop it: then it goes first (what the shedder needs outranks the
// members the limits push out).
std::vector<BaggageMember> MembersWithCriticality(
    std::vector<BaggageMember> members, Criticality c) {
  std::erase_if(members, [](const BaggageMember& m) {
    return m.key == kCriticalityKey;
  });
  if (c == Criticality::kDefault) return members;
  BaggageMember entry{kCriticalityKey, std::string(CriticalityName(c)), ""};
  members.push_back(entry);
  if (FromMembers(ParseBaggage(FormatBaggage(members))) == c) return members;
  members.pop_back();
  members.insert(members.begin(), std::move(entry));
  return members;
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
  return FromMembers(ParseBaggage(baggage));
}

std::string BaggageWithCriticality(std::string_view baggage, Criticality c) {
  return FormatBaggage(MembersWithCriticality(ParseBaggage(baggage), c));
}

Criticality CriticalityOf(const Context& ctx) {
  if (const Criticality* c = ctx.Value(kCriticalityValue)) return *c;
  return FromMembers(Baggage(ctx).members());
}

Context WithCriticality(const Context& parent, Criticality c) {
  Context ctx = WithValue(parent, kCriticalityValue, c);
  const Baggage baggage(parent);
  if (FromMembers(baggage.members()) == c &&
      (c != Criticality::kDefault || baggage.Find(kCriticalityKey) == nullptr)) {
    return ctx;  // The baggage says so already.
  }
  return WithBaggageMembers(ctx,
                            MembersWithCriticality(baggage.members(), c));
}

}  // namespace reqctx::policy
