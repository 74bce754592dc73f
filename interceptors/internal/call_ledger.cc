#include "interceptors/internal/call_ledger.h"

#include <utility>

#include "interceptors/internal/call_observer.h"
#include "ledger/causes.h"
#include "ledger/grpc_ledger.h"

namespace reqctx::internal {

absl::Time LedgerNow() { return absl::FromUnixNanos(MonoNowNs()); }

void CallLedger::Begin(std::string_view method, std::string_view host,
                       absl::Time arrival, std::optional<absl::Duration> budget,
                       LedgerReturn send, bool forward) {
  std::lock_guard<std::mutex> lock(mu_);
  rec_.emplace(method, host, arrival, budget);
  rec_->HandlerStarted(arrival);
  send_ = send;
  forward_ = forward;
}

void CallLedger::NotePolicy(const LedgerPolicy& policy,
                            std::optional<absl::Duration> reply_margin) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!rec_.has_value() || ended_) return;
  const bool shed = policy_.shed;
  policy_ = policy;
  policy_.shed = policy_.shed || shed;
  rec_->SetPolicy(policy_);
  reply_margin_ = reply_margin;
}

void CallLedger::NoteQueued(absl::Duration queued, bool shed) {
  const absl::Time now = LedgerNow();
  std::lock_guard<std::mutex> lock(mu_);
  if (!rec_.has_value() || ended_) return;
  rec_->SetQueued(queued);
  rec_->HandlerStarted(now);
  if (shed) {
    policy_.shed = true;
    refused_ = CauseKind::kShed;
    rec_->SetPolicy(policy_);
  }
}

void CallLedger::NoteRefused(CauseKind cause) {
  std::lock_guard<std::mutex> lock(mu_);
  refused_ = cause;
}

LedgerRecorder::OutboundId CallLedger::OutboundStarted(
    std::string_view method, std::optional<absl::Duration> budget) {
  // rec_ is emplaced before the call (and so this ledger) is published.
  if (!rec_.has_value()) return -1;
  return rec_->OutboundStarted(method, budget, LedgerNow());
}

void CallLedger::OutboundEnded(LedgerRecorder::OutboundId id, int code,
                               bool sent, std::optional<LedgerHop> child,
                               std::string_view peer) {
  if (!rec_.has_value()) return;
  rec_->OutboundEnded(id, LedgerNow(), code, sent, std::move(child), peer);
}

std::optional<grpc::Status> CallLedger::StatusToSend(
    const grpc::Status& status,
    const std::multimap<std::string, std::string>* trailers,
    const Context& ctx) {
  const absl::Time now = LedgerNow();
  const int code = static_cast<int>(status.error_code());
  std::optional<Ledger> ledger;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!rec_.has_value() || ended_) return std::nullopt;
    ended_ = true;
    rec_->HandlerEnded(now);
    if (send_ == LedgerReturn::kNever ||
        (send_ == LedgerReturn::kOnFailure &&
         !LedgerRecorder::ShouldReturn(code))) {
      return std::nullopt;
    }
    if (trailers != nullptr &&
        trailers->count(std::string(kStatusDetailsKey)) > 0) {
      return std::nullopt;  // The application's own details: never replaced.
    }
    const absl::Status cause = ctx.IsDone() ? Cause(ctx) : absl::OkStatus();
    const CauseKind kind = CauseOf(cause);
    rec_->Ended(code, kind != CauseKind::kNone ? kind : refused_,
                CauseHop(cause), reply_margin_);
    ledger = rec_->Snapshot();
  }
  if (status.ok()) {
    return grpc::Status(grpc::StatusCode::OK, "",
                        EncodeLedgerStatus(0, "", *ledger));
  }
  grpc::Status with = WithLedger(status, *ledger);
  if (with.error_details() == status.error_details()) return std::nullopt;
  return with;
}

absl::Duration CallLedger::OwnShare(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!rec_.has_value()) return absl::ZeroDuration();
  return rec_->OwnShare(now);
}

std::optional<Ledger> CallLedger::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!rec_.has_value()) return std::nullopt;
  return rec_->Snapshot();
}

}  // namespace reqctx::internal
