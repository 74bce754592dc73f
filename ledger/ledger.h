// The budget ledger: where a call's deadline went, hop by hop.
//
// Each reqctx server hop records, per call, its budget at arrival, the time
// queued in the load shedder, the handler's own work and its time waiting on
// outbound calls (each with its method, the budget it was given, how long it
// took, its code and the ledger it returned), the reply margin, the policy's
// decisions and how the call ended with its cause (ledger/causes.h). A hop
// returning a failed call sends its ledger, with its children's nested
// inside, in the `grpc-status-details-bin` trailer as a google.rpc.Status
// (proto/reqctx/v1/ledger.proto states the wire format). This header is free
// of gRPC: the struct, the recorder, the codec and the readable line.
// ledger/grpc_ledger.h puts them on gRPC's Status and ClientContext.
//
//   LedgerRecorder rec(method, "frontend", arrival, budget);   // per call
//   rec.HandlerStarted(t0);
//   LedgerRecorder::OutboundId id = rec.OutboundStarted(m, given, t1);
//   rec.OutboundEnded(id, t2, code, /*sent=*/true, child_ledger);
//   rec.HandlerEnded(t3);
//   rec.Ended(code, cause, deadline_set_by, margin);
//   if (LedgerRecorder::ShouldReturn(code)) details = EncodeLedgerStatus(...);
//
// Size: the serialised google.rpc.Status is at most kLedgerDetailsCap bytes
// (4096; 5464 once base64'd on the wire), which with grpc-status and a
// grpc-message fits gRPC's default 8 KiB limit on received metadata. Over the
// cap (or over the decoder's depth, hop or call bounds below), the deepest hops are summarised first (a level at a time: their
// Outbound keeps method, budget, time and code, and counts the hops it lost
// in summarised_hops), then the root's last outbound calls are omitted, then
// the readable line is dropped, then the ledger itself (the ErrorInfo stays).
//
// Decoding is bounded and validating: details over kLedgerDecodeLimit bytes,
// that do not parse, nest deeper than kLedgerMaxDepth hops, hold more than
// kLedgerMaxHops hops or kLedgerMaxOutbound calls, have a string over
// kLedgerMaxString bytes or with a byte gRPC refuses in a text header
// (w3c/header_rules.h), a negative duration (but budgets and margins), a
// code outside 0-16 are rejected whole (kInvalidArgument); so are details
// with a string field (of google.rpc.Status, its Any's type URL, or the
// ledger) that is not UTF-8 -- found on the wire before protobuf parses, so
// hostile details write no protobuf ERROR line to the log. A cause number
// this version does not know decodes as CauseKind::kNone.
//
// Thread-safety: LedgerRecorder's OutboundStarted/OutboundEnded may be called
// from any number of threads at once (one std::mutex); its other methods are
// called by the call's owner, not concurrently with each other or with
// Snapshot(). The free functions are pure and safe from any thread.
// Lifetime: the recorder keeps the string_views `method` and `host` it was
// given; they must outlive it (gRPC's method name lives for the call; the
// host label for the server). It copies outbound method names.
#ifndef REQCTX_LEDGER_LEDGER_H_
#define REQCTX_LEDGER_LEDGER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ledger/causes.h"

