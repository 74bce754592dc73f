// Loop and its queue (see task.h).
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <utility>

#include "absl/time/clock.h"
#include "async/task.h"

namespace reqctx {
namespace internal {

bool LoopQueue::Post(absl::AnyInvocable<void() &&> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) {
      queue_.push_back(std::move(fn));
      cv_.notify_one();
      return true;
    }
  }
  return false;  // `fn` is destroyed here, outside the lock.
}

bool LoopQueue::RunUntil(absl::Time until, absl::FunctionRef<bool()> stop) {
  while (!stop()) {
    absl::AnyInvocable<void() &&> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (queue_.empty()) {
        if (until == absl::InfiniteFuture()) {
          cv_.wait(lock);
          continue;
        }
        absl::Duration left = until - absl::Now();
        if (left <= absl::ZeroDuration()) return stop();
        cv_.wait_for(lock, absl::ToChronoNanoseconds(left));
      }
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    std::move(fn)();
  }
  return true;
}

void LoopQueue::Close() {
  std::deque<absl::AnyInvocable<void() &&>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    dropped.swap(queue_);
  }
  // `dropped` (closures holding resumption state) is destroyed here, unlocked:
  // destroying one may post again, which is then refused.
}

void TaskMisuse(const char* what) {
  std::fprintf(stderr, "reqctx: %s\n", what);
  std::abort();
}

}  // namespace internal

Loop::Loop() : queue_(std::make_shared<internal::LoopQueue>()) {}

Loop::~Loop() {
  // Suspended tasks first: their awaitables unregister (an AfterFunc already
  // running may still post; the queue drops it once closed below).
  std::unordered_map<void*, Task<void>> tasks;
  tasks.swap(tasks_);
  tasks.clear();
  queue_->Close();
}

void Loop::Spawn(Task<void> task) {
  if (!task.valid()) return;
  std::coroutine_handle<> h = task.h_;
  task.h_.promise().loop_ = queue_;
  task.h_.promise().owner_ = this;
  tasks_.emplace(h.address(), std::move(task));
  // Only Finished() or ~Loop destroy a spawned task, and it cannot finish
  // before it starts; ~Loop drops this closure unrun (Close) after
  // destroying the task. So it never resumes a destroyed frame.
  queue_->Post([h] { h.resume(); });
}

void Loop::Run() {
  queue_->RunUntil(absl::InfiniteFuture(), [this] { return tasks_.empty(); });
}

bool Loop::RunFor(absl::Duration timeout) {
  return queue_->RunUntil(absl::Now() + timeout,
                          [this] { return tasks_.empty(); });
}

void Loop::Finished(void* frame) { tasks_.erase(frame); }

}  // namespace reqctx
