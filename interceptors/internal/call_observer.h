// What the interceptors record per call (metrics, orphan watch, call log),
// in one place per side (internal to //interceptors; public switches in
// interceptors/observability.h).
//
// Thread-safety: an observer belongs to one call. Start runs in the call's
// first hook, Finish once in its last; the call's owner publishes the
// observer between the two (ServerCall: its begun_ flag, release/acquire;
// the client interceptor: its own lock), as gRPC may run them on different
// threads, so neither locks.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_CALL_OBSERVER_H_
#define REQCTX_INTERCEPTORS_INTERNAL_CALL_OBSERVER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "absl/time/time.h"
#include "context/core.h"
#include "ledger/causes.h"
#include "context/orphans.h"
#include "metrics/rpc_metrics.h"

namespace reqctx::internal {

class CallLedger;

// The monotonic clock in ns (the clock every observer time is on).
int64_t MonoNowNs();

class ServerCallObserver {
 public:
  // At the call's arrival (`arrival_ns`, MonoNowNs, read before the
  // deadline): `remaining` is the time left to its deadline (nullopt: none),
  // `traceparents` the incoming header values (for the parent span id in
  // the call log). A no-op while metrics, orphan detection and the call log
  // are all off.
  void Start(const char* method, const Context& ctx, int64_t arrival_ns,
             std::optional<absl::Duration> remaining,
             std::span<const std::string_view> traceparents);
  // When the status `code` is sent (the handler returned). `cancel_seen_ns`:
  // when the glue saw the call canceled (MonoNowNs clock), 0 if never.
  // `ledger` (may be null): the call's, whose own share of the budget
  // (CallLedger::OwnShare) goes to reqctx_budget_consumed_seconds and the
  // call log's budget_consumed_s.
  void Finish(int code, const Context& ctx, int64_t cancel_seen_ns,
              CallLedger* ledger = nullptr);

 private:
  const metrics::ServerMethodMetrics* m_ = nullptr;
  const char* method_ = "";
  int64_t start_ns_ = 0;
  std::optional<absl::Duration> remaining_;
  std::unique_ptr<OrphanWatch> watch_;
  bool log_ = false;
  std::array<char, 16> parent_span_{};
  bool has_parent_span_ = false;
};

class ClientCallObserver {
 public:
  // At the call's first hook; `ctx` is the Context given to
  // NewClientContext, or nullptr for a call made without one.
  void Start(const char* method, const Context* ctx);
  // When the call's status `code` is received. Idempotent.
  // `cause`: why the caller's Context ended the call (kNone: it did not),
  // for the log line.
  void Finish(int code, CauseKind cause = CauseKind::kNone);
  // The method's handles once Start ran with metrics on, else nullptr.
  const metrics::ClientMethodMetrics* metrics() const { return m_; }
  // In the AfterFunc that cancels the call once its Context is done, right
  // after TryCancel(): records the time since the Context was done into
  // `m` (metrics() of the call's observer; nothing if nullptr).
  static void CancelSent(const metrics::ClientMethodMetrics* m);

 private:
  const metrics::ClientMethodMetrics* m_ = nullptr;
  const char* method_ = "";
  int64_t start_ns_ = 0;
  bool started_ = false;
  bool log_ = false;
  std::optional<Context> ctx_;  // Only while the call log is on.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_CALL_OBSERVER_H_
