// SyncCancelWatcher: notices client cancellation and server shutdown of
// synchronous-API calls (internal to //interceptors).
//
// Why polling: in gRPC 1.51 a sync-API call's close notification is queued on
// a per-call completion queue that nobody drains until the handler returns or
// calls ServerContext::IsCancelled(); there is no push notification (the
// callback API has one, POST_RECV_CLOSE, and so does the async API when its
// completion queue delivers the close; neither needs this). So one shared
// thread calls IsCancelled() (documented as thread-safe and always safe on
// the sync API) on every watched call every kPollInterval, from the second
// pass that finds the call on (ServerCall::PollCancelled: calls shorter than
// one interval, most unary calls, are never polled); a cancel therefore
// reaches a sync handler's Context within one interval plus one pass, or
// two intervals for a call younger than one. The thread sleeps on a
// condition variable while nothing is watched; only then does a Watch()
// wake it (between passes it sees new calls at its next pass).
//
// Cost: the calls are split over kPointerShards shards by address, each a
// vector under its own std::mutex. Watch() locks one shard (no lock shared
// by every call); a pass skips the shards it sees empty without locking them
// (an idle pass costs a few loads: the thread wakes every kPollInterval while
// any call is watched, whatever the call rate), and takes each other
// shard's vector out of its lock, polls it, compacts the survivors in place (linear in the calls
// polled) and appends them back, so a pass is O(watched calls) and no
// shard's lock is held while gRPC is called. //bench:watcher_bench measures
// the watcher's own cost at 10,000 watched calls (~12 ns per call per pass)
// and gRPC's IsCancelled() on live sync calls, which dominates (~19 us of
// CPU per call: it polls the call's completion queue). So a pass over
// 10,000 in-flight sync calls costs ~0.2 s of CPU; the thread sleeps at
// least as long as its last pass took (at most half a core), and the cancel
// latency grows to about two passes at that scale.
//
// Lifetime: Get() is a leaked singleton; its thread starts with the first
// Watch() and is stopped and joined at process exit (atexit). Calls are
// dropped from the lists at the first pass after ServerCall::PollCancelled()
// says they need no more polling.
//
// Thread-safety: Watch() and WatchedCount() may be called from any thread.
// PollOnce() is called by one thread at a time (the watcher's own thread, or
// the owner of a NewForTesting() instance).
#ifndef REQCTX_INTERCEPTORS_INTERNAL_SYNC_CANCEL_WATCHER_H_
#define REQCTX_INTERCEPTORS_INTERNAL_SYNC_CANCEL_WATCHER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "interceptors/internal/pointer_shard.h"
#include "interceptors/internal/server_call.h"

namespace reqctx::internal {

inline constexpr absl::Duration kPollInterval = absl::Milliseconds(5);

class SyncCancelWatcher {
 public:
  // The process-wide watcher, with its polling thread.
  static SyncCancelWatcher& Get();
  // A watcher without a thread, polled only by PollOnce() (benchmarks and
  // tests).
  static std::unique_ptr<SyncCancelWatcher> NewForTesting();
  ~SyncCancelWatcher();
  SyncCancelWatcher(const SyncCancelWatcher&) = delete;
  SyncCancelWatcher& operator=(const SyncCancelWatcher&) = delete;

  // Polls `call` every kPollInterval until its PollCancelled() returns false.
  void Watch(std::shared_ptr<ServerCall> call);
  // Calls in the lists (those that finished since the last pass included).
  size_t WatchedCount() const;
  // One pass over every watched call; drops those that need no more
  // polling. Returns how many remain watched.
  size_t PollOnce();

 private:
  struct alignas(64) Shard {  // One cache line each: no false sharing.
    std::mutex mu;
    std::vector<std::shared_ptr<ServerCall>> calls;  // Guarded by mu.
    // calls.size(), written under mu, read without it by a pass: a shard
    // seen empty is skipped without its lock (a call watched meanwhile is
    // found by the next pass, as it would be if it came after this one).
    std::atomic<size_t> size{0};
  };

  explicit SyncCancelWatcher(bool with_thread);
  void StartThread();
  void Run();
  void Shutdown();

  const bool with_thread_;
  Shard shards_[kPointerShards];
  std::atomic<size_t> watched_{0};
  // Only the polling thread touches it (reused between passes).
  std::vector<std::shared_ptr<ServerCall>> polling_;

  std::once_flag start_once_;
  std::mutex wake_mu_;  // Only taken when the lists go from empty to not.
  std::condition_variable wake_;
  bool stopping_ = false;  // Guarded by wake_mu_.
  // The thread waits for calls (not between passes): only then does a
  // Watch() notify it. Guarded by wake_mu_.
  bool idle_ = false;
  std::thread thread_;     // Guarded by wake_mu_. Set once; joined at exit.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_SYNC_CANCEL_WATCHER_H_
