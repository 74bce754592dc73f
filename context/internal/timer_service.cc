#include "context/internal/timer_service.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <limits>
#include <new>

#include "context/internal/thread_start.h"

namespace reqctx::internal {
namespace {
constexpr MonoTime kAwake = std::numeric_limits<MonoTime>::min();
}  // namespace

TimerService& TimerService::Get() {
  static TimerService* const service = new TimerService();
  return *service;
}

TimerService::TimerService()
    : num_shards_(std::clamp<size_t>(std::thread::hardware_concurrency(), 1,
                                     kMaxShards)) {
  pthread_atfork([] { Get().ForkPrepare(); }, [] { Get().ForkParent(); },
                 [] { Get().ForkChild(); });
}

bool TimerService::Add(TimerNode* n) {
  // The creating thread's CPU picks the shard: threads on different cores
  // use different locks and heaps.
  const int cpu = sched_getcpu();
  n->shard = static_cast<uint16_t>(cpu < 0 ? 0 : static_cast<size_t>(cpu) % num_shards_);
  // The first deadline starts every shard's thread, so the service's thread
  // count is fixed from then on (it does not grow as other CPUs join in).
  if (!started_.load(std::memory_order_acquire)) StartAll();
  return shards_[n->shard].Add(n);
}

void TimerService::StartAll() {
  std::lock_guard<std::mutex> lock(start_mu_);
  if (started_.load(std::memory_order_relaxed)) return;
  for (size_t i = 0; i < num_shards_; ++i) shards_[i].Start();
  started_.store(true, std::memory_order_release);
}

void TimerService::Remove(TimerNode* n) { shards_[n->shard].Remove(n); }

size_t TimerService::PendingCount() {
  size_t total = 0;
  for (size_t i = 0; i < num_shards_; ++i) total += shards_[i].PendingCount();
  return total;
}

size_t TimerService::WakeupsForTesting() {
  size_t total = 0;
  for (size_t i = 0; i < num_shards_; ++i) {
    total += shards_[i].wakeups_.load(std::memory_order_relaxed);
  }
  return total;
}

size_t TimerService::ReservedBytesForTesting() {
  size_t total = 0;
  for (size_t i = 0; i < num_shards_; ++i) total += shards_[i].ReservedBytes();
  return total;
}

void TimerService::ForkPrepare() {
  start_mu_.lock();
  for (size_t i = 0; i < num_shards_; ++i) shards_[i].ForkPrepare();
}

void TimerService::ForkParent() {
  for (size_t i = num_shards_; i-- > 0;) shards_[i].ForkParent();
  start_mu_.unlock();
}

void TimerService::ForkChild() {
  bool pending = false;
  for (size_t i = num_shards_; i-- > 0;) pending |= shards_[i].ForkChild();
  started_.store(false, std::memory_order_relaxed);
  start_mu_.unlock();
  if (pending) StartAll();  // Pending deadlines fire in the child too.
}

void TimerService::Shard::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  StartLocked();
}

void TimerService::Shard::StartLocked() {
  if (started_) return;
  // A thread that cannot start now is retried by the shard's next Add; until
  // then its deadlines wait (and no With* call throws for it).
  try {
    thread_ = StartThread([this] { Run(); });
    started_ = true;
  } catch (...) {
  }
}

bool TimerService::Shard::Add(TimerNode* n) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    heap_.push_back(Entry{n->mono_deadline(), n});
  } catch (const std::bad_alloc&) {
    return false;
  }
  n->heap_index = static_cast<uint32_t>(heap_.size() - 1);
  SiftUp(heap_.size() - 1);
  if (!started_) StartLocked();
  // Due before the thread wakes on its own.
  if (n->mono_deadline() < sleep_until_) {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    wake_.notify_one();
  }
  return true;
}

void TimerService::Shard::Remove(TimerNode* n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (n->heap_index == TimerNode::kNotQueued) return;
  RemoveAt(n->heap_index);
}

