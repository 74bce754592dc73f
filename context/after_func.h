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

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "context/core.h"

namespace reqctx {

namespace internal {
class AfterFuncState;

// The state of one AfterFunc, without its allocation: what AfterFunc's
// shared state is made of, and what an owner embeds to arm an AfterFunc per
// call with no allocation and no reference count (the gRPC client
// interceptor: one per call). Same contract as AfterFunc (see the file
// comment): f runs at most once, on the executor, after the context is done;
// f must not throw.
//
// Use: Start() once; then Stop() and Wait() (or StopAndWait()) before the
// owner is destroyed -- the destructor does both, but an owner whose f
// reads the owner's members must call them from its own destructor first.
// After Wait() returns, f is not running and never will (unless Wait() was
// called from inside f, which does not wait).
//
// Thread-safety: Stop() and Wait() may be called from any thread, also at
// once; Start() once, before either. Lifetime: the embedding object must
// outlive a scheduled f; Wait() (and the destructor) ensure it.
class AfterFuncCore : public Listener, public Job {
 public:
  AfterFuncCore() = default;
  ~AfterFuncCore() { StopAndWait(); }

  // Arms f on `ctx` (scheduling it at once if ctx is done already; never if
  // ctx can never be done). Once.
  void Start(const Context& ctx, std::function<void()> f);
  // As AfterFuncHandle::Stop(): true if this call kept f from running.
  bool Stop();
  // Blocks until f has returned, if it was scheduled and is not running on
  // this very thread.
  void Wait();
  void StopAndWait() {
    Stop();
    Wait();
  }

  void OnParentDone(DoneReason, const absl::Status&,
                    JobList& deferred) noexcept override;

 protected:
  // While scheduled, the shared form keeps itself alive: Retain() when f is
  // scheduled; Run() takes that reference back (TakeRetained) before it
  // marks f finished, and drops it (maybe freeing this object) as its last
  // act, after which it touches nothing of this object. The embedded form
  // keeps none: its owner's Wait() keeps it alive.
  virtual void Retain() noexcept {}
  virtual std::shared_ptr<void> TakeRetained() noexcept { return nullptr; }

 private:
  enum Phase : int { kPending, kStopped, kScheduled };

  void Schedule(JobList& out) noexcept;
  void Run() noexcept override;

  std::atomic<int> phase_{kPending};
  NodeRef<CancelNode> node_;  // Set by Start.
  std::function<void()> f_;  // Owned by whoever moved phase_ off kPending.
  int64_t done_ns_ = 0;  // Written by Schedule, read by Run.

  std::mutex mu_;
  std::condition_variable finished_cv_;
  std::thread::id runner_;  // Guarded by mu_.
  bool finished_ = false;   // Guarded by mu_.
};
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
