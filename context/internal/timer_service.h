// TimerService: the shared timer threads that fire every context deadline.
//
// The service is a few shards (at most kMaxShards, one per CPU), each a
// min-heap of (deadline, TimerNode*) guarded by its own std::mutex and served
// by its own thread, which sleeps until the shard's earliest deadline and then
// cancels that node with kDeadline. A deadline goes to the shard of the CPU
// that creates it, so threads on different cores arming and canceling
// timeouts do not contend on one lock or bounce one heap between caches (as
// Go keeps a timer heap per P). Each TimerNode records its shard and heap
// index, so removal on cancel is O(log n): canceled contexts leave nothing.
//
// Lifetime: a leaked singleton (safe to use from static destructors). The
// first deadline starts every shard's thread (so the thread count is fixed
// from then on); all are stopped and joined at process exit (atexit); after
// that, new deadlines are not armed.
//
// Locking: Add/Remove are called with the TimerNode's mutex held (node ->
// shard order); a shard thread never holds its mutex while canceling.
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
  static constexpr size_t kMaxShards = 8;

  // One heap and the thread that serves it.
  class Shard {
   public:
    void Start();
    void Add(TimerNode* n);
    void Remove(TimerNode* n);
    size_t PendingCount();
    void Shutdown();

   private:
    struct Entry {
      absl::Time when;
      TimerNode* node;
    };
    void Run();
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
    // When the thread will next wake on its own: InfinitePast while it is
    // awake (it re-reads the heap before sleeping), InfiniteFuture while it
    // waits on an empty heap. Add wakes it only for a deadline before this,
    // so a steady stream of later deadlines (the usual: same timeout, later
    // start) costs no context switch. Guarded by mu_.
    absl::Time sleep_until_ = absl::InfinitePast();
  };

  TimerService();
  void Shutdown();

  const size_t num_shards_;
  std::once_flag started_;
  Shard shards_[kMaxShards];
};

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_TIMER_SERVICE_H_
