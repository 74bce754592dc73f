// TimerService: the one thread that fires every context deadline.
//
// A min-heap of (deadline, TimerNode*) guarded by a std::mutex; the thread
// sleeps until the earliest deadline, then cancels that node with kDeadline.
// Each TimerNode records its heap index, so removal on cancel is O(log n):
// canceled contexts leave nothing behind.
//
// Lifetime: a leaked singleton (safe to use from static destructors). The
// thread starts with the first deadline and is stopped and joined at process
// exit (atexit); after that, new deadlines are not armed.
//
// Locking: Add/Remove are called with the TimerNode's mutex held (node ->
// service order); the thread never holds the service mutex while canceling.
#ifndef REQCTX_CONTEXT_INTERNAL_TIMER_SERVICE_H_
#define REQCTX_CONTEXT_INTERNAL_TIMER_SERVICE_H_

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "context/internal/node.h"

namespace reqctx::internal {

class TimerService {
 public:
  static TimerService& Get();

  // Queues `n` to be canceled at n->deadline(). Call with n's mutex held and
  // n not done.
  void Add(TimerNode* n);
  // Dequeues `n` if queued. Call with n's mutex held.
  void Remove(TimerNode* n);
  size_t PendingCount();

 private:
  struct Entry {
    absl::Time when;
    TimerNode* node;
  };

  TimerService() = default;
  void Run();
  void Shutdown();
  // Heap helpers; mu_ held.
  void Place(size_t i, Entry e);
  void SiftUp(size_t i);
  void SiftDown(size_t i);
  void RemoveAt(size_t i);

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Entry> heap_;  // Guarded by mu_.
  std::thread thread_;       // Guarded by mu_ (started once).
  bool started_ = false;     // Guarded by mu_.
  bool stopping_ = false;    // Guarded by mu_.
  // When the thread will next wake on its own: InfinitePast while it is awake
  // (it re-reads the heap before sleeping), InfiniteFuture while it waits on
  // an empty heap. Add wakes it only for a deadline before this, so a steady
  // stream of later deadlines (the usual: same timeout, later start) costs no
  // context switch. Guarded by mu_.
  absl::Time sleep_until_ = absl::InfinitePast();
};

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_TIMER_SERVICE_H_