namespace reqctx {

// The most bytes of serialised google.rpc.Status a hop sends.
inline constexpr size_t kLedgerDetailsCap = 4096;
// The most bytes of details the decoder reads (more is rejected).
inline constexpr size_t kLedgerDecodeLimit = 16384;
// Decoder bounds (see above).
inline constexpr int kLedgerMaxDepth = 32;
inline constexpr int kLedgerMaxHops = 256;
inline constexpr int kLedgerMaxOutbound = 1024;
inline constexpr size_t kLedgerMaxString = 256;
// The readable line in DebugInfo is cut to this many bytes.
inline constexpr size_t kLedgerLineCap = 512;
// Outbound calls a recorder keeps per hop; later ones are only counted.
inline constexpr int kLedgerRecordedOutbound = 32;

// The Any type URL of reqctx.v1.BudgetLedger, and the ErrorInfo domain and
// DebugInfo marker reqctx sends with it.
inline constexpr std::string_view kLedgerTypeUrl =
    "type.googleapis.com/reqctx.v1.BudgetLedger";
inline constexpr std::string_view kErrorInfoTypeUrl =
    "type.googleapis.com/google.rpc.ErrorInfo";
inline constexpr std::string_view kDebugInfoTypeUrl =
    "type.googleapis.com/google.rpc.DebugInfo";
inline constexpr std::string_view kLedgerDomain = "reqctx.dev";
inline constexpr std::string_view kLedgerDebugMarker = "reqctx.dev/ledger";

// What the server's deadline policy did (reqctx.v1.Policy).
struct LedgerPolicy {
  enum class DeadlineChange : uint8_t { kKept = 0, kCapped = 1, kDefaulted = 2 };
  absl::Duration min_budget = absl::ZeroDuration();  // Zero: none.
  DeadlineChange deadline_change = DeadlineChange::kKept;
  absl::Duration policy_budget = absl::ZeroDuration();  // When changed.
  bool shed = false;
};

struct LedgerOutbound;

// One server hop (reqctx.v1.Hop); the fields mean what the proto says.
struct LedgerHop {
  std::string method;
  std::string host;
  std::optional<absl::Duration> budget;  // nullopt: no deadline.
  absl::Duration queued = absl::ZeroDuration();
  absl::Duration work = absl::ZeroDuration();
  absl::Duration outbound_wait = absl::ZeroDuration();
  std::optional<absl::Duration> reply_margin;
  LedgerPolicy policy;
  int code = 0;  // gRPC status code, 0-16.
  CauseKind cause = CauseKind::kNone;
  std::string deadline_set_by;
  std::vector<LedgerOutbound> outbound;
  uint32_t omitted_outbound = 0;
};

// One outbound call of a hop (reqctx.v1.Outbound).
struct LedgerOutbound {
  std::string method;
  std::optional<absl::Duration> budget;
  absl::Duration took = absl::ZeroDuration();
  int code = 0;
  bool sent = true;
  std::vector<LedgerHop> ledger;  // Empty, or the one hop the callee returned.
  uint32_t summarised_hops = 0;
  // The callee's address (gRPC's peer string); set only for a call that was
  // sent, failed and returned no ledger.
  std::string peer;
};

// The time `o` spent in transit: its `took` less the callee's own recorded
// time (queued + work + outbound wait of the ledger it returned), at least
// zero; nullopt when the callee returned no ledger (then the split between
// the network and the callee is not known).
std::optional<absl::Duration> LedgerNetworkTime(const LedgerOutbound& o);

// The whole tree (reqctx.v1.BudgetLedger).
struct Ledger {
  LedgerHop root;
  uint32_t summarised_hops = 0;
};

// Records one server call's ledger cheaply: the recorder is one object of
// 528 bytes (the glue allocates or embeds it per call); a call without
// outbound calls allocates nothing more (measured: ~250 instructions for the
// whole success path, callgrind, -c opt); each outbound call copies its
// method name (one allocation past 15 bytes; ~770 instructions with its two
// mutex sections), a third one grows the list, and a child ledger (only
// failed calls return one) is kept behind a pointer. Nothing is serialised.
class LedgerRecorder {
 public:
  using OutboundId = int;  // -1: over kLedgerRecordedOutbound, only counted.

  // `arrival` and every later time are on one clock the caller chooses
  // (injected; only differences are used). `budget`: the time left when the
  // call arrived, nullopt without a deadline.
  LedgerRecorder(std::string_view method, std::string_view host,
                 absl::Time arrival, std::optional<absl::Duration> budget);
  LedgerRecorder(const LedgerRecorder&) = delete;
  LedgerRecorder& operator=(const LedgerRecorder&) = delete;

  // True for the codes whose calls return their ledger by default:
  // DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED, UNAVAILABLE.
  static bool ShouldReturn(int code);

  void SetQueued(absl::Duration queued);
  void SetPolicy(const LedgerPolicy& policy);
  // The handler started/ended; own work is the time between them during
  // which no outbound call was in flight.
  void HandlerStarted(absl::Time now);
  void HandlerEnded(absl::Time now);
  // An outbound call starts; thread-safe.
  OutboundId OutboundStarted(std::string_view method,
                             std::optional<absl::Duration> budget,
                             absl::Time now);
  // It ended with `code`; `sent` false if it ended before it was sent;
  // `child` the ledger the callee returned (kept only when the id was
  // recorded); `peer` the callee's address (gRPC's peer string), kept only
  // for a sent, failed call without `child` (LedgerOutbound::peer).
  // Thread-safe. Each id ends once; an unknown id is ignored (but still
  // ends the in-flight interval).
  void OutboundEnded(OutboundId id, absl::Time now, int code, bool sent,
                     std::optional<LedgerHop> child = std::nullopt,
                     std::string_view peer = {});
  // How the call ended.
  void Ended(int code, CauseKind cause, std::string_view deadline_set_by,
             std::optional<absl::Duration> reply_margin);
  // The ledger so far (allocates: call it only to return or log it).
  Ledger Snapshot() const;
  // The hop's own share of its budget so far, without allocating: the time
  // queued plus its own work (the handler's time during which no outbound
  // call was in flight), the handler taken to run until `now` if
  // HandlerEnded was not called; what reqctx_budget_consumed_seconds
  // records. Thread-safe with the outbound calls (as Snapshot).
  absl::Duration OwnShare(absl::Time now) const;

