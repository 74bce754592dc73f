#include "context/internal/executor.h"

#include <thread>
#include <utility>

namespace reqctx::internal {

Executor& Executor::Get() {
  static Executor* const executor = new Executor();
  return *executor;
}

void Executor::Submit(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(task));
  if (queue_.size() <= idle_) {
    work_.notify_one();
    return;
  }
  ++threads_;
  std::thread([this] { WorkerLoop(); }).detach();
}

size_t Executor::ThreadCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return threads_;
}

void Executor::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (queue_.empty()) {
      ++idle_;
      bool got_work = work_.wait_for(
          lock, absl::ToChronoNanoseconds(kIdleTimeout),
          [this] { return !queue_.empty(); });
      --idle_;
      if (!got_work) break;
    }
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    task();
    task = nullptr;  // Release captures outside the lock.
    lock.lock();
  }
  --threads_;
}

}  // namespace reqctx::internal
