// Waiting on several contexts at once, and condition-variable waits that a
// context ends (Go's `select` over ctx.Done() channels and `sync.Cond`).
//
//   std::optional<size_t> first = Select({req_ctx, shutdown_ctx},
//                                        absl::Seconds(1));
//   if (!first) { /* timed out */ } else if (*first == 1) { /* shutdown */ }
//
//   std::unique_lock<std::mutex> lock(mu);
//   if (!Wait(ctx, cv, lock, [&] { return !queue.empty(); })) {
//     return ctx.Err();  // Done before anything arrived.
//   }
//
// Select takes Contexts or DoneSignals (the same signal: Select({ctx}) and
// Select({DoneSignal(ctx.Done())}) wait alike).
//
// Thread-safety: both functions may be called from any number of threads.
// Neither creates a thread or a timer: the caller sleeps on a condition
// variable that a cancel wakes (Select: its own; Wait: the caller's, woken
// through the AfterFunc executor, since a cancel may not take the caller's
// mutex under the context's lock).
// Lifetime: nothing outlives the call; the contexts need only live for it.
#ifndef REQCTX_CONTEXT_SELECT_H_
#define REQCTX_CONTEXT_SELECT_H_

#include <condition_variable>
#include <cstddef>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <span>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx {

// Blocks until one of `ctxs` is done or `timeout` has elapsed (measured on
// the monotonic clock; InfiniteDuration: no limit). Returns the index of a
// done context -- the lowest index among those done when it returns, so a
// context already done at the call wins at once -- or nullopt on timeout.
// A timeout <= 0 only checks. Contexts that can never be done never win; an
// empty list waits out the timeout (forever if infinite, like Go's empty
// select).
std::optional<size_t> Select(std::span<const Context> ctxs,
                             absl::Duration timeout = absl::InfiniteDuration());
std::optional<size_t> Select(std::initializer_list<Context> ctxs,
                             absl::Duration timeout = absl::InfiniteDuration());
// The same over done signals (Go's select over several ctx.Done() channels),
// e.g. `Select({req.Done(), shutdown.Done()}, absl::Seconds(1))`.
std::optional<size_t> Select(std::span<const DoneSignal> signals,
                             absl::Duration timeout = absl::InfiniteDuration());
std::optional<size_t> Select(std::initializer_list<DoneSignal> signals,
                             absl::Duration timeout = absl::InfiniteDuration());

namespace internal {
bool WaitImpl(const Context& ctx, std::condition_variable& cv,
              std::unique_lock<std::mutex>& lock,
              absl::FunctionRef<bool()> pred);
}  // namespace internal

// cv.wait(lock, pred) that also ends when `ctx` is done. `lock` must be held
// (it is held again on return) and `pred` is evaluated under it, as for
// std::condition_variable. Returns true when `pred` holds, false when the
// wait ended because `ctx` is done while `pred` did not hold (pred is
// checked first, so a true pred wins over a done context). Other threads
// change what pred reads under the same mutex and notify `cv`, as usual.
// When `ctx` is done the waiter is woken within the time the AfterFunc
// executor takes to run a task (tens of microseconds when idle). On a
// context that can never be done this is cv.wait(lock, pred).
template <typename Pred>
bool Wait(const Context& ctx, std::condition_variable& cv,
          std::unique_lock<std::mutex>& lock, Pred pred) {
  return internal::WaitImpl(ctx, cv, lock, absl::FunctionRef<bool()>(pred));
}

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_SELECT_H_
