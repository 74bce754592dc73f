// Awaitables that end when a Context is done, for reqctx::Task coroutines.
//
//   absl::Status s = co_await reqctx::Sleep(ctx, absl::Milliseconds(50));
//   absl::Status why = co_await reqctx::Done(ctx);          // waits for ctx
//   bool done = co_await reqctx::Done(ctx, absl::Seconds(1));  // or 1 s
//
// Contract, for all three:
//   * They suspend the coroutine without blocking its Loop's thread, and
//     resume it on that Loop (never on the thread that canceled ctx, nor a
//     timer or AfterFunc thread).
//   * If ctx is already done (or the duration is <= 0) they do not suspend.
//   * They create no thread: they register an AfterFunc on ctx and, for a
//     duration, on a timer context of their own (the shared timer service);
//     both are removed as soon as the awaitable ends or is destroyed.
//   * They never throw.
//   * They can only be co_awaited inside a reqctx::Task (compile error
//     otherwise).
//
// Thread-safety: ctx may be canceled from any thread at any time.
// Lifetime: while suspended, the awaitable holds a Context handle (ctx and
// its ancestors stay alive) and its AfterFunc registrations. Destroying the
// suspended coroutine (see async/task.h) stops them; nothing resumes it later.
#ifndef REQCTX_ASYNC_AWAITABLES_H_
#define REQCTX_ASYNC_AWAITABLES_H_

#include <atomic>
#include <coroutine>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "async/task.h"
#include "context/context.h"

namespace reqctx {

namespace internal {

// Resumes one suspended coroutine on its loop, at most once, unless it has
// been abandoned (its frame is being destroyed) by then.
class Wakeup : public std::enable_shared_from_this<Wakeup> {
 public:
  Wakeup(LoopRef loop, std::coroutine_handle<> h)
      : loop_(std::move(loop)), h_(h) {}
  // Any thread. The first call queues the resumption on the loop; later
  // calls do nothing. Returns true for the first call. `keep` is released on
  // the loop's thread after the resumption (or where the loop drops it).
  bool Fire(std::shared_ptr<void> keep = nullptr);
  // The loop's thread, from the awaitable's destructor: a queued resumption
  // will not run.
  void Abandon() { abandoned_.store(true, std::memory_order_release); }

 private:
  const LoopRef loop_;
  const std::coroutine_handle<> h_;
  std::atomic<bool> fired_{false};
  std::atomic<bool> abandoned_{false};
};

// Waits for `ctx` to be done or, with a timeout, for that long (a timer
// context of its own, so ctx's own deadline is reported as ctx's).
class ContextWait {
 public:
  ContextWait(Context ctx, std::optional<absl::Duration> timeout)
      : ctx_(std::move(ctx)), timeout_(timeout) {}
  ContextWait(ContextWait&&) = default;
  ContextWait& operator=(ContextWait&&) = delete;
  ~ContextWait();

  bool await_ready() const;
  template <typename P>
  void await_suspend(std::coroutine_handle<P> h) {
    Arm(LoopOf(h), h);
  }

 protected:
  Context ctx_;

 private:
  void Arm(const LoopRef& loop, std::coroutine_handle<> h);

  std::optional<absl::Duration> timeout_;
  std::shared_ptr<Wakeup> wakeup_;  // Declared first of the three: freed last.
  CancelFunc cancel_timer_;
  AfterFuncHandle on_done_;
  AfterFuncHandle on_timer_;
};

}  // namespace internal

// co_await yields absl::Status: OK after the full duration, ctx.Err() as
// soon as ctx is done (also if ctx's own deadline comes first).
class [[nodiscard]] SleepAwaiter : public internal::ContextWait {
 public:
  using ContextWait::ContextWait;
  absl::Status await_resume() const { return ctx_.Err(); }
};

// co_await yields ctx.Err() (never OK) once ctx is done.
class [[nodiscard]] DoneAwaiter : public internal::ContextWait {
 public:
  using ContextWait::ContextWait;
  absl::Status await_resume() const { return ctx_.Err(); }
};

// co_await yields true if ctx is done, false if the timeout passed first.
class [[nodiscard]] DoneForAwaiter : public internal::ContextWait {
 public:
  using ContextWait::ContextWait;
  bool await_resume() const { return ctx_.Done().IsDone(); }
};

// Sleeps for `d` or until `ctx` is done, whichever comes first (the
// coroutine form of SleepFor): yields OK after the full sleep, ctx.Err() as
// soon as ctx is done; d <= 0 yields ctx.Err() at once.
SleepAwaiter Sleep(const Context& ctx, absl::Duration d);
// Waits until `ctx` is done; yields ctx.Err(). On a context that can never be
// done (Background, TODO, WithoutCancel) it waits until the coroutine is
// destroyed: prefer the form with a timeout there.
DoneAwaiter Done(const Context& ctx);
// Waits until `ctx` is done or `timeout` passes; yields whether ctx is done
// (like DoneSignal::WaitFor). timeout <= 0 yields ctx's state at once.
DoneForAwaiter Done(const Context& ctx, absl::Duration timeout);

}  // namespace reqctx

#endif  // REQCTX_ASYNC_AWAITABLES_H_
