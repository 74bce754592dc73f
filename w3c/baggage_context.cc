#include "w3c/baggage_context.h"

#include <utility>

#include "w3c/header_rules.h"

namespace reqctx {
namespace {

using MemberList = std::shared_ptr<const std::vector<BaggageMember>>;

inline constexpr Key<MemberList> kBaggageKey("reqctx.baggage");

// A child of `parent` carrying `members`, already as ParseBaggage keeps them.
Context WithParsed(const Context& parent, std::vector<BaggageMember> members) {
  return WithValue(parent, kBaggageKey,
                   MemberList(std::make_shared<const std::vector<BaggageMember>>(
                       std::move(members))));
}

const std::vector<BaggageMember>& NoMembers() {
  static const auto* const none = new std::vector<BaggageMember>();
  return *none;
}

}  // namespace

Baggage::Baggage(const Context& ctx) {
  if (const MemberList* m = ctx.Value(kBaggageKey)) members_ = *m;
}

const std::vector<BaggageMember>& Baggage::members() const {
  return members_ ? *members_ : NoMembers();
}

const std::string* Baggage::Find(std::string_view key) const {
  for (const BaggageMember& m : members()) {
    if (m.key == key) return &m.value;
  }
  return nullptr;
}

std::optional<std::string> Baggage::Get(std::string_view key) const {
  const std::string* v = Find(key);
  if (v == nullptr) return std::nullopt;
  return *v;
}

Context WithBaggage(const Context& parent, std::string_view key,
                    std::string_view value) {
  if (!IsValidBaggageKey(key)) return parent;
  std::vector<BaggageMember> members = Baggage(parent).members();
  bool replaced = false;
  for (BaggageMember& m : members) {
    if (m.key != key) continue;
    m.value.assign(value);
    m.properties.clear();
    replaced = true;
  }
  if (!replaced) {
    members.push_back(BaggageMember{std::string(key), std::string(value), ""});
  }
  // Over the limits the formatted list would lose a member: refuse instead.
  std::vector<BaggageMember> kept = ParseBaggage(FormatBaggage(members));
  if (kept.size() != members.size()) return parent;
  return WithParsed(parent, std::move(kept));
}

Context WithBaggageMembers(const Context& parent,
                           std::vector<BaggageMember> members) {
  // One normalization for every source: what a peer would parse.
  return WithParsed(parent, ParseBaggage(FormatBaggage(members)));
}

Context WithBaggageHeader(const Context& parent, std::string_view header) {
  BaggageDrops drops;
  std::vector<BaggageMember> members = ParseBaggage(header, &drops);
  CountDroppedHeaders(DroppedHeader::kBaggage, DropReason::kInvalid,
                      drops.invalid);
  CountDroppedHeaders(DroppedHeader::kBaggage, DropReason::kLimit,
                      drops.over_limit);
  if (members.empty()) return parent;
  return WithParsed(parent, std::move(members));
}

std::string BaggageHeaderFor(const Context& ctx) {
  const MemberList* m = ctx.Value(kBaggageKey);
  if (m == nullptr || *m == nullptr || (*m)->empty()) return "";
  return FormatBaggage(**m);
}

}  // namespace reqctx
