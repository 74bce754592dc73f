#include "context/internal/timer_service.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>

#include "absl/time/clock.h"

namespace reqctx::internal {

TimerService& TimerService::Get() {
  static TimerService* const service = new TimerService();
  return *service;
}

TimerService::TimerService()
    : num_shards_(std::clamp<size_t>(std::thread::hardware_concurrency(), 1,
                                     kMaxShards)) {
  std::atexit([] { Get().Shutdown(); });
}

void TimerService::Add(TimerNode* n) {
  // The creating thread's CPU picks the shard: threads on different cores
  // use different locks and heaps.
  const int cpu = sched_getcpu();
  n->shard = cpu < 0 ? 0 : static_cast<uint32_t>(cpu) % num_shards_;
  // The first deadline starts every shard's thread, so the service's thread
  // count is fixed from then on (it does not grow as other CPUs join in).
  std::call_once(started_, [this] {
    for (size_t i = 0; i < num_shards_; ++i) shards_[i].Start();
  });
  shards_[n->shard].Add(n);
}

void TimerService::Remove(TimerNode* n) { shards_[n->shard].Remove(n); }

size_t TimerService::PendingCount() {
  size_t total = 0;
  for (size_t i = 0; i < num_shards_; ++i) total += shards_[i].PendingCount();
  return total;
}

void TimerService::Shutdown() {
  for (size_t i = 0; i < num_shards_; ++i) shards_[i].Shutdown();
}

void TimerService::Shard::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void TimerService::Shard::Add(TimerNode* n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return;  // Process exit: deadlines are no longer armed.
  heap_.push_back(Entry{n->deadline(), n});
  n->heap_index = static_cast<uint32_t>(heap_.size() - 1);
  SiftUp(heap_.size() - 1);
  if (n->deadline() < sleep_until_) wake_.notify_one();  // Due before it wakes.
}

void TimerService::Shard::Remove(TimerNode* n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (n->heap_index == TimerNode::kNotQueued) return;
  RemoveAt(n->heap_index);
  // Give memory back after a burst (e.g. a million timers then none).
  if (heap_.capacity() > 1024 && heap_.size() < heap_.capacity() / 4) {
    heap_.shrink_to_fit();
  }
}

size_t TimerService::Shard::PendingCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return heap_.size();
}

void TimerService::Shard::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (heap_.empty()) {
      sleep_until_ = absl::InfiniteFuture();
      wake_.wait(lock);
      sleep_until_ = absl::InfinitePast();
      continue;
    }
    const absl::Time now = absl::Now();
    const absl::Duration left = heap_.front().when - now;
    if (left > absl::ZeroDuration()) {
      const absl::Duration slice = std::min(left, absl::Hours(1));
      sleep_until_ = now + slice;
      wake_.wait_for(lock, absl::ToChronoNanoseconds(slice));
      sleep_until_ = absl::InfinitePast();
      continue;
    }
    TimerNode* n = heap_.front().node;
    RemoveAt(0);
    // Queued implies a live CancelFunc holds a reference (the last one
    // cancels, which dequeues under mu_), so this Ref is safe.
    n->Ref();
    lock.unlock();
    n->Cancel(DoneReason::kDeadline, n->deadline_cause(),
              /*remove_from_parent=*/true);
    n->Unref();
    lock.lock();
  }
}

void TimerService::Shard::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
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
  if (i == heap_.size()) return;
  Place(i, last);
  SiftDown(i);
  SiftUp(last.node->heap_index);
}

}  // namespace reqctx::internal
