#include "drain/call_tracker.h"

#include <chrono>
#include <utility>
#include <vector>

#include "ledger/causes.h"

namespace reqctx::drain {

absl::Status ShuttingDownError() {
  static const absl::Status* const error = new absl::Status(MarkCause(
      absl::UnavailableError("server shutting down"),
      CauseKind::kServerShutdown));
  return *error;
}

bool IsShuttingDown(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable &&
         s.message() == "server shutting down";
}

absl::Status ShutdownStatusOr(const Context& ctx, const absl::Status& s) {
  if (s.ok()) return s;
  absl::Status cause = Cause(ctx);
  return IsShuttingDown(cause) ? cause : s;
}

CallTracker::Call::Call(Call&& other) noexcept
    : tracker_(std::exchange(other.tracker_, nullptr)),
      id_(other.id_),
      ctx_(std::move(other.ctx_)) {}

CallTracker::Call::~Call() {
  if (tracker_ != nullptr) tracker_->Untrack(id_);
}

CallTracker::Call CallTracker::Track(const Context& call_ctx) {
  auto [ctx, cancel] = WithCancelCause(call_ctx);
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t id = next_id_++;
  if (canceled_) {
    lock.unlock();
    cancel(ShuttingDownError());
    return Call(nullptr, id, std::move(ctx));
  }
  calls_.emplace(id, std::move(cancel));
  return Call(this, id, std::move(ctx));
}

size_t CallTracker::CancelAll() {
  // Before any Context ends: the glue reads it when they do.
  if (signal_ != nullptr) signal_->CancelsNow();
  std::vector<CancelCauseFunc> cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (canceled_) return 0;
    canceled_ = true;
    cancels.reserve(calls_.size());
    // The map keeps its copies (the Contexts stay canceled, not dropped)
    // until each Call untracks itself.
    for (const auto& [id, cancel] : calls_) cancels.push_back(cancel);
  }
  // Outside the lock: a cancel runs the Contexts' callbacks (AfterFuncs,
  // outbound calls' cancels), which may untrack other calls.
  for (const CancelCauseFunc& cancel : cancels) cancel(ShuttingDownError());
  return cancels.size();
}

size_t CallTracker::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

bool CallTracker::WaitIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_.wait_until(lock, absl::ToChronoTime(deadline),
                          [this] { return calls_.empty(); });
}

void CallTracker::Untrack(uint64_t id) {
  CancelCauseFunc cancel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = calls_.find(id);
    if (it == calls_.end()) return;
    cancel = std::move(it->second);
    calls_.erase(it);
    if (calls_.empty()) idle_.notify_all();
  }
  // Dropped here, outside the lock: the call's child Context ends.
}

}  // namespace reqctx::drain
