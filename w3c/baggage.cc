#include "w3c/baggage.h"

#include <algorithm>
#include <optional>
#include <unordered_map>

namespace reqctx {
namespace {

bool IsOws(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

bool IsTokenChar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z')) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
         std::string_view::npos;
}

bool IsBaggageOctet(unsigned char c) {
  return c == 0x21 || (c >= 0x23 && c <= 0x2B) || (c >= 0x2D && c <= 0x3A) ||
         (c >= 0x3C && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsRawValue(std::string_view v) {
  for (char c : v) {
    if (!IsBaggageOctet(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Decodes a raw value (baggage-octets, '%XX' escapes); nullopt if malformed.
std::optional<std::string> DecodeValue(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (!IsBaggageOctet(static_cast<unsigned char>(c))) return std::nullopt;
    if (c != '%') {
      out.push_back(c);
      continue;
    }
    if (i + 2 >= raw.size()) return std::nullopt;
    const int hi = HexValue(raw[i + 1]);
    const int lo = HexValue(raw[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

void AppendEncoded(std::string_view value, std::string& out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (IsBaggageOctet(u) && c != '%') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xf]);
    }
  }
}

// Appends the canonical form of one property (";key" or ";key=value") to
// `out`; false if it is malformed.
bool AppendProperty(std::string_view prop, std::string& out) {
  prop = TrimOws(prop);
  const size_t eq = prop.find('=');
  const std::string_view key = TrimOws(prop.substr(0, eq));
  if (!IsValidBaggageKey(key)) return false;
  out.push_back(';');
  out.append(key);
  if (eq == std::string_view::npos) return true;
  const std::string_view value = TrimOws(prop.substr(eq + 1));
  if (!IsRawValue(value)) return false;
  out.push_back('=');
  out.append(value);
  return true;
}

// The canonical property list of `props` (the text after the member's first
// ';', properties separated by ';'); nullopt if any is malformed.
std::optional<std::string> CanonicalProperties(std::string_view props) {
  std::string out;
  while (true) {
    const size_t semi = props.find(';');
    if (!AppendProperty(props.substr(0, semi), out)) return std::nullopt;
    if (semi == std::string_view::npos) return out;
    props.remove_prefix(semi + 1);
  }
}

// One member (between commas), or nullopt if malformed.
std::optional<BaggageMember> ParseMember(std::string_view m) {
  const size_t semi = m.find(';');
  const std::string_view kv = m.substr(0, semi);
  const size_t eq = kv.find('=');
  if (eq == std::string_view::npos) return std::nullopt;
  BaggageMember member;
  const std::string_view key = TrimOws(kv.substr(0, eq));
  if (!IsValidBaggageKey(key)) return std::nullopt;
  member.key.assign(key);
  std::optional<std::string> value = DecodeValue(TrimOws(kv.substr(eq + 1)));
  if (!value) return std::nullopt;
  member.value = std::move(*value);
  if (semi != std::string_view::npos) {
    std::optional<std::string> props = CanonicalProperties(m.substr(semi + 1));
    if (!props) return std::nullopt;
    member.properties = std::move(*props);
  }
  return member;
}

// Members in order within the limits, tracking the formatted size.
class LimitedList {
 public:
  // Adds `wire` (the member's formatted form) as `member`, replacing an
  // earlier member with the same key; false if the limits forbid it.
  // O(1) per member (a hash lookup), so a header of thousands of members
  // costs linear time however many are kept.
  bool Add(BaggageMember member, size_t wire_size) {
    if (auto it = index_.find(member.key); it != index_.end()) {
      const size_t i = it->second;
      const size_t new_bytes = bytes_ - sizes_[i] + wire_size;
      if (new_bytes > kMaxBaggageBytes) return false;
      bytes_ = new_bytes;
      sizes_[i] = wire_size;
      members_[i] = std::move(member);
      return true;
    }
    if (members_.size() >= kMaxBaggageMembers) return false;
    const size_t comma = members_.empty() ? 0 : 1;
    if (bytes_ + comma + wire_size > kMaxBaggageBytes) return false;
    bytes_ += comma + wire_size;
    sizes_.push_back(wire_size);
    index_.emplace(member.key, members_.size());
    members_.push_back(std::move(member));
    return true;
  }
  std::vector<BaggageMember> Take() { return std::move(members_); }

 private:
  std::vector<BaggageMember> members_;
  std::vector<size_t> sizes_;
  std::unordered_map<std::string, size_t> index_;  // key -> position.
  size_t bytes_ = 0;
};

}  // namespace

bool IsValidBaggageKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!IsTokenChar(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::vector<BaggageMember> ParseBaggage(std::string_view header,
                                        BaggageDrops* drops) {
  BaggageDrops local;
  BaggageDrops& d = drops != nullptr ? *drops : local;
  LimitedList list;
  while (!header.empty()) {
    const size_t comma = header.find(',');
    const std::string_view raw = TrimOws(header.substr(0, comma));
    header.remove_prefix(comma == std::string_view::npos ? header.size()
                                                         : comma + 1);
    if (raw.empty()) continue;
    // The limits count the member as it will be sent on.
    std::optional<BaggageMember> member = ParseMember(raw);
    if (!member) {
      ++d.invalid;
      continue;
    }
    const size_t wire = FormatBaggageMember(*member).size();
    // Past the limits only replacements of seen keys can still apply.
    if (!list.Add(std::move(*member), wire)) ++d.over_limit;
  }
  return list.Take();
}

std::string FormatBaggageMember(const BaggageMember& member) {
  std::string out;
  if (!IsValidBaggageKey(member.key)) return out;
  out.reserve(member.key.size() + 1 + member.value.size() +
              member.properties.size());
  out.append(member.key);
  out.push_back('=');
  AppendEncoded(member.value, out);
  if (!member.properties.empty()) {
    std::string_view props = member.properties;
    std::optional<std::string> canonical;
    if (props.front() == ';') canonical = CanonicalProperties(props.substr(1));
    if (canonical && *canonical == member.properties) out.append(props);
  }
  return out;
}

std::string FormatBaggage(const std::vector<BaggageMember>& members,
                          size_t max_bytes, BaggageDrops* drops) {
  BaggageDrops local;
  BaggageDrops& d = drops != nullptr ? *drops : local;
  max_bytes = std::min(max_bytes, kMaxBaggageBytes);
  std::string out;
  size_t count = 0;
  for (const BaggageMember& m : members) {
    if (count >= kMaxBaggageMembers) {
      ++d.over_limit;
      continue;
    }
    const std::string wire = FormatBaggageMember(m);
    if (wire.empty()) {
      ++d.invalid;
      continue;
    }
    const size_t comma = out.empty() ? 0 : 1;
    if (out.size() + comma + wire.size() > max_bytes) {
      ++d.over_limit;
      continue;
    }
    if (comma) out.push_back(',');
    out.append(wire);
    ++count;
  }
  return out;
}

}  // namespace reqctx
