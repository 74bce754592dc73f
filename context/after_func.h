// AfterFunc: run a function once a context is done (Go's context.AfterFunc).
//
// Contract:
//   * f runs at most once, after ctx is done (at once if it already is), on a
//     thread of a shared, growable executor -- never on the thread that
//     canceled. The cancel call never waits for f, and an f that blocks does
//     not delay other AfterFuncs (a blocked worker makes the pool grow; idle
//     workers exit after a while).
//   * On a context that can never be done, f never runs.
//   * The Context passed in may be a temporary: the handle keeps what it needs.
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

// Arranges for `f` to run once `ctx` is done. See the file comment.
AfterFuncHandle AfterFunc(const Context& ctx, std::function<void()> f);

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_AFTER_FUNC_H_
