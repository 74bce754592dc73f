#include "interceptors/internal/sync_cancel_watcher.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <utility>

namespace reqctx::internal {

SyncCancelWatcher& SyncCancelWatcher::Get() {
  static SyncCancelWatcher* const watcher = new SyncCancelWatcher();
  return *watcher;
}

void SyncCancelWatcher::Watch(std::shared_ptr<ServerCall> call) {
  bool was_empty = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;  // Process exit: nothing is served any more.
    was_empty = calls_.empty();
    calls_.push_back(std::move(call));
    if (!started_) {
      started_ = true;
      thread_ = std::thread([this] { Run(); });
      std::atexit([] { Get().Shutdown(); });
    }
  }
  // Only an empty list parks the thread until woken; otherwise it is between
  // polls and sees the new call at the next one. Waking it on every call
  // would cost two context switches per RPC under load.
  if (was_empty) wake_.notify_one();
}

size_t SyncCancelWatcher::WatchedCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

void SyncCancelWatcher::Run() {
  const auto interval = absl::ToChronoNanoseconds(kPollInterval);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (calls_.empty()) {
      wake_.wait(lock, [this] { return stopping_ || !calls_.empty(); });
      continue;
    }
    std::vector<std::shared_ptr<ServerCall>> snapshot = calls_;
    lock.unlock();
    std::vector<const ServerCall*> finished;
    for (const std::shared_ptr<ServerCall>& call : snapshot) {
      if (!call->PollCancelled()) finished.push_back(call.get());
    }
    lock.lock();
    // Move the finished calls out, so their last references (which cancel
    // their Contexts) are dropped outside the lock.
    std::vector<std::shared_ptr<ServerCall>> dropped;
    auto keep_end = std::partition(
        calls_.begin(), calls_.end(),
        [&finished](const std::shared_ptr<ServerCall>& c) {
          return std::find(finished.begin(), finished.end(), c.get()) ==
                 finished.end();
        });
    std::move(keep_end, calls_.end(), std::back_inserter(dropped));
    calls_.erase(keep_end, calls_.end());
    lock.unlock();
    dropped.clear();
    snapshot.clear();
    lock.lock();
    wake_.wait_for(lock, interval, [this] { return stopping_; });
  }
}

void SyncCancelWatcher::Shutdown() {
  std::thread thread;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    thread = std::move(thread_);
  }
  wake_.notify_all();
  if (thread.joinable()) thread.join();
}

}  // namespace reqctx::internal
