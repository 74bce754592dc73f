#include "interceptors/internal/sync_cancel_watcher.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <utility>

namespace reqctx::internal {

SyncCancelWatcher& SyncCancelWatcher::Get() {
  static SyncCancelWatcher* const watcher = new SyncCancelWatcher(true);
  return *watcher;
}

std::unique_ptr<SyncCancelWatcher> SyncCancelWatcher::NewForTesting() {
  return std::unique_ptr<SyncCancelWatcher>(new SyncCancelWatcher(false));
}

SyncCancelWatcher::SyncCancelWatcher(bool with_thread)
    : with_thread_(with_thread) {}

SyncCancelWatcher::~SyncCancelWatcher() { Shutdown(); }

void SyncCancelWatcher::Watch(std::shared_ptr<ServerCall> call) {
  Shard& shard = shards_[PointerShard(call.get())];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    shard.calls.push_back(std::move(call));
    shard.size.store(shard.calls.size(), std::memory_order_release);
  }
  // Only the first call after an empty spell can need to wake the thread,
  // and only if it is idle (waiting for calls): between passes it sees the
  // call at the next one anyway, and a notify would wake it for nothing (two
  // context switches). The lock orders the count against the thread's check.
  if (watched_.fetch_add(1, std::memory_order_acq_rel) == 0 && with_thread_) {
    std::call_once(start_once_, [this] { StartThread(); });
    bool idle;
    {
      std::lock_guard<std::mutex> lock(wake_mu_);
      idle = idle_;
    }
    if (idle) wake_.notify_one();
  }
}

size_t SyncCancelWatcher::WatchedCount() const {
  return watched_.load(std::memory_order_acquire);
}

size_t SyncCancelWatcher::PollOnce() {
  size_t remaining = 0;
  size_t dropped = 0;
  for (Shard& shard : shards_) {
    if (shard.size.load(std::memory_order_acquire) == 0) continue;
    {
      std::lock_guard<std::mutex> lock(shard.mu);
      polling_.swap(shard.calls);  // polling_ was empty.
      shard.size.store(0, std::memory_order_relaxed);
    }
    if (polling_.empty()) continue;
    // Poll outside the lock (gRPC may run our hooks inside IsCancelled), and
    // compact the survivors in place: one linear pass. A dropped reference
    // may be a call's last, whose release cancels its Context: also outside
    // the lock.
    size_t keep = 0;
    for (size_t i = 0; i < polling_.size(); ++i) {
      if (polling_[i]->PollCancelled()) {
        if (keep != i) polling_[keep] = std::move(polling_[i]);
        ++keep;
      }
    }
    dropped += polling_.size() - keep;
    polling_.resize(keep);
    {
      std::lock_guard<std::mutex> lock(shard.mu);
      // Calls watched during the pass went into shard.calls.
      if (shard.calls.empty()) {
        shard.calls.swap(polling_);
      } else {
        shard.calls.insert(shard.calls.end(),
                           std::make_move_iterator(polling_.begin()),
                           std::make_move_iterator(polling_.end()));
      }
      shard.size.store(shard.calls.size(), std::memory_order_release);
      remaining += shard.calls.size();
    }
    polling_.clear();
  }
  watched_.fetch_sub(dropped, std::memory_order_acq_rel);
  return remaining;
}

void SyncCancelWatcher::StartThread() {
  std::thread thread([this] { Run(); });
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    thread_ = std::move(thread);
  }
  std::atexit([] { Get().Shutdown(); });
}

void SyncCancelWatcher::Run() {
  const auto interval = absl::ToChronoNanoseconds(kPollInterval);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(wake_mu_);
      idle_ = true;
      wake_.wait(lock, [this] {
        return stopping_ || watched_.load(std::memory_order_acquire) > 0;
      });
      idle_ = false;
      if (stopping_) return;
    }
    // gRPC's IsCancelled() on a live sync call is not free (it polls the
    // call's completion queue: ~19 us of CPU measured, see
    // //bench:watcher_bench), so with very many calls in flight a pass takes
    // longer than kPollInterval. Sleeping at least as long as the pass took
    // keeps the watcher under half a core; the cancel latency then grows
    // with the number of calls instead.
    const auto pass_start = std::chrono::steady_clock::now();
    PollOnce();
    const auto pass = std::chrono::steady_clock::now() - pass_start;
    std::unique_lock<std::mutex> lock(wake_mu_);
    if (wake_.wait_for(lock, std::max<std::chrono::nanoseconds>(interval, pass),
                       [this] { return stopping_; })) {
      return;
    }
  }
}

void SyncCancelWatcher::Shutdown() {
  std::thread thread;
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    if (stopping_) return;
    stopping_ = true;
    thread = std::move(thread_);
  }
  wake_.notify_all();
  if (thread.joinable()) thread.join();
}

}  // namespace reqctx::internal
