// Sleep and Done (see awaitables.h).
#include "async/awaitables.h"

#include <utility>

namespace reqctx {
namespace internal {

bool Wakeup::Fire(std::shared_ptr<void> keep) {
  if (fired_.exchange(true, std::memory_order_acq_rel)) return false;
  loop_->Post([self = shared_from_this(), keep = std::move(keep)] {
    if (!self->abandoned_.load(std::memory_order_acquire)) self->h_.resume();
  });
  return true;
}

ContextWait::~ContextWait() {
  // Runs before the members: a resumption queued by an AfterFunc that fired
  // concurrently is discarded; then on_timer_/on_done_ stop (or wait for)
  // their functions and cancel_timer_ removes the timer.
  if (wakeup_) wakeup_->Abandon();
}

bool ContextWait::await_ready() const {
  if (ctx_.Done().IsDone()) return true;
  return timeout_.has_value() && *timeout_ <= absl::ZeroDuration();
}

void ContextWait::Arm(const LoopRef& loop, std::coroutine_handle<> h) {
  wakeup_ = std::make_shared<Wakeup>(loop, h);
  if (timeout_.has_value() && *timeout_ != absl::InfiniteDuration()) {
    // A timer context of its own: when it fires, ctx's own state decides
    // what the awaitable yields.
    auto [timer, cancel] = WithTimeout(Background(), *timeout_);
    cancel_timer_ = std::move(cancel);
    on_timer_ = AfterFunc(timer, [w = wakeup_] { w->Fire(); });
  }
  on_done_ = AfterFunc(ctx_, [w = wakeup_] { w->Fire(); });
}

}  // namespace internal

SleepAwaiter Sleep(const Context& ctx, absl::Duration d) {
  return SleepAwaiter(ctx, d);
}

DoneAwaiter Done(const Context& ctx) { return DoneAwaiter(ctx, std::nullopt); }

DoneForAwaiter Done(const Context& ctx, absl::Duration timeout) {
  return DoneForAwaiter(ctx, timeout);
}

}  // namespace reqctx
