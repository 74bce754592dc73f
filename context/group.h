// Group: run tasks concurrently under one Context (Go's errgroup).
//
// Contract (errgroup's):
//   * Every task gets the group's context, a child of the parent given to the
//     constructor. It is canceled on the first task error, and canceled when
//     Wait() returns. The first error is its cause, as in Go, marked as a
//     ledger/causes.h cause: Cause(context()) keeps the error's code and
//     message, CauseOf() of it is CauseKind::kGroupSibling and CauseHop()
//     names the task that failed, "task #N" (N-th call of Go(), from 1).
//   * Wait() blocks until every task started with Go() has returned, then
//     returns the first non-OK status (first in time), or OK.
//   * SetLimit(n): at most n tasks run at once; Go() blocks until a slot is
//     free. n <= 0 means no limit. Call it before Go().
//
// Thread-safety: Go() may be called from several threads, including from
// inside tasks. Wait() and SetLimit() are called by the owner.
//
// Lifetime: each task runs on its own thread (as each errgroup task runs on
// its own goroutine); threads are joined by Wait(). The destructor calls
// Wait(), so no task outlives the Group.
#ifndef REQCTX_CONTEXT_GROUP_H_
#define REQCTX_CONTEXT_GROUP_H_

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "context/core.h"

namespace reqctx {

class Group {
 public:
  explicit Group(const Context& parent);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  // The context passed to every task.
  const Context& context() const { return ctx_; }
  void SetLimit(int n);
  // Starts `task(context())` on a new thread, after waiting for a free slot
  // if a limit is set. Never throws: if the thread cannot be started (thread
  // limit, memory), the task does not run, its slot is given back at once,
  // and it counts as a task that failed with kResourceExhausted (so the
  // group is canceled and Wait() returns that error, unless an earlier one).
  void Go(std::function<absl::Status(const Context&)> task);
  // Waits for all tasks; returns the first error. Cancels context().
  absl::Status Wait();

 private:
  explicit Group(std::pair<Context, CancelCauseFunc> ctx_and_cancel);
  void RunTask(const std::function<absl::Status(const Context&)>& task,
               int number);
  // Records `status` of task `number` (its Go() order, from 1) if it is the
  // first error, then cancels the group with it as the cause.
  void Fail(const absl::Status& status, int number);

  const Context ctx_;
  const CancelCauseFunc cancel_;

  std::mutex mu_;
  std::condition_variable slot_freed_;
  int limit_ = 0;                     // Guarded by mu_.
  int active_ = 0;                    // Guarded by mu_.
  int started_ = 0;                   // Go() calls so far; guarded by mu_.
  absl::Status first_error_;          // Guarded by mu_.
  std::vector<std::thread> threads_;  // Guarded by mu_.
};

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_GROUP_H_