 private:
  struct Record {
    std::string method;
    std::optional<absl::Duration> budget;
    absl::Time start;
    absl::Duration took = absl::ZeroDuration();
    int code = 0;
    bool sent = true;
    bool ended = false;
    std::unique_ptr<LedgerHop> child;  // Only when the callee returned one.
    std::string peer;                  // Only for a failed call without one.
  };

  const std::string_view method_;
  const std::string_view host_;
  const std::optional<absl::Duration> budget_;
  const absl::Time arrival_;
  absl::Duration queued_ = absl::ZeroDuration();
  LedgerPolicy policy_;
  absl::Time handler_start_ = absl::InfinitePast();
  absl::Time handler_end_ = absl::InfinitePast();
  int code_ = 0;
  CauseKind cause_ = CauseKind::kNone;
  std::string deadline_set_by_;
  std::optional<absl::Duration> reply_margin_;

  mutable std::mutex mu_;
  absl::InlinedVector<Record, 2> records_;          // Guarded by mu_.
  uint32_t omitted_ = 0;                            // Guarded by mu_.
  int in_flight_ = 0;                               // Guarded by mu_.
  absl::Time busy_since_ = absl::InfinitePast();    // Guarded by mu_.
  absl::Duration busy_ = absl::ZeroDuration();      // Guarded by mu_.
};

// The one readable line, e.g. "deadline 250 ms: frontend 0.4 ms queued, 50.1
// ms work -> middle (199 ms left) 150.2 ms work, deadline ran out here ->
// /echo.Echo/Call never called". A hop is named by its host label, else its
// method. From each hop the line follows its last failed outbound call (a
// nested ledger, "never called", or "<time>, <CODE> (no ledger)"); a hop
// ended by a failure whose path goes no deeper is marked "... here", with
// who set that deadline when known: the hop's own deadline_set_by, else
// its own policy's cause ("(reply margin)"), else -- for the caller's
// deadline -- the nearest hop above it whose policy capped or defaulted the
// deadline it inherits ("(set by frontend)"; nothing when it is the top
// caller's own deadline). A
// nested ledger's transit (LedgerNetworkTime) of 1 ms or more shows as
// "-> network 100.2 ms -> middle ..."; a call that was sent and ran out of
// deadline without returning a ledger as "-> network 37.0 ms to
// ipv4:10.0.0.2:443 (/echo.Echo/Call), DEADLINE_EXCEEDED: deadline ran out in
// transit, no ledger came back" (the callee's address when known, else its
// method): the caller's time, not its work, went waiting on that link.
std::string LedgerLine(const Ledger& ledger);

// The serialised google.rpc.Status for a failed call: code, message (cut to
// 1024 bytes), details [BudgetLedger, ErrorInfo, DebugInfo]; at most
// kLedgerDetailsCap bytes, summarising as described above.
std::string EncodeLedgerStatus(int code, std::string_view message,
                               const Ledger& ledger);

// What a hop sends in grpc-status-details-bin when its call already carries
// `existing` details (the handler's, or a peer's it passed on). The rule:
//   * none: EncodeLedgerStatus(code, message, ledger);
//   * a google.rpc.Status: its code, message, every detail and any field
//     this schema does not know are kept as they are, except reqctx's own (a BudgetLedger, an ErrorInfo of domain
//     reqctx.dev, a DebugInfo marked reqctx.dev/ledger: a child hop's, which
//     this hop's ledger contains), and this hop's three are appended, if the
//     result stays within kLedgerDetailsCap (summarising this ledger as
//     needed);
//   * anything else, or no room: nullopt, meaning send `existing` unchanged.
// A peer's own details are therefore never lost or changed.
std::optional<std::string> MergeLedgerDetails(std::string_view existing,
                                              int code,
                                              std::string_view message,
                                              const Ledger& ledger);

// The ledger in serialised google.rpc.Status `details`: kNotFound when it is
// empty, parses but holds no BudgetLedger, or (kInvalidArgument) is
// rejected by the bounds above. The first BudgetLedger detail is used.
absl::StatusOr<Ledger> DecodeLedgerDetails(std::string_view details);

}  // namespace reqctx

#endif  // REQCTX_LEDGER_LEDGER_H_
