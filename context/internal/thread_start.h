// StartThread: how the core starts every thread it owns (executor workers
// and supervisor, Group tasks, timer shards), so that a test can make thread
// creation fail the way an exhausted system does.
//
// Thread-safety: thread-safe.
#ifndef REQCTX_CONTEXT_INTERNAL_THREAD_START_H_
#define REQCTX_CONTEXT_INTERNAL_THREAD_START_H_

#include <atomic>
#include <cerrno>
#include <system_error>
#include <thread>
#include <utility>

namespace reqctx::internal {

namespace thread_start_internal {
inline std::atomic<int> failures_left{0};
}  // namespace thread_start_internal

// Testing hook: the next `n` calls of StartThread fail as the system does
// when it is out of threads (std::system_error with EAGAIN).
inline void FailThreadStartsForTesting(int n) {
  thread_start_internal::failures_left.store(n, std::memory_order_relaxed);
}

// std::thread(f): throws std::system_error when the thread cannot be started
// (or the testing hook says so), std::bad_alloc when memory is short.
template <typename F>
std::thread StartThread(F&& f) {
  auto& left = thread_start_internal::failures_left;
  for (int n = left.load(std::memory_order_relaxed); n > 0;) {
    if (left.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
      throw std::system_error(EAGAIN, std::generic_category(),
                              "reqctx: thread start refused (testing hook)");
    }
  }
  return std::thread(std::forward<F>(f));
}

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_THREAD_START_H_
