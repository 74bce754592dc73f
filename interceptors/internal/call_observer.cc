#include "interceptors/internal/call_observer.h"

#include <atomic>
#include <chrono>
#include <string>

#include "context/after_func.h"
#include "ledger/causes.h"
#include "interceptors/internal/call_ledger.h"
#include "interceptors/internal/observability_state.h"
#include "w3c/trace_propagation.h"
#include "metrics/call_log.h"

namespace reqctx::internal {
namespace {

absl::Duration SinceNs(int64_t ns) { return absl::Nanoseconds(MonoNowNs() - ns); }

}  // namespace

int64_t MonoNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void ServerCallObserver::Start(const char* method, const Context& ctx,
                               int64_t arrival_ns,
                               std::optional<absl::Duration> remaining,
                               std::span<const std::string_view> traceparents) {
  const bool metrics = MetricsOn();
  log_ = GetCallLogSink() != nullptr;
  if (OrphanDetectorEnabled()) {
    watch_ = std::make_unique<OrphanWatch>(ctx, "handler", method);
  }
  if (!metrics && !log_) return;
  method_ = method;
  start_ns_ = arrival_ns;
  remaining_ = remaining;
  if (log_ && traceparents.size() == 1) {
    // The caller's span, if the trace was continued from it.
    if (std::optional<TraceContext> parent = ParseTraceparent(traceparents[0])) {
      std::copy(parent->span_id.begin(), parent->span_id.end(),
                parent_span_.begin());
      has_parent_span_ = true;
    }
  }
  if (!metrics) return;
  m_ = &metrics::ServerMethod(method);
  m_->started->Increment();
  m_->active->Increment();
  if (remaining.has_value()) {
    m_->deadline_at_arrival->ObserveDuration(*remaining);
  } else {
    m_->no_deadline->Increment();
  }
}

void ServerCallObserver::Finish(int code, const Context& ctx,
                                int64_t cancel_seen_ns, CallLedger* ledger) {
  watch_.reset();
  if (m_ == nullptr && !log_) return;
  const int64_t now = MonoNowNs();
  // Orphaned: how long the handler ran on after its Context was done. Done
  // by the deadline: at arrival + remaining; by a cancel: when it was seen.
  absl::Duration orphaned = absl::ZeroDuration();
  CauseKind cause = CauseKind::kNone;
  if (ctx.IsDone()) {
    cause = CauseOf(Cause(ctx));
    int64_t done_ns = cancel_seen_ns;
    if (ctx.Err().code() == absl::StatusCode::kDeadlineExceeded &&
        remaining_.has_value()) {
      done_ns = start_ns_ + absl::ToInt64Nanoseconds(*remaining_);
    }
    if (done_ns > 0 && done_ns < now) orphaned = absl::Nanoseconds(now - done_ns);
  }
  const absl::Duration duration = absl::Nanoseconds(now - start_ns_);
  std::optional<absl::Duration> own;
  if (ledger != nullptr) own = ledger->OwnShare(absl::FromUnixNanos(now));
  if (m_ != nullptr) {
    m_->handled->Get(code, cause).Increment();
    if (own.has_value()) m_->budget_consumed->ObserveDuration(*own);
    m_->active->Decrement();
    m_->handling->ObserveDuration(duration);
    if (orphaned > absl::ZeroDuration()) m_->orphaned->ObserveDuration(orphaned);
  }
  if (log_) {
    if (CallLogSink* sink = GetCallLogSink()) {
      const TraceContext* tc = FindTraceContext(ctx);
      CallLogRecord r;
      r.side = "server";
      r.method = method_;
      r.code = code;
      if (tc != nullptr) {
        r.trace_id = tc->trace_id;
        r.span_id = tc->span_id;
      }
      if (has_parent_span_) {
        r.parent_span_id = std::string_view(parent_span_.data(), 16);
      }
      r.deadline_at_arrival = remaining_;
      r.duration = duration;
      r.orphaned = orphaned;
      r.cause = CauseName(cause);
      r.budget_consumed = own;
      sink->Write(r);
    }
  }
}

void ClientCallObserver::Start(const char* method, const Context* ctx) {
  const bool metrics = MetricsOn();
  log_ = GetCallLogSink() != nullptr;
  if (!metrics && !log_) return;
  method_ = method;
  start_ns_ = MonoNowNs();
  started_ = true;
  if (log_ && ctx != nullptr) ctx_ = *ctx;
  if (!metrics) return;
  m_ = &metrics::ClientMethod(method);
  m_->started->Increment();
  m_->active->Increment();
}

void ClientCallObserver::Finish(int code, CauseKind cause) {
  if (!started_) return;
  started_ = false;
  if (m_ != nullptr) {
    m_->handled[code >= 0 && code < metrics::kCodes ? code : 2]->Increment();
    m_->active->Decrement();
  }
  if (!log_) return;
  CallLogSink* sink = GetCallLogSink();
  if (sink == nullptr) return;
  const absl::Duration duration = SinceNs(start_ns_);  // Only for the log.
  CallLogRecord r;
  r.side = "client";
  r.method = method_;
  r.code = code;
  if (ctx_.has_value()) {
    if (const TraceContext* tc = FindTraceContext(*ctx_)) {
      r.trace_id = tc->trace_id;
      r.span_id = tc->span_id;
    }
    if (std::optional<absl::Time> d = ctx_->Deadline()) {
      r.deadline_at_arrival = *d - absl::Now() + duration;
    }
  }
  r.duration = duration;
  r.orphaned = absl::ZeroDuration();
  r.cause = CauseName(cause);
  sink->Write(r);
}

void ClientCallObserver::CancelSent(const metrics::ClientMethodMetrics* m) {
  if (m == nullptr) return;
  m->cancel_propagation->ObserveDuration(SinceAfterFuncContextDone());
}

}  // namespace reqctx::internal
