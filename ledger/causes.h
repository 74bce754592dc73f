// Why a Context ended: documented cause values users can switch on.
//
// Go's context.Cause lets a service say *why* a context is done; reqctx's
// Cause(ctx) (context/core.h) returns the absl::Status given to a
// CancelCauseFunc or a With*Cause constructor. The glue builds those statuses
// with MakeCause, so code can switch on CauseOf(Cause(ctx)) instead of
// matching strings:
//
//   switch (reqctx::CauseOf(reqctx::Cause(ctx))) {
//     case reqctx::CauseKind::kCallerDeadline: ...
//     case reqctx::CauseKind::kServerShutdown: ...
//   }
//
// A cause status carries its kind as the payload kCausePayloadUrl (value: the
// kind's name, e.g. "SERVER_SHUTDOWN") and, optionally, the hop it names (the
// host label that set the deadline, say) as kCauseHopPayloadUrl. Its code is
// the gRPC-style code a call ended by it reports (below); its message is
// CauseMessage(kind, hop). The names and numbers are those of the reqctx.v1.Cause
// enum (proto/reqctx/v1/ledger.proto), and the names are the label values of
// metrics and logs; they never change meaning.
//
// Thread-safety: every function is pure and safe from any thread.
// Lifetime: the returned string_views point at static strings.
#ifndef REQCTX_LEDGER_CAUSES_H_
#define REQCTX_LEDGER_CAUSES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace reqctx {

// Why a call or Context ended. Values equal reqctx.v1.Cause's numbers.
enum class CauseKind : uint8_t {
  kNone = 0,            // Not ended, ended normally, or the cause is unknown.
  kCallerDeadline = 1,  // The caller's deadline ran out (hop: who set it).
  kClientCancel = 2,    // The caller canceled the call, or went away.
  kServerShutdown = 3,  // This server was shutting down.
  kShed = 4,            // The load shedder refused it, or its queue's bound.
  kReplyMargin = 5,     // Ended early to keep the reply margin.
  kGroupSibling = 6,    // A sibling task of a Group failed.
  kHedgeLost = 7,       // A hedged or retried attempt lost to another one.
  kDetachedBound = 8,   // A detached call's own bound ran out.
  kDeadlinePolicy = 9,  // The server's capped or defaulted deadline ran out.
  kMinBudget = 10,      // Refused: less budget left than the method's minimum.
};
inline constexpr int kCauseKinds = 11;

// Payload type URLs of a cause status (absl::Status::SetPayload).
inline constexpr std::string_view kCausePayloadUrl = "reqctx.dev/cause";
inline constexpr std::string_view kCauseHopPayloadUrl = "reqctx.dev/cause-hop";

// The stable upper-case name, as in reqctx.v1.Cause ("CALLER_DEADLINE"); "NONE"
// for kNone.
std::string_view CauseName(CauseKind kind);
// The kind named `name` (as CauseName returns), or nullopt.
std::optional<CauseKind> CauseFromName(std::string_view name);
// The kind numbered `n` (reqctx.v1.Cause), or nullopt when out of range.
std::optional<CauseKind> CauseFromNumber(int64_t n);
// The code a call ended by `kind` reports: kDeadlineExceeded for
// kCallerDeadline, kReplyMargin, kDetachedBound and kDeadlinePolicy;
// kCancelled for kClientCancel, kServerShutdown, kGroupSibling and
// kHedgeLost (the Context was canceled); kResourceExhausted for kShed and
// kMinBudget; kOk for kNone.
absl::StatusCode CauseCode(CauseKind kind);
// A short English phrase: "caller's deadline", "client cancel", "server
// shutting down", "shed by the load shedder", "reply margin", "a sibling in
// the group failed", "hedge lost", "detached call's bound",
// "server's deadline policy", "below the minimum budget"; "" for kNone.
std::string_view CausePhrase(CauseKind kind);
// "<code word>: <phrase>[ (set by <hop>)]", e.g. "canceled: server shutting
// down" or "deadline exceeded: caller's deadline (set by frontend)"; what
// Go's context.Cause would let a status message say. "" for kNone.
std::string CauseMessage(CauseKind kind, std::string_view hop = {});

// The cause status for `kind`: code CauseCode(kind), message
// CauseMessage(kind, hop), payloads as above (the hop payload only when
// `hop` is not empty). kNone gives OK (Go: no cause).
absl::Status MakeCause(CauseKind kind, std::string_view hop = {});
// The kind `status` carries, or kNone if it is not a cause status (OK, or
// no payload, or a payload naming no kind).
CauseKind CauseOf(const absl::Status& status);
// The hop a cause status names, or "" if none.
std::string CauseHop(const absl::Status& status);

}  // namespace reqctx

#endif  // REQCTX_LEDGER_CAUSES_H_
