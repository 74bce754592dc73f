// SmallMutex: a 4-byte blocking mutex for the per-context lock.
//
// Why not std::mutex: it is 40 bytes, and every cancelable context carries a
// lock; the memory target (at most 96 bytes per WithCancel child) leaves no
// room for it. This is the classic three-state futex mutex (0 unlocked,
// 1 locked, 2 locked with waiters) built on C++20 std::atomic::wait/notify,
// which use the futex directly. ThreadSanitizer sees the acquire/release on
// the atomic, so lock-protected data is checked as usual.
//
// Thread-safety: that of a mutex. Not recursive. Satisfies Lockable, so it
// works with std::lock_guard / std::unique_lock.
#ifndef REQCTX_CONTEXT_INTERNAL_SMALL_MUTEX_H_
#define REQCTX_CONTEXT_INTERNAL_SMALL_MUTEX_H_

#include <atomic>
#include <cstdint>

namespace reqctx::internal {

class SmallMutex {
 public:
  SmallMutex() = default;
  SmallMutex(const SmallMutex&) = delete;
  SmallMutex& operator=(const SmallMutex&) = delete;

  void lock() {
    uint32_t expected = kUnlocked;
    if (state_.compare_exchange_strong(expected, kLocked,
                                       std::memory_order_acquire)) {
      return;  // Uncontended: one CAS.
    }
    // Contended: mark "locked with waiters" and sleep until unlocked.
    if (expected != kContended) {
      expected = state_.exchange(kContended, std::memory_order_acquire);
    }
    while (expected != kUnlocked) {
      state_.wait(kContended, std::memory_order_relaxed);
      expected = state_.exchange(kContended, std::memory_order_acquire);
    }
  }

  bool try_lock() {
    uint32_t expected = kUnlocked;
    return state_.compare_exchange_strong(expected, kLocked,
                                          std::memory_order_acquire);
  }

  // True if nobody held the lock at the moment of the read. If true, all
  // that earlier holders did under the lock happens-before the caller's next
  // reads (acquire). A snapshot, for fast paths that lock when it is false.
  bool IsUnlocked() const {
    return state_.load(std::memory_order_acquire) == kUnlocked;
  }

  void unlock() {
    if (state_.exchange(kUnlocked, std::memory_order_release) == kContended) {
      state_.notify_one();
    }
  }

 private:
  static constexpr uint32_t kUnlocked = 0;
  static constexpr uint32_t kLocked = 1;
  static constexpr uint32_t kContended = 2;
  std::atomic<uint32_t> state_{kUnlocked};
};

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_SMALL_MUTEX_H_
