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

// Why a call or Context ended. Values equal reqctx.v1.Cause's numbers. Where
// the glue gives each (Cause(ctx) of the Context named):
enum class CauseKind : uint8_t {
  // Not ended, ended normally (the call returned), or the cause is unknown
  // (a Context canceled with no cause, or by code outside reqctx).
  kNone = 0,
  // The caller's deadline ran out: a server call's Context (FromServerContext)
  // at the grpc-timeout it arrived with (or Envoy's shorter one). Hop, when
  // known: who set it.
  kCallerDeadline = 1,
  // The caller canceled the call, or went away (its stream was reset or its
  // connection lost) before the server answered: a server call's Context.
  // gRPC 1.51 reports its own Server::Shutdown cancel the same way (it does
  // not say which), so drain with drain::CallTracker to tell them apart.
  kClientCancel = 2,
  // This server was shutting down: the Contexts drain::CallTracker::CancelAll
  // ends (the status keeps drain's UNAVAILABLE "server shutting down", so
  // clients may retry it elsewhere), and a call the load shedder still held
  // in its queue when it was destroyed (UNAVAILABLE).
  kServerShutdown = 3,
  // The load shedder refused the call (queue full, hopeless at arrival,
  // evicted, or it waited out its queue's bound): RESOURCE_EXHAUSTED, and
  // the refused call's Context ends with it (policy::LoadShedder's decision
  // status).
  kShed = 4,
  // The handler's deadline, earlier than the caller's by the method's
  // reply_margin (policy::MethodPolicy), ran out: the handler was stopped
  // early so the reply can still reach the caller in time.
  kReplyMargin = 5,
  // A sibling task of a Group failed: the Group's Context is canceled with
  // that first error (its code and message, as Go's errgroup) marked with
  // this kind; hop: which sibling ("task #N", N counting Go() calls from 1).
  kGroupSibling = 6,
  // A hedged or retried attempt lost to another one (policy::CallWithRetry
  // ends the losers' Contexts with this cause once one attempt won).
  kHedgeLost = 7,
  // A detached call's own bound ran out (policy::DetachWithBound's grace).
  kDetachedBound = 8,
  // The server's capped (max_deadline) or defaulted (default_deadline)
  // deadline ran out, or one a ServerCallRules deadline rule set.
  kDeadlinePolicy = 9,
  // Refused: less budget left than the method's minimum (min_budget,
  // learned or fixed): DEADLINE_EXCEEDED before the handler, and the
  // refused call's Context ends with it.
  kMinBudget = 10,
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
// kCallerDeadline, kReplyMargin, kDetachedBound, kDeadlinePolicy and
// kMinBudget (policy::ServerPolicy refuses such a call with it);
// kCancelled for kClientCancel, kServerShutdown, kGroupSibling and
// kHedgeLost (the Context was canceled); kResourceExhausted for kShed; kOk
// for kNone.
absl::StatusCode CauseCode(CauseKind kind);
// A short English phrase: "caller's deadline", "client cancel", "server
// shutting down", "shed by the load shedder", "reply margin", "a sibling in
// the group failed", "hedge lost", "detached call's bound",
// "server's deadline policy", "below the minimum budget"; "" for kNone.
std::string_view CausePhrase(CauseKind kind);
// "<code word>: <phrase>[ (set by <hop>)]", e.g. "canceled: server shutting
// down" or "deadline exceeded: caller's deadline (set by frontend)"; what
// Go's context.Cause would let a status message say. For kGroupSibling the
// hop is the sibling: "... failed (task #2)". "" for kNone.
std::string CauseMessage(CauseKind kind, std::string_view hop = {});

// What a status message says of `cause` (a Context's Cause()): "" unless
// CauseOf(cause) is a kind; else CauseMessage(kind, hop), and, when `cause`
// says more than that (a marked status of its own: a Group's first error,
// a refusal's reason), ": " and its message. For kGroupSibling the hop is
// the task: "canceled: a sibling in the group failed (task #2): not found".
std::string CauseDescription(const absl::Status& cause);

// The cause status for `kind`: code CauseCode(kind), message
// CauseMessage(kind, hop), payloads as above (the hop payload only when
// `hop` is not empty). kNone gives OK (Go: no cause).
absl::Status MakeCause(CauseKind kind, std::string_view hop = {});
// `status` marked as a cause of `kind` (and `hop`, if not empty): its code
// and message are kept, the payloads added (replacing earlier ones). For a
// cause that keeps another status's meaning, as a Group's first error or
// drain's ShuttingDownError. An OK `status` stays OK (it cannot carry one).
absl::Status MarkCause(absl::Status status, CauseKind kind,
                       std::string_view hop = {});
// MakeCause(kind) without a hop, built once per process: copying it costs a
// reference count, not an allocation (for the glue's per-call paths). The
// reference is valid for the life of the process.
const absl::Status& CauseStatus(CauseKind kind);
// The kind `status` carries, or kNone if it is not a cause status (OK, or
// no payload, or a payload naming no kind).
CauseKind CauseOf(const absl::Status& status);
// The hop a cause status names, or "" if none.
std::string CauseHop(const absl::Status& status);

// The canonical name of status code `code` ("OK", "DEADLINE_EXCEEDED", ...;
// gRPC's and absl's codes 0..16 have the same numbers and names), or
// "UNKNOWN" outside 0..16. For metric labels, log fields and the ledger.
std::string_view CodeName(int code);
inline constexpr int kStatusCodes = 17;

}  // namespace reqctx

#endif  // REQCTX_LEDGER_CAUSES_H_
