// TimerService: the shared timer threads that fire every context deadline.
//
// The service is one shard per CPU (at most kMaxShards), each a
// min-heap of (monotonic deadline, TimerNode*) guarded by its own std::mutex
// and served by its own thread, which sleeps on the monotonic clock until the
// shard's earliest deadline and then cancels that node with kDeadline. A
// deadline goes to the shard of the CPU that creates it, so threads on
// different cores arming and canceling timeouts do not contend on one lock or
// bounce one heap between caches (as Go keeps a timer heap per P). Each
// TimerNode records its shard and heap index, so removal on cancel is
// O(log n): canceled contexts leave nothing. A heap gives memory back when it
// drops below a quarter of its capacity, whether its timers fired or were
// removed.
//
// Clock: deadlines are points on the monotonic clock (clock.h), so stepping
// the system clock neither delays nor hurries them.
//
// Lifetime: a leaked singleton. The first deadline starts every shard's
// thread (so the thread count is fixed from then on). The threads are never
// stopped: deadlines keep firing until the process ends, through static
// destruction (a static destructor may wait on a deadline-bound context);
// they touch only the leaked service and the nodes they fire.
//
// fork(): the handlers hold every shard (and every in-progress firing)
// across the fork, so the child's copy is consistent; the child gets new
// shard threads (at once if timers are pending, else with its first
// deadline), and its pending deadlines fire there.
//
// Locking: Add/Remove are called with the TimerNode's mutex held (node ->
// shard order); a shard thread never holds its mutex while canceling.
#ifndef REQCTX_CONTEXT_INTERNAL_TIMER_SERVICE_H_
#define REQCTX_CONTEXT_INTERNAL_TIMER_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#include "context/internal/clock.h"
#include "context/internal/node.h"

namespace reqctx::internal {

class TimerService {
 public:
  static TimerService& Get();

  // Queues `n` to be canceled at n->mono_deadline(). Call with n's mutex held
  // and n not done. Returns false (queuing nothing) only when memory for the
  // heap cannot be had.
  [[nodiscard]] bool Add(TimerNode* n);
  // Dequeues `n` if queued. Call with n's mutex held.
  void Remove(TimerNode* n);
  size_t PendingCount();
  // Bytes reserved by the heaps (capacity, not size). For tests.
  size_t ReservedBytesForTesting();
  // How many times Add woke a shard thread. For tests and benchmarks.
  size_t WakeupsForTesting();

 private:
  static constexpr size_t kMaxShards = 64;
  // How long a shard's thread keeps a wake-up planned after its heap empties
  // (see Shard::sleep_until_).
  static constexpr absl::Duration kIdleHorizon = absl::Seconds(1);

  // One heap and the thread that serves it.
  class Shard {
   public:
    void Start();
    bool Add(TimerNode* n);
    void Remove(TimerNode* n);
    size_t PendingCount();
    size_t ReservedBytes();
    void ForkPrepare();
    void ForkParent();
    // Returns true if the child must start this shard's thread now.
    bool ForkChild();

    std::atomic<size_t> wakeups_{0};  // Add's notifications; for tests.

   private:
    struct Entry {
      MonoTime when;
      TimerNode* node;
    };
    void Run();
    void StartLocked();  // mu_ held.
    // Heap helpers; mu_ held.
    void Place(size_t i, Entry e);
    void SiftUp(size_t i);
    void SiftDown(size_t i);
    void RemoveAt(size_t i);

    // Held by the shard thread while it cancels a node, and by fork's
    // prepare handler, so no fork lands in the middle of a firing.
    std::mutex firing_;
    std::mutex mu_;
    std::condition_variable wake_;
    std::vector<Entry> heap_;  // Guarded by mu_.
    std::thread thread_;       // Guarded by mu_ (started once per process).
    bool started_ = false;     // Guarded by mu_.
    // When the thread will next wake on its own: at most 0 while it is awake
    // (it re-reads the heap before sleeping); its earliest deadline while it
    // waits for one; kIdleHorizon after the heap emptied; kMonoNever once it
    // stayed empty that long. Add wakes it only for a deadline before this,
    // so a steady stream of later deadlines (the usual: same timeout, later
    // start; one request's deadline after the previous one's was removed)
    // costs no context switch. Guarded by mu_.
    MonoTime sleep_until_ = 0;
  };

  TimerService();
  void StartAll();
  void ForkPrepare();
  void ForkParent();
  void ForkChild();

  const size_t num_shards_;
  std::mutex start_mu_;
  std::atomic<bool> started_{false};
  Shard shards_[kMaxShards];
};

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_TIMER_SERVICE_H_
