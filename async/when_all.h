// WhenAll: run tasks concurrently on one Loop and wait for all of them.
//
//   auto [group, cancel] = reqctx::WithCancel(ctx);
//   std::vector<reqctx::Task<absl::StatusOr<Resp>>> calls;
//   for (const Req& r : requests) calls.push_back(reqctx::Call(group, stub, &Stub::async::Echo, r));
//   std::vector<absl::StatusOr<Resp>> results = co_await reqctx::WhenAll(std::move(calls));
//
// Fan-out canceled as a group: give every task the same child context and
// cancel it (cancel() above ends every call still running, each with
// CANCELLED); or destroy the awaiting coroutine, which destroys the child
// tasks (see async/task.h).
//
// Contract: all tasks are started, in order, on the awaiting task's Loop as
// soon as WhenAll is awaited; it yields their results in the same order once
// the last one has finished. An empty vector yields an empty vector at once.
// If a task throws, WhenAll still waits for all, then rethrows the first
// exception (by index). Empty (invalid) tasks abort with a message.
//
// Thread-safety: everything runs on the awaiting task's Loop thread.
// Lifetime: the WhenAll task owns the child tasks until it finishes or is
// destroyed; destroying it while suspended destroys every unfinished child.
#ifndef REQCTX_ASYNC_WHEN_ALL_H_
#define REQCTX_ASYNC_WHEN_ALL_H_

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "async/task.h"

namespace reqctx {

namespace internal {

template <typename T>
class WhenAllAwaiter {
 public:
  explicit WhenAllAwaiter(std::vector<Task<T>> tasks)
      : tasks_(std::move(tasks)), results_(tasks_.size()),
        errors_(tasks_.size()) {}
  WhenAllAwaiter(const WhenAllAwaiter&) = delete;
  WhenAllAwaiter& operator=(const WhenAllAwaiter&) = delete;

  bool await_ready() const noexcept { return tasks_.empty(); }

  template <typename P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    parent_ = parent;
    remaining_ = tasks_.size();
    runners_.reserve(tasks_.size());
    for (std::size_t i = 0; i < tasks_.size(); ++i) {
      if (!tasks_[i].valid()) TaskMisuse("WhenAll given an empty reqctx::Task");
      runners_.push_back(Runner(this, i));
    }
    starting_ = true;
    for (Task<void>& r : runners_) {
      r.h_.promise().loop_ = LoopOf(parent);
      r.h_.resume();  // Runs until the child's first suspension.
    }
    starting_ = false;
    return remaining_ != 0;  // All done synchronously: do not suspend.
  }

  std::vector<T> await_resume() {
    for (std::exception_ptr& e : errors_) {
      if (e) std::rethrow_exception(e);
    }
    std::vector<T> out;
    out.reserve(results_.size());
    for (std::optional<T>& r : results_) out.push_back(std::move(*r));
    return out;
  }

 private:
  // Resumes the parent once the last child is done.
  struct ResumeParent {
    std::coroutine_handle<> parent;
    bool await_ready() const noexcept { return !parent; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<>) noexcept {
      return parent;  // This runner stays suspended until destroyed.
    }
    void await_resume() noexcept {}
  };

  static Task<void> Runner(WhenAllAwaiter* self, std::size_t i) {
    try {
      self->results_[i].emplace(co_await std::move(self->tasks_[i]));
    } catch (...) {
      self->errors_[i] = std::current_exception();
    }
    const bool last = --self->remaining_ == 0;
    co_await ResumeParent{last && !self->starting_ ? self->parent_
                                                   : std::coroutine_handle<>()};
  }

  std::vector<Task<T>> tasks_;
  std::vector<std::optional<T>> results_;
  std::vector<std::exception_ptr> errors_;
  std::vector<Task<void>> runners_;  // Destroyed first: they use the rest.
  std::coroutine_handle<> parent_;
  std::size_t remaining_ = 0;
  bool starting_ = false;
};

template <typename T>
Task<std::vector<T>> WhenAllBody(std::vector<Task<T>> tasks) {
  co_return co_await WhenAllAwaiter<T>(std::move(tasks));
}

}  // namespace internal

// Runs `tasks` concurrently and yields their results in order (see above).
template <typename T>
  requires(!std::is_void_v<T>)
Task<std::vector<T>> WhenAll(std::vector<Task<T>> tasks) {
  return internal::WhenAllBody(std::move(tasks));
}

}  // namespace reqctx

#endif  // REQCTX_ASYNC_WHEN_ALL_H_
