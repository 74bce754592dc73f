// Executor: the bounded thread pool that runs AfterFunc callbacks.
//
// Go runs each AfterFunc in a new goroutine. The C++ equivalent that neither
// costs a thread per callback nor lets one blocked callback delay the others
// is a pool that grows only when it must:
//   * A task goes to an idle worker if there is one.
//   * Otherwise the pool's supervisor thread starts a worker at once while
//     the pool has fewer than SoftCap() = max(4, 2 x CPUs) threads, and
//     beyond that only when no queued task has been picked up for
//     kBlockedThreshold (every worker is blocked), one worker per threshold,
//     up to HardCap() = max(64, 8 x CPUs). Past the hard cap, queued tasks
//     wait for a worker to come free.
//   * Workers idle for kIdleTimeout exit, so the pool shrinks back when
//     AfterFuncs stop firing.
// Threads are only ever started by the supervisor (or, once, by Submit to
// start the supervisor itself), never while a context's lock is held: Submit
// is called after a cancel walk has released every node lock.
//
// Failure to start a thread (thread limit, address space) never loses a task
// and never throws: the task stays queued and runs on an existing worker, and
// the supervisor retries after kRetryDelay. If no pool thread exists at all
// and none can be started, Submit runs the tasks on the calling thread.
//
// fork(): the child gets a pool with no threads; tasks queued at the fork run
// in the child on new threads. A task that was running on another thread at
// the fork never finishes in the child (that thread does not exist there).
//
// Process exit: an atexit handler (registered when the pool first starts)
// lets the workers finish every queued and running task, waiting at most
// kExitGrace, and joins them. From then on Submit runs tasks on the calling
// thread, so an AfterFunc that fires during static destruction still runs
// (and a handle waiting for it does not hang).
//
// Thread-safety: all methods are thread-safe.
// Lifetime: a leaked singleton; its threads touch only it.
#ifndef REQCTX_CONTEXT_INTERNAL_EXECUTOR_H_
#define REQCTX_CONTEXT_INTERNAL_EXECUTOR_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

#include "absl/time/time.h"

namespace reqctx::internal {

class JobList;

// A unit of work the executor runs. Intrusive: queuing one never allocates.
// The submitter keeps the object alive until Run() starts; Run() must not
// throw (an exception escaping it terminates the process, as from a thread).
class Job {
 public:
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  virtual void Run() noexcept = 0;

 protected:
  Job() = default;
  ~Job() = default;

 private:
  friend class JobList;
  Job* next_job_ = nullptr;
};

// A FIFO of Tasks linked through the tasks themselves. Not thread-safe.
class JobList {
 public:
  JobList() = default;
  JobList(JobList&& o) noexcept : head_(o.head_), tail_(o.tail_) {
    o.head_ = o.tail_ = nullptr;
  }
  JobList(const JobList&) = delete;
  JobList& operator=(const JobList&) = delete;

  bool empty() const { return head_ == nullptr; }
  void Push(Job* t) {
    t->next_job_ = nullptr;
    if (tail_ == nullptr) {
      head_ = t;
    } else {
      tail_->next_job_ = t;
    }
    tail_ = t;
  }
  void Append(JobList&& other) {
    if (other.head_ == nullptr) return;
    if (tail_ == nullptr) {
      head_ = other.head_;
    } else {
      tail_->next_job_ = other.head_;
    }
    tail_ = other.tail_;
    other.head_ = other.tail_ = nullptr;
  }
  Job* Pop() {
    Job* t = head_;
    if (t == nullptr) return nullptr;
    head_ = t->next_job_;
    if (head_ == nullptr) tail_ = nullptr;
    t->next_job_ = nullptr;
    return t;
  }
  // Runs and removes every task, in order, on the calling thread.
  void RunAll() noexcept {
    while (Job* t = Pop()) t->Run();
  }

 private:
  Job* head_ = nullptr;
  Job* tail_ = nullptr;
};

class Executor {
 public:
  static constexpr absl::Duration kIdleTimeout = absl::Seconds(5);
  static constexpr absl::Duration kBlockedThreshold = absl::Milliseconds(5);
  static constexpr absl::Duration kRetryDelay = absl::Milliseconds(10);
  static constexpr absl::Duration kExitGrace = absl::Seconds(2);

  static Executor& Get();
  static size_t SoftCap();
  static size_t HardCap();

  // Queues every task of `tasks` to run soon on a pool thread, in order of
  // submission. Never throws and never allocates. Call it with no context
  // lock held. Runs the tasks on the calling thread instead only when no
  // pool thread exists and none can be started, or after process exit began.
  void Submit(JobList tasks) noexcept;

  // Live pool threads (workers; the supervisor is not counted).
  size_t ThreadCount();
  // The most workers that were ever alive at once. For tests and benchmarks.
  size_t PeakThreadCount();

 private:
  Executor();
  void SupervisorLoop();
  void WorkerLoop();
  // Starts a detached thread running `fn`; false if it cannot be started.
  bool TryStartThread(void (Executor::*fn)());
  void StopAtExit();
  void ForkPrepare();
  void ForkParent();
  void ForkChild();

  const size_t soft_cap_;
  const size_t hard_cap_;

  std::mutex mu_;
  std::condition_variable work_;        // Workers wait here for tasks.
  std::condition_variable supervise_;   // The supervisor waits here.
  std::condition_variable exited_;      // StopAtExit waits for workers.
  JobList queue_;                      // Guarded by mu_.
  size_t queued_ = 0;                   // Guarded by mu_.
  size_t idle_ = 0;                     // Guarded by mu_.
  size_t starting_ = 0;                 // Started, not yet looping. mu_.
  size_t threads_ = 0;                  // Guarded by mu_.
  size_t peak_threads_ = 0;             // Guarded by mu_.
  bool supervisor_running_ = false;     // Guarded by mu_.
  bool stopping_ = false;               // Guarded by mu_: exit began.
  // When a queued task was last picked up, or the queue became non-empty:
  // the supervisor adds a worker past the soft cap only when this is older
  // than kBlockedThreshold. Guarded by mu_.
  int64_t last_progress_ns_ = 0;
};

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_EXECUTOR_H_
