// Executor: the growable thread pool that runs AfterFunc callbacks.
//
// Go runs each AfterFunc in a new goroutine; the C++ equivalent that does not
// cost a thread per callback is a cached pool: a task goes to an idle worker
// if there is one, else a new worker starts, so a callback that blocks never
// delays another. Workers idle for kIdleTimeout exit, so the pool shrinks back
// to zero when AfterFuncs stop firing.
//
// Lifetime: a leaked singleton; workers are detached and touch only it.
// Thread-safety: all methods are thread-safe.
#ifndef REQCTX_CONTEXT_INTERNAL_EXECUTOR_H_
#define REQCTX_CONTEXT_INTERNAL_EXECUTOR_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>

#include "absl/time/time.h"

namespace reqctx::internal {

class Executor {
 public:
  static Executor& Get();

  // Runs `task` soon on a pool thread (never on the calling thread).
  void Submit(std::function<void()> task);
  size_t ThreadCount();

 private:
  static constexpr absl::Duration kIdleTimeout = absl::Seconds(5);
  Executor() = default;
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::function<void()>> queue_;  // Guarded by mu_.
  size_t idle_ = 0;                          // Guarded by mu_.
  size_t threads_ = 0;                       // Guarded by mu_.
};

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_EXECUTOR_H_
