#include "interceptors/internal/server_call.h"

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <utility>

#include "absl/time/clock.h"
#include "context/internal/owned_deadline.h"
#include "interceptors/internal/server_call_registry.h"
#include "interceptors/internal/sync_cancel_watcher.h"

namespace reqctx::internal {
namespace {

// The call whose PollCancelled() is running on this thread. gRPC runs our
// POST_RECV_CLOSE hook (and so maybe End()) inside IsCancelled(), with that
// call's watch_mu_ already held by this thread.
thread_local const ServerCall* t_polling = nullptr;

}  // namespace

void ServerCall::Begin(ServerApi api, Context ctx, CancelFunc cancel,
                       std::optional<IncomingDeadline> deadline,
                       bool deadline_owned) {
  api_ = api;
  ctx_ = std::move(ctx);
  cancel_ = std::move(cancel);
  deadline_ = std::move(deadline);
  deadline_owned_ = deadline_owned;
  ctx_root_ = ContextRoot(ctx_);
  begun_.store(true, std::memory_order_release);
  ServerCallRegistry::Get().Add(sc_, shared_from_this());
  if (ctx_root_ != nullptr) {
    ServerCallRegistry::ByContextRoot().Add(ctx_root_, shared_from_this());
  }
  // Sync: polled from now on (IsCancelled() is safe at any time on the sync
  // API), so Current() alone sees a cancel, FromServerContext or not.
  if (api == ServerApi::kSync) StartWatching();
}

std::shared_ptr<CallLedger> ServerCall::LedgerOf(const Context& ctx) {
  const void* root = ContextRoot(ctx);
  if (root == nullptr) return nullptr;
  std::shared_ptr<ServerCall> call = ServerCallRegistry::ByContextRoot().Find(root);
  if (call == nullptr) return nullptr;
  CallLedger* ledger = &call->ledger_;
  return std::shared_ptr<CallLedger>(std::move(call), ledger);
}

std::optional<grpc::Status> ServerCall::LedgerStatus(
    const grpc::Status& status,
    const std::multimap<std::string, std::string>* trailers) {
  if (!begun_.load(std::memory_order_acquire)) return std::nullopt;
  // A handler answering the shutdown (drain::CallTracker ended only the
  // Context it tracked): the call itself ended by it.
  const grpc::StatusCode code = status.error_code();
  if ((code == grpc::StatusCode::CANCELLED ||
       code == grpc::StatusCode::UNAVAILABLE) &&
      IsShutdownCancel() && !ctx_.IsDone()) {
    CancelWithCause(cancel_, CauseStatus(CauseKind::kServerShutdown));
  }
  return ledger_.StatusToSend(status, trailers, ctx_);
}

void ServerCall::OnStatusSending(int code) {
  sent_code_.store(code, std::memory_order_relaxed);
  status_sent_.store(true, std::memory_order_release);
  End();
}

void ServerCall::OnClosed() {
  // Closed before the status went out means canceled (client cancel,
  // deadline or shutdown); after it, the call simply ended. Sync: seen by
  // the watcher's IsCancelled() or when the handler returns; async: when the
  // application's completion queue delivers the close; callback: pushed.
  if (status_sent_.load(std::memory_order_acquire)) {
    End();
  } else {
    OnCancelled();
  }
}

void ServerCall::OnCancelled(CauseKind cause) {
  if (!begun_.load(std::memory_order_acquire)) return;
  if (deadline_.has_value() && deadline_->CancelIsCallersDeadline()) {
    // The caller's deadline (or gRPC's own, at ours): the Context ends with
    // DEADLINE_EXCEEDED at its deadline, at most Window() from now (at once
    // if it has passed). Only now is a timer armed, and only on this path.
    ArmOwnedDeadline(cancel_);
  } else {
    int64_t unset = 0;
    cancel_seen_ns_.compare_exchange_strong(unset, MonoNowNs());
    // gRPC's Server::Shutdown cancel reads as a client's: the signal tells.
    if (cause == CauseKind::kClientCancel && IsShutdownCancel()) {
      cause = CauseKind::kServerShutdown;
    }
    CancelWithCause(cancel_, CauseStatus(cause));
  }
}

bool ServerCall::IsShutdownCancel() const {
  return shutdown_ != nullptr && shutdown_->Canceling(absl::Now());
}

void ServerCall::CancelWith(const absl::Status& cause) {
  if (begun_.load(std::memory_order_acquire)) CancelWithCause(cancel_, cause);
}

void ServerCall::ArmDeadline() {
  if (begun_.load(std::memory_order_acquire) && deadline_owned_) {
    ArmOwnedDeadline(cancel_);
  }
}

void ServerCall::End() {
  if (!begun_.load(std::memory_order_acquire)) return;
  if (ended_.exchange(true)) {
    // Ended already, maybe on another thread: when that End has returned
    // (as it has when the interceptor's destructor gets here: gRPC runs it
    // after every hook), this acquire orders its writes (the observer's)
    // before the ServerCall's destruction, where TSan can see it.
    (void)end_done_.load(std::memory_order_acquire);
    return;
  }
  ServerCallRegistry::Get().Remove(sc_, this);
  if (ctx_root_ != nullptr) {
    ServerCallRegistry::ByContextRoot().Remove(ctx_root_, this);
  }
  StopWatching();
  // Ended past its deadline before the close reported it (an owned deadline
  // on the sync API is seen at the watcher's next poll): the deadline ended
  // it, as an armed timer would have said.
  if (deadline_.has_value() && deadline_->Expired()) ArmOwnedDeadline(cancel_);
  // Before cancel_() releases the Context: a Context done only by the call's
  // end is not orphaned work.
  observer_.Finish(status_sent_.load(std::memory_order_acquire)
                       ? sent_code_.load(std::memory_order_relaxed)
                       : grpc::StatusCode::CANCELLED,
                   ctx_, cancel_seen_ns_.load(), &ledger_);
  cancel_();
  std::vector<std::function<void()>> at_end;
  {
    std::lock_guard<std::mutex> lock(at_end_mu_);
    at_end_ran_ = true;
    at_end.swap(at_end_);
  }
  for (std::function<void()>& f : at_end) f();
  end_done_.store(true, std::memory_order_release);
}

void ServerCall::AtEnd(std::function<void()> f) {
  {
    std::lock_guard<std::mutex> lock(at_end_mu_);
    if (!at_end_ran_) {
      at_end_.push_back(std::move(f));
      return;
    }
  }
  f();
}

bool ServerCall::BeginWatching() {
  // Most asks come after Begin started the watch (FromServerContext in a
  // sync handler): answered without the lock.
  if (watch_started_.load(std::memory_order_acquire)) return false;
  std::lock_guard<std::mutex> lock(watch_mu_);
  // ended_ is read under the lock that End's StopWatching takes after
  // setting it: a watch begun here is either refused or stopped by End.
  if (!begun_.load(std::memory_order_acquire) ||
      watch_started_.load(std::memory_order_relaxed) ||
      ended_.load(std::memory_order_acquire)) {
    return false;
  }
  watch_started_.store(true, std::memory_order_release);
  watching_ = true;
  return true;
}

void ServerCall::StartWatching() {
  if (BeginWatching()) SyncCancelWatcher::Get().Watch(shared_from_this());
}

void ServerCall::StopWatching() {
  if (t_polling == this) {  // Inside our own PollCancelled: lock is held.
    watching_ = false;
    return;
  }
  std::lock_guard<std::mutex> lock(watch_mu_);
  watching_ = false;
}

bool ServerCall::PollCancelled() {
  // The first pass that finds a call only notes it; the call is polled from
  // the next pass on (a poll interval later). So a call shorter than that --
  // most unary calls -- is never polled: gRPC's IsCancelled() on a live sync
  // call costs ~19 us of CPU (it polls the call's completion queue), which
  // the watcher would otherwise spend on a share of all calls.
  if (!seen_by_watcher_) {
    seen_by_watcher_ = true;
    return !ended_.load(std::memory_order_acquire);
  }
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    if (!watching_) return false;
    t_polling = this;
    cancelled = sc_->IsCancelled();
    t_polling = nullptr;
    if (!watching_) return false;  // Ended inside IsCancelled().
  }
  if (!cancelled) return true;
  // Once IsCancelled() is true the close has been seen; nothing more to poll.
  OnCancelled();
  return false;
}

}  // namespace reqctx::internal
