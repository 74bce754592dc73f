// reqctx and asio (standalone asio, Debian's libasio-dev 1.22): a Context
// bound to asio's per-operation cancellation, both ways.
//
// Context -> asio: cancel any asio async operation when a Context is done.
//
//   reqctx::AsioCancellation cancel_on_done(ctx, io.get_executor());
//   timer.async_wait(cancel_on_done.Bind([](std::error_code ec) { ... }));
//   // ctx done -> the wait ends with asio::error::operation_aborted.
//   // Works for any operation that supports cancellation slots: timers,
//   // socket reads/writes, and co_spawn'ed awaitables (co_spawn(io, coro(),
//   // cancel_on_done.Bind(handler)) -> the coroutine's pending co_await
//   // throws operation_aborted).
//
// asio -> Context: a Context canceled by an asio cancellation.
//
//   asio::awaitable<void> Handle(reqctx::Context parent) {
//     auto [ctx, cancel] = co_await reqctx::ContextFromCancellationState(parent);
//     // ctx is canceled when this coroutine's cancellation slot is triggered
//     // (e.g. the signal bound to co_spawn's completion handler emits).
//   }
//
// Thread-safety: ctx may be canceled from any thread; the cancellation is
// emitted on the executor given to AsioCancellation (asio's cancellation
// signals are not thread-safe), so it runs with the operation's handlers.
// The asio side (ContextFromCancellationState, WithCancellationSlot) runs on
// the thread that emits, and only calls a CancelFunc (thread-safe).
//
// Lifetime: see each class / function.
#ifndef REQCTX_ASYNC_ASIO_H_
#define REQCTX_ASYNC_ASIO_H_

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <memory>
#include <utility>

#include "context/context.h"

namespace reqctx {

// Emits an asio cancellation when a Context is done.
//
// Contract: once `ctx` is done, `type` (default terminal) is emitted on this
// object's cancellation signal, on `executor`; the operation bound to slot()
// (or through Bind) at that moment is cancelled. One operation at a time:
// an asio slot holds one handler (as with asio::cancellation_signal). If ctx
// is already done, the emission is queued at once: start the operation on
// the executor's thread (or before the executor runs) so that it is bound
// before the emission runs; an emission with no operation bound does
// nothing.
//
// Lifetime: keep this object alive while its operation is pending, and
// destroy it on the executor's thread, before the executor's execution
// context is destroyed. The destructor stops the AfterFunc (waiting for one
// already running, which only posts); an emission already posted still runs
// on the executor and keeps the signal alive until it has.
class AsioCancellation {
 public:
  template <typename Executor>
  AsioCancellation(const Context& ctx, const Executor& executor,
                   asio::cancellation_type type = asio::cancellation_type::terminal)
      : state_(std::make_shared<State>()) {
    asio::any_io_executor ex(executor);
    on_done_ = AfterFunc(ctx, [state = state_, ex, type] {
      asio::post(ex, [state, type] { state->signal.emit(type); });
    });
  }
  AsioCancellation(const AsioCancellation&) = delete;
  AsioCancellation& operator=(const AsioCancellation&) = delete;

  // The slot to bind one operation to, e.g. with asio::bind_cancellation_slot.
  asio::cancellation_slot slot() { return state_->signal.slot(); }
  // `token` (a completion handler or token) bound to slot().
  template <typename CompletionToken>
  auto Bind(CompletionToken&& token) {
    return asio::bind_cancellation_slot(slot(),
                                        std::forward<CompletionToken>(token));
  }

 private:
  struct State {
    asio::cancellation_signal signal;
  };
  std::shared_ptr<State> state_;  // Declared before on_done_: outlives it.
  AfterFuncHandle on_done_;
};

namespace internal {

// Cancels a context when an asio cancellation of an accepted type arrives;
// passes the (filtered) type on.
struct CancelContextFilter {
  CancelFunc cancel;
  asio::cancellation_type accept;
  asio::cancellation_type operator()(asio::cancellation_type type) const {
    type = type & accept;
    if (type != asio::cancellation_type::none) cancel();
    return type;
  }
};

}  // namespace internal

// A child of `parent` that is canceled when `slot` is triggered with a type
// in `accept` (default: terminal, partial or total). Installs a handler into
// `slot`, replacing any handler there: give it a slot no operation uses (for
// example, inside an asynchronous operation you implement, the slot
// associated with your completion handler, when you do not pass it on). The
// child is also done when the returned CancelFunc is called or dropped, as
// with WithCancel; the handler in the slot keeps a copy of it until the slot
// is cleared or its signal destroyed.
std::pair<Context, CancelFunc> WithCancellationSlot(
    const Context& parent, asio::cancellation_slot slot,
    asio::cancellation_type accept = asio::cancellation_type::terminal |
                                     asio::cancellation_type::partial |
                                     asio::cancellation_type::total);

// Inside an asio::awaitable coroutine: a child of `parent` canceled when
// this coroutine's cancellation state is triggered by a type in `accept`
// (default: terminal, as asio's coroutines). Resets the coroutine's
// cancellation state like asio::this_coro::reset_cancellation_state, with a
// filter that passes accepted types on to the coroutine's operations (so a
// pending co_await ends with operation_aborted, as before) and also cancels
// the returned Context. The state keeps a copy of the CancelFunc until the
// coroutine ends or resets its cancellation state again.
asio::awaitable<std::pair<Context, CancelFunc>> ContextFromCancellationState(
    Context parent,
    asio::cancellation_type accept = asio::cancellation_type::terminal);

}  // namespace reqctx

#endif  // REQCTX_ASYNC_ASIO_H_
