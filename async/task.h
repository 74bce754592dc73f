// Task<T> and Loop: C++20 coroutines for reqctx, minimal and explicit.
//
//   reqctx::Task<int> Fetch(reqctx::Context ctx) {
//     absl::Status s = co_await reqctx::Sleep(ctx, absl::Milliseconds(10));
//     co_return s.ok() ? 42 : -1;
//   }
//   int v = reqctx::RunSync(Fetch(ctx));          // or Loop::Spawn + Run
//
// Task<T> is a lazy coroutine: calling the function creates it suspended;
// `co_await task` (inside another Task) runs it on the awaiting task's Loop
// and yields its result; Loop::Spawn runs a Task<void> on its own;
// RunSync runs one to completion on the calling thread. A Task's steps and
// every resumption after a reqctx awaitable (Sleep, Done, Call, WhenAll) run
// on its Loop's thread (see Loop below).
//
// Lifetime -- what a suspended coroutine holds:
//   * its frame: parameters (copied or moved in: take a Context by value, not
//     by reference, in a coroutine), locals, and the awaitable it is
//     suspended in;
//   * a suspended Sleep/Done holds a Context handle (keeping that context and
//     its ancestors alive) and an AfterFunc registration on it (and, for a
//     timeout, a timer context of its own); a suspended Call holds the gRPC
//     call (ClientContext, request, response) shared with gRPC's callback;
//     a suspended WhenAll owns its child tasks.
//   * Destroying a suspended Task (dropping it, or the Loop that owns it, or
//     the task awaiting it) destroys the frame: its awaitable stops its
//     AfterFuncs (waiting for one already running, which only queues a
//     resumption that is then discarded), cancels its gRPC call and waits
//     for gRPC's callback, and destroys WhenAll's child tasks the same way.
//     Nothing resumes a destroyed frame. Destroy a suspended Task on its
//     Loop's thread (or once no thread runs the Loop).
//   * g++ 12 destroys a lambda or brace-initialized temporary created inside
//     a co_await expression twice: name such objects in a variable first.
//   * A Task that was never started owns only its frame (its parameters).
//
// Cancellation never throws: reqctx awaitables report it as a Status. An
// exception thrown inside a Task propagates to the awaiting task at its
// co_await (and out of RunSync); one that escapes a spawned Task<void> calls
// std::terminate, as with std::thread.
//
// Thread-safety: a Task object is not thread-safe (one owner). Loop::Post is
// thread-safe; the rest of Loop is used from the loop's thread.
#ifndef REQCTX_ASYNC_TASK_H_
#define REQCTX_ASYNC_TASK_H_

#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/time/time.h"

namespace reqctx {

class Loop;
template <typename T>
class Task;

namespace internal {

// The queue behind a Loop, shared with whatever may post to it later
// (AfterFunc and gRPC callbacks), so posting after the Loop is gone is safe.
class LoopQueue {
 public:
  // Queues `fn`; drops it (returns false) once the queue is closed.
  bool Post(absl::AnyInvocable<void() &&> fn);
  // Runs queued functions on the calling thread until `stop()` holds or
  // `until` passes; returns stop().
  bool RunUntil(absl::Time until, absl::FunctionRef<bool()> stop);
  // Closes the queue and destroys the queued functions without running them.
  void Close();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void() &&>> queue_;
  bool closed_ = false;
};

// What reqctx awaitables use to resume a coroutine on its loop.
using LoopRef = std::shared_ptr<LoopQueue>;

// Reports a broken usage contract (awaiting an empty Task) and aborts.
[[noreturn]] void TaskMisuse(const char* what);

template <typename T>
class WhenAllAwaiter;

class PromiseBase {
 public:
  std::suspend_always initial_suspend() noexcept { return {}; }
  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept;
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { exception_ = std::current_exception(); }

  // The loop this task runs on (set when it is started).
  const LoopRef& loop() const { return loop_; }

  // Set by whoever starts the task (Task's awaiter, Loop::Spawn, WhenAll).
  LoopRef loop_;
  std::coroutine_handle<> continuation_;  // The awaiting task, if any.
  Loop* owner_ = nullptr;                 // The Loop that spawned it, if any.
  std::exception_ptr exception_;
};

template <typename T>
class TaskPromise : public PromiseBase {
 public:
  Task<T> get_return_object() noexcept;
  template <typename U>
    requires std::is_convertible_v<U&&, T>
  void return_value(U&& value) {
    value_.emplace(std::forward<U>(value));
  }
  T Result() {
    if (exception_) std::rethrow_exception(exception_);
    return std::move(*value_);
  }

 private:
  std::optional<T> value_;
};

template <>
class TaskPromise<void> : public PromiseBase {
 public:
  Task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void Result() {
    if (exception_) std::rethrow_exception(exception_);
  }
};

// Every reqctx awaitable needs the awaiting coroutine's loop.
template <typename P>
concept HasLoop = requires(const P& p) {
  { p.loop() } -> std::convertible_to<const LoopRef&>;
};

template <typename P>
const LoopRef& LoopOf(std::coroutine_handle<P> h) {
  static_assert(HasLoop<P>,
                "reqctx awaitables can only be co_awaited inside a reqctx::Task");
  return h.promise().loop();
}

}  // namespace internal

// A lazy coroutine producing a T (see the file comment). Move-only; the
// destructor destroys the coroutine (see Lifetime above).
template <typename T = void>
class [[nodiscard]] Task {
 public:
  using promise_type = internal::TaskPromise<T>;

