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
    // Destroyed while suspended: a resumption already queued is discarded;
    // the call is canceled, and we wait for gRPC's callback so that nothing
    // of the call outlives the coroutine. gRPC always runs the callback of a
    // started call, promptly after a cancel.
    wakeup_->Abandon();
    shared_->client_context->TryCancel();
    std::unique_lock<std::mutex> lock(shared_->mu);
    shared_->cv.wait(lock, [this] { return shared_->done; });
  }
}

void GrpcCallAwaiter::Arm(const LoopRef& loop, std::coroutine_handle<> h) {
  wakeup_ = std::make_shared<Wakeup>(loop, h);
  // gRPC hands the callback to its own thread through gRPC core, which TSan
  // does not see; this release (acquired by Done) makes that visible.
  shared_->started.store(true, std::memory_order_release);
  std::move(start_)(shared_->client_context.get(), Done{shared_, wakeup_});
}

void GrpcCallAwaiter::Done::operator()(grpc::Status status) const {
  (void)shared->started.load(std::memory_order_acquire);
  std::shared_ptr<Shared> self = std::move(shared);
  self->status = std::move(status);
  {
    std::lock_guard<std::mutex> lock(self->mu);
    self->done = true;
    self->cv.notify_all();
  }
  // The reference goes to the loop with the resumption (released there).
  wakeup->Fire(std::move(self));
}

grpc::Status GrpcCallAwaiter::await_resume() {
  resumed_ = true;
  return shared_->status;
}

}  // namespace internal
}  // namespace reqctx
