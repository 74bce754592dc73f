// GrpcCallAwaiter (see call.h).
#include "async/call.h"

#include <utility>

namespace reqctx {
namespace internal {

GrpcCallAwaiter::GrpcCallAwaiter(
    std::unique_ptr<grpc::ClientContext> client_context,
    std::shared_ptr<void> keep_alive, Start start)
    : shared_(std::make_shared<Shared>()), start_(std::move(start)) {
  shared_->client_context = std::move(client_context);
  shared_->keep_alive = std::move(keep_alive);
}

GrpcCallAwaiter::~GrpcCallAwaiter() {
  if (wakeup_ && !resumed_) {
    // Destroyed while suspended: a resumption already queued is discarded,
    // and the call is canceled. gRPC's callback still runs and releases the
    // shared state (ClientContext, messages) when it is done with it.
    wakeup_->Abandon();
    shared_->client_context->TryCancel();
  }
}

void GrpcCallAwaiter::Arm(const LoopRef& loop, std::coroutine_handle<> h) {
  wakeup_ = std::make_shared<Wakeup>(loop, h);
  std::move(start_)(shared_->client_context.get(),
                    [shared = shared_, wakeup = wakeup_](grpc::Status status) {
                      shared->status = std::move(status);
                      wakeup->Fire();
                    });
}

grpc::Status GrpcCallAwaiter::await_resume() {
  resumed_ = true;
  return shared_->status;
}

}  // namespace internal
}  // namespace reqctx
