// AfterFunc: run a function once a context is done (Go's context.AfterFunc).
//
// Contract:
//   * f runs at most once, after ctx is done (at once if it already is), on a
//     thread of a shared, bounded executor -- not on the thread that
//     canceled. The cancel call never waits for f, never throws and never
//     starts a thread while it holds a context's lock.
//   * An f that blocks does not delay other AfterFuncs: the pool has up to
//     max(4, 2 x CPUs) threads at once, and beyond that adds one whenever all
//     of them have been blocked for 5 ms, up to max(64, 8 x CPUs); past that
//     hard cap, queued functions wait for a worker to come free. Idle workers
//     exit after 5 s.
//   * f is never lost: when no thread can be started (thread or memory
//     limits), it runs later on an existing worker; if none exists at all, on
//     the thread that canceled, after that thread released every lock.
//   * f must not throw: an exception escaping f terminates the process (as
//     one escaping a std::thread does).
//   * On a context that can never be done, f never runs.
//   * The Context passed in may be a temporary: the handle keeps what it needs.
//   * Keep the handle: dropping it stops f (see Lifetime), so the Go-style
//     statement `AfterFunc(ctx, f);` would never run f. It is [[nodiscard]].
//   * Process exit: functions queued or running when exit begins are run and
//     waited for (at most 2 s); an AfterFunc that fires after that (during
//     static destruction) runs on the thread that canceled.
//
// Thread-safety: AfterFunc may be called from any thread. An AfterFuncHandle
// is a move-only owner; calling Stop() on one handle from several threads at
// once is safe (exactly one call can return true).
//
// Lifetime: the handle's destructor calls Stop() and, if f is running on
// another thread, waits for f to return (so whatever f captured by reference
// may be destroyed right after the handle). Destroying the handle from inside
// f does not wait (it would deadlock).
#ifndef REQCTX_CONTEXT_AFTER_FUNC_H_
#define REQCTX_CONTEXT_AFTER_FUNC_H_

#include <functional>
#include <memory>

#include "context/core.h"

namespace reqctx {

namespace internal {
class AfterFuncState;
}  // namespace internal

class AfterFuncHandle {
 public:
  AfterFuncHandle() = default;  // Owns nothing; Stop() returns false.
  AfterFuncHandle(AfterFuncHandle&&) noexcept;
  AfterFuncHandle& operator=(AfterFuncHandle&&) noexcept;
  AfterFuncHandle(const AfterFuncHandle&) = delete;
  AfterFuncHandle& operator=(const AfterFuncHandle&) = delete;
  ~AfterFuncHandle();

  // Stops f from running. Returns true if this call prevented f from running
  // (it will never run), false if f already started or Stop() already
  // returned true. Does not wait for a running f.
  bool Stop();

 private:
  friend AfterFuncHandle AfterFunc(const Context&, std::function<void()>);
  explicit AfterFuncHandle(std::shared_ptr<internal::AfterFuncState> state);
  std::shared_ptr<internal::AfterFuncState> state_;
};

// Arranges for `f` to run once `ctx` is done. See the file comment. The
// returned handle must be kept for as long as f should stay armed.
[[nodiscard]] AfterFuncHandle AfterFunc(const Context& ctx,
                                        std::function<void()> f);

namespace internal {
// Inside a running AfterFunc's f: how long ago its context was done, as seen
// by the cancel walk (or the AfterFunc call, if it already was) -- the
// executor's queueing delay plus f's run so far. Zero outside an f. For
// metrics (the gRPC glue's cancel-propagation histogram).
absl::Duration SinceAfterFuncContextDone();
}  // namespace internal

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_AFTER_FUNC_H_
