// PeerRanges: IP address ranges (CIDRs) and the test of a gRPC peer against
// them, for ServerPolicy's criticality trust (issue 19, A4). gRPC-free.
//
//   absl::StatusOr<PeerRanges> r = PeerRanges::Parse({"10.0.0.0/8", "::1"});
//   r->Contains("ipv4:10.1.2.3:5555");   // true
//
// A range is an IPv4 or IPv6 address, optionally followed by "/prefix"
// (0-32 for IPv4, 0-128 for IPv6; no prefix: that one address). A peer is
// what grpc::ServerContext::peer() reports: "ipv4:ADDR:PORT",
// "ipv6:[ADDR]:PORT" (brackets possibly percent-encoded, %5B and %5D). An
// IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is tested as its IPv4 address.
// Anything else (unix sockets, an empty or malformed peer) is in no range.
//
// Thread-safety: immutable after Parse; safe from any thread.
// Lifetime: a plain value.
#ifndef REQCTX_INTERCEPTORS_POLICY_PEER_RANGES_H_
#define REQCTX_INTERCEPTORS_POLICY_PEER_RANGES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace reqctx::policy {

// An IP address: 4 bytes (IPv4) or 16 (IPv6), network order.
struct IpAddress {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};
};

// The address of a gRPC peer string (see the file comment), or nullopt.
std::optional<IpAddress> PeerAddress(std::string_view grpc_peer);

class PeerRanges {
 public:
  PeerRanges() = default;  // No range: contains nothing.
  // InvalidArgument naming the first malformed entry.
  static absl::StatusOr<PeerRanges> Parse(
      const std::vector<std::string>& ranges);

  // True if `grpc_peer`'s address is in one of the ranges.
  bool Contains(std::string_view grpc_peer) const;
  bool Contains(const IpAddress& address) const;
  bool empty() const { return ranges_.empty(); }

 private:
  struct Range {
    IpAddress address;
    int prefix = 0;  // Leading bits that must match.
  };
  std::vector<Range> ranges_;
};

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_PEER_RANGES_H_
