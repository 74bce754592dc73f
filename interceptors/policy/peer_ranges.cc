#include "interceptors/policy/peer_ranges.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace reqctx::policy {
namespace {

// A bare IPv4 or IPv6 address (no brackets, no port).
std::optional<IpAddress> ParseIp(std::string_view text) {
  // inet_pton reads a C string: an embedded NUL would hide what follows.
  if (text.empty() || text.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string s(text);
  IpAddress a;
  if (s.find(':') == std::string::npos) {
    if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) != 1) return std::nullopt;
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) != 1) return std::nullopt;
  a.v6 = true;
  // ::ffff:a.b.c.d is an IPv4 peer seen through an IPv6 socket.
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.bytes.data(), kMapped, sizeof(kMapped)) == 0) {
    IpAddress v4;
    std::memcpy(v4.bytes.data(), a.bytes.data() + 12, 4);
    return v4;
  }
  return a;
}

}  // namespace

std::optional<IpAddress> PeerAddress(std::string_view grpc_peer) {
  if (grpc_peer.substr(0, 5) == "ipv4:") {
    std::string_view rest = grpc_peer.substr(5);
    const size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::optional<IpAddress> a = ParseIp(rest.substr(0, colon));
    if (!a.has_value() || a->v6) return std::nullopt;
    return a;
  }
  if (grpc_peer.substr(0, 5) == "ipv6:") {
    const std::string rest = absl::StrReplaceAll(
        std::string(grpc_peer.substr(5)),
        {{"%5B", "["}, {"%5D", "]"}, {"%5b", "["}, {"%5d", "]"}});
    if (rest.empty() || rest.front() != '[') return std::nullopt;
    const size_t close = rest.find(']');
    if (close == std::string::npos) return std::nullopt;
    std::string_view host(rest.data() + 1, close - 1);
    // A zone ("fe80::1%25eth0") is not part of the address.
    if (size_t zone = host.find('%'); zone != std::string_view::npos) {
      host = host.substr(0, zone);
    }
    return ParseIp(host);
  }
  return std::nullopt;
}

absl::StatusOr<PeerRanges> PeerRanges::Parse(
    const std::vector<std::string>& ranges) {
  PeerRanges out;
  for (const std::string& entry : ranges) {
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad peer range \"", absl::CEscape(entry), "\": ", why,
          " (want an IPv4 or IPv6 address, optionally /prefix)"));
    };
    std::string_view text = entry;
    std::optional<int> prefix;
    if (size_t slash = text.find('/'); slash != std::string_view::npos) {
      int p = 0;
      if (!absl::SimpleAtoi(std::string(text.substr(slash + 1)), &p)) {
        return bad("prefix is not a number");
      }
      prefix = p;
      text = text.substr(0, slash);
    }
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
      text = text.substr(1, text.size() - 2);
    }
    std::optional<IpAddress> a = ParseIp(text);
    if (!a.has_value()) return bad("not an IP address");
    const int bits = a->v6 ? 128 : 32;
    if (prefix.has_value() && (*prefix < 0 || *prefix > bits)) {
      return bad(absl::StrCat("prefix outside 0-", bits));
    }
    out.ranges_.push_back({*a, prefix.value_or(bits)});
  }
  return out;
}

bool PeerRanges::Contains(const IpAddress& address) const {
  for (const Range& r : ranges_) {
    if (r.address.v6 != address.v6) continue;
    const int full = r.prefix / 8;
    const int rest = r.prefix % 8;
    if (std::memcmp(r.address.bytes.data(), address.bytes.data(), full) != 0) {
      continue;
    }
    if (rest != 0) {
      const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
      if ((r.address.bytes[full] & mask) != (address.bytes[full] & mask)) {
        continue;
      }
    }
    return true;
  }
  return false;
}

bool PeerRanges::Contains(std::string_view grpc_peer) const {
  std::optional<IpAddress> a = PeerAddress(grpc_peer);
  return a.has_value() && Contains(*a);
}

}  // namespace reqctx::policy