  Task() = default;  // Empty: valid() is false.
  Task(Task&& other) noexcept : h_(std::exchange(other.h_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      Reset();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { Reset(); }

  // False for a default-constructed or moved-from Task.
  bool valid() const { return static_cast<bool>(h_); }

  // `co_await std::move(task)` (or a temporary): runs the task on the
  // awaiting task's loop and yields its result (rethrows its exception).
  // The task is consumed. Awaiting an empty Task aborts with a message.
  auto operator co_await() && noexcept { return Awaiter{std::move(*this)}; }

 private:
  struct Awaiter {
    Task task;
    bool await_ready() const noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> parent) {
      if (!task.h_) internal::TaskMisuse("co_await on an empty reqctx::Task");
      task.h_.promise().loop_ = internal::LoopOf(parent);
      task.h_.promise().continuation_ = parent;
      return task.h_;
    }
    T await_resume() { return task.h_.promise().Result(); }
  };

  friend class internal::TaskPromise<T>;
  friend class Loop;
  template <typename U>
  friend class internal::WhenAllAwaiter;
  explicit Task(std::coroutine_handle<promise_type> h) : h_(h) {}
  void Reset() {
    if (h_) std::exchange(h_, {}).destroy();
  }
  std::coroutine_handle<promise_type> h_;
};

// A queue of functions run one at a time on the thread calling Run/RunFor.
// See the file comment of async/task.h for what runs where.
//
// Thread-safety: Post() from any thread. Spawn(), Run(), RunFor() and the
// destructor from one thread at a time (the loop's thread).
// Lifetime: owns spawned tasks until they finish; the destructor destroys
// the unfinished ones and drops queued functions without running them.
class Loop {
 public:
  Loop();
  // Destroys unfinished spawned tasks (on this thread), then drops queued
  // work. Must not run inside one of this loop's tasks.
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Queues `fn` to run on the loop's thread. Thread-safe.
  void Post(absl::AnyInvocable<void() &&> fn) { queue_->Post(std::move(fn)); }
  // Starts `task` on this loop (its first step runs inside the next Run*).
  // The loop destroys it when it finishes. An empty task is ignored.
  void Spawn(Task<void> task);
  // Runs queued work on this thread until every spawned task has finished.
  // Blocks forever if one never does (prefer RunFor where that can happen).
  void Run();
  // Like Run, but returns after `timeout` at the latest. Returns true if
  // every spawned task has finished.
  bool RunFor(absl::Duration timeout);
  // Spawned tasks not finished yet.
  std::size_t pending() const { return tasks_.size(); }
  // For posting from any thread, also after the Loop is gone (then dropped).
  const internal::LoopRef& ref() const { return queue_; }

 private:
  friend class internal::PromiseBase;
  void Finished(void* frame);

  internal::LoopRef queue_;
  std::unordered_map<void*, Task<void>> tasks_;  // By frame address.
};

// Runs `task` to completion on a fresh Loop on the calling thread; returns
// its result or rethrows its exception. Blocks until the task finishes.
template <typename T>
T RunSync(Task<T> task);

// ---------------------------------------------------------------------------
// Implementation details.

namespace internal {

template <typename P>
std::coroutine_handle<> PromiseBase::FinalAwaiter::await_suspend(
    std::coroutine_handle<P> h) noexcept {
  PromiseBase& p = h.promise();
  if (p.continuation_) return p.continuation_;
  if (Loop* owner = p.owner_; owner != nullptr) {
    if (p.exception_) std::terminate();  // Escaped a spawned task.
    owner->Finished(h.address());        // Destroys this frame: last use.
  }
  return std::noop_coroutine();
}

template <typename T>
Task<T> TaskPromise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<TaskPromise<T>>::from_promise(*this));
}

inline Task<void> TaskPromise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<TaskPromise<void>>::from_promise(*this));
}

template <typename T>
Task<void> RunSyncBody(Task<T> task, std::optional<T>* result,
                       std::exception_ptr* error) {
  try {
    result->emplace(co_await std::move(task));
  } catch (...) {
    *error = std::current_exception();
  }
}

inline Task<void> RunSyncBody(Task<void> task, std::exception_ptr* error) {
  try {
    co_await std::move(task);
  } catch (...) {
    *error = std::current_exception();
  }
}

}  // namespace internal

template <typename T>
T RunSync(Task<T> task) {
  Loop loop;
  std::exception_ptr error;
  if constexpr (std::is_void_v<T>) {
    loop.Spawn(internal::RunSyncBody(std::move(task), &error));
    loop.Run();
    if (error) std::rethrow_exception(error);
  } else {
    std::optional<T> result;
    loop.Spawn(internal::RunSyncBody(std::move(task), &result, &error));
    loop.Run();
    if (error) std::rethrow_exception(error);
    return std::move(*result);
  }
}

}  // namespace reqctx

#endif  // REQCTX_ASYNC_TASK_H_
