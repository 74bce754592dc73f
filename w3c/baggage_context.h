// W3C Baggage as Context values: request-scoped key/value pairs that travel
// with a request across services (the `baggage` header; codec in
// w3c/baggage.h).
//
//   std::optional<std::string> tenant = reqctx::Baggage(ctx).Get("tenant");
//   reqctx::Context child = reqctx::WithBaggage(ctx, "tenant", "acme");
//
// The server glue (//interceptors) puts an incoming call's baggage in its
// Context; NewClientContext sends the Context's baggage on every outbound
// call. Baggage is for cross-service request attributes (tenant, priority,
// criticality), not for secrets: every hop and proxy sees it.
//
// Thread-safety: everything here is safe from any thread; a Baggage is an
// immutable snapshot. Lifetime: a Baggage shares ownership of its members, so
// it (and pointers returned by Find) stays valid however long the Context
// lives; the Context keeps its baggage for its own lifetime.
#ifndef REQCTX_W3C_BAGGAGE_CONTEXT_H_
#define REQCTX_W3C_BAGGAGE_CONTEXT_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "context/core.h"
#include "w3c/baggage.h"  // IWYU pragma: export

namespace reqctx {

// An immutable view of the baggage a Context carries.
class Baggage {
 public:
  // No members.
  Baggage() = default;
  // The baggage of `ctx` (the nearest set by WithBaggage/WithBaggageMembers
  // or by the server glue), or none.
  explicit Baggage(const Context& ctx);

  // The decoded value for `key`, or nullopt if absent.
  std::optional<std::string> Get(std::string_view key) const;
  // The same without a copy: valid while this Baggage (or a copy) lives;
  // nullptr if absent.
  const std::string* Find(std::string_view key) const;
  // Every member, in order, keys unique.
  const std::vector<BaggageMember>& members() const;
  bool empty() const { return members().empty(); }
  size_t size() const { return members().size(); }

 private:
  std::shared_ptr<const std::vector<BaggageMember>> members_;
};

// A child of `parent` whose baggage is the parent's with `key` set to
// `value` (replacing an existing member with that key, properties dropped,
// or appending). Returns `parent` itself when `key` is not a valid token or
// the new member would push the baggage over W3C's limits (180 members,
// 8,192 bytes formatted): use IsValidBaggageKey to check keys up front.
Context WithBaggage(const Context& parent, std::string_view key,
                    std::string_view value);

// A child of `parent` whose baggage is exactly `members` (as ParseBaggage
// would keep them: invalid members dropped, later duplicates win, limits
// applied). An empty list hides the parent's baggage.
Context WithBaggageMembers(const Context& parent,
                           std::vector<BaggageMember> members);

// A child of `parent` whose baggage is what ParseBaggage keeps of `header`
// (a received header value; several received headers joined with ','), for
// glue code that reads the header off the wire: the members dropped
// (malformed, e.g. a byte outside baggage-octet; over W3C's limits) are
// counted as dropped baggage (w3c/header_rules.h). Returns `parent` itself if
// nothing is kept, so a call without baggage costs no Context layer.
Context WithBaggageHeader(const Context& parent, std::string_view header);

// The `baggage` header for an outbound call under `ctx`, or "" if it has none.
// Its bytes are always legal in a gRPC/HTTP header value (see baggage.h); it
// may be up to 8,192 bytes: the client interceptor trims it to the outbound
// header budget (interceptors/client_interceptor.h).
std::string BaggageHeaderFor(const Context& ctx);

}  // namespace reqctx

#endif  // REQCTX_W3C_BAGGAGE_CONTEXT_H_