size_t TimerService::Shard::PendingCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return heap_.size();
}

size_t TimerService::Shard::ReservedBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return heap_.capacity() * sizeof(Entry);
}

void TimerService::Shard::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  // Set after a whole kIdleHorizon passed with an empty heap.
  bool parked = false;
  for (;;) {
    if (heap_.empty()) {
      if (parked) {
        sleep_until_ = kMonoNever;  // Idle: the next Add wakes us.
        wake_.wait(lock);
      } else {
        // Just emptied: stay "due to wake" for a while, so that a deadline
        // added meanwhile (the next request's) wakes nothing unless it is
        // due before then.
        const MonoTime until = MonoAdd(MonoNow(), kIdleHorizon);
        sleep_until_ = until;
        wake_.wait_for(lock, absl::ToChronoNanoseconds(kIdleHorizon));
        parked = heap_.empty() && MonoNow() >= until;
      }
      sleep_until_ = kAwake;
      continue;
    }
    parked = false;
    const MonoTime now = MonoNow();
    const absl::Duration left = MonoUntil(now, heap_.front().when);
    if (left > absl::ZeroDuration()) {
      const absl::Duration slice = std::min(left, absl::Hours(1));
      sleep_until_ = MonoAdd(now, slice);
      wake_.wait_for(lock, absl::ToChronoNanoseconds(slice));
      sleep_until_ = kAwake;
      continue;
    }
    TimerNode* n = heap_.front().node;
    RemoveAt(0);
    // Queued implies a live CancelFunc holds a reference (the last one
    // cancels, which dequeues under mu_), so this Ref is safe.
    n->Ref();
    lock.unlock();
    {
      std::lock_guard<std::mutex> firing(firing_);
      n->Cancel(DoneReason::kDeadline, n->deadline_cause(),
                /*remove_from_parent=*/true);
    }
    n->Unref();
    lock.lock();
  }
}

void TimerService::Shard::ForkPrepare() {
  firing_.lock();
  mu_.lock();
}

void TimerService::Shard::ForkParent() {
  mu_.unlock();
  firing_.unlock();
}

bool TimerService::Shard::ForkChild() {
  // The thread does not exist in the child: forget it without joining, and
  // start from fresh condition variable state (it may list absent waiters).
  if (started_) new (&thread_) std::thread();
  new (&wake_) std::condition_variable();
  started_ = false;
  sleep_until_ = kAwake;
  const bool pending = !heap_.empty();
  mu_.unlock();
  firing_.unlock();
  return pending;
}

void TimerService::Shard::Place(size_t i, Entry e) {
  heap_[i] = e;
  e.node->heap_index = static_cast<uint32_t>(i);
}

void TimerService::Shard::SiftUp(size_t i) {
  Entry e = heap_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!(e.when < heap_[parent].when)) break;
    Place(i, heap_[parent]);
    i = parent;
  }
  Place(i, e);
}

void TimerService::Shard::SiftDown(size_t i) {
  Entry e = heap_[i];
  const size_t n = heap_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_[child + 1].when < heap_[child].when) ++child;
    if (!(heap_[child].when < e.when)) break;
    Place(i, heap_[child]);
    i = child;
  }
  Place(i, e);
}

void TimerService::Shard::RemoveAt(size_t i) {
  heap_[i].node->heap_index = TimerNode::kNotQueued;
  Entry last = heap_.back();
  heap_.pop_back();
  if (i != heap_.size()) {
    Place(i, last);
    SiftDown(i);
    SiftUp(last.node->heap_index);
  }
  // Give memory back after a burst (a million timers, fired or canceled,
  // then few). shrink_to_fit never throws (it keeps the buffer if it can't).
  if (heap_.capacity() > 1024 && heap_.size() < heap_.capacity() / 4) {
    heap_.shrink_to_fit();
  }
}

}  // namespace reqctx::internal
