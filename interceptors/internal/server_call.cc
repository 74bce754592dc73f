#include "interceptors/internal/server_call.h"

#include "interceptors/internal/call_observer.h"

#include <grpcpp/server_context.h>

#include <utility>

#include "interceptors/internal/sync_cancel_watcher.h"

namespace reqctx::internal {
namespace {

// The call whose PollCancelled() is running on this thread. gRPC runs our
// POST_RECV_CLOSE hook (and so maybe End()) inside IsCancelled(), with that
// call's watch_mu_ already held by this thread.
thread_local const ServerCall* t_polling = nullptr;

}  // namespace

ServerCall::ServerCall(Context ctx, CancelFunc cancel,
                       std::optional<IncomingDeadline> deadline)
    : ctx_(std::move(ctx)),
      cancel_(std::move(cancel)),
      deadline_(std::move(deadline)) {}

bool ServerCall::BeginWatching(const grpc::ServerContextBase* sc) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  if (ended_ || sync_context_ != nullptr) return false;
  sync_context_ = sc;
  watching_ = true;
  return true;
}

void ServerCall::StartWatching(const grpc::ServerContextBase* sc) {
  if (BeginWatching(sc)) SyncCancelWatcher::Get().Watch(shared_from_this());
}

void ServerCall::OnCancelled() {
  if (deadline_.has_value() && deadline_->CancelIsCallersDeadline()) {
    return;  // The deadline timer reports it, within the window (see header).
  }
  int64_t unset = 0;
  cancel_seen_ns_.compare_exchange_strong(unset, MonoNowNs());
  cancel_();
}

void ServerCall::End() {
  StopWatching();
  cancel_();
}

void ServerCall::StopWatching() {
  if (t_polling == this) {  // Inside our own PollCancelled: lock is held.
    watching_ = false;
    ended_ = true;
    return;
  }
  std::lock_guard<std::mutex> lock(watch_mu_);
  watching_ = false;
  ended_ = true;
}

bool ServerCall::PollCancelled() {
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    if (!watching_) return false;
    t_polling = this;
    cancelled = sync_context_->IsCancelled();
    t_polling = nullptr;
    if (!watching_) return false;  // Ended inside IsCancelled().
  }
  if (!cancelled) return true;
  // Once IsCancelled() is true the close has been seen; nothing more to poll.
  OnCancelled();
  return false;
}

}  // namespace reqctx::internal
