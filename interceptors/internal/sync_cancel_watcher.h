// SyncCancelWatcher: notices client cancellation of synchronous-API calls
// (internal to //interceptors).
//
// Why polling: in gRPC 1.51 a sync-API call's close notification is queued on
// a per-call completion queue that nobody drains until the handler returns or
// calls ServerContext::IsCancelled(); there is no push notification (the
// callback API has one, POST_RECV_CLOSE, and does not need this). So one
// shared thread calls IsCancelled() on every watched call every kPollInterval;
// a cancel therefore reaches a sync handler's Context within one interval.
// The thread sleeps on a condition variable while nothing is watched.
//
// Lifetime: a leaked singleton; its thread starts with the first Watch() and
// is stopped and joined at process exit (atexit). Calls are dropped from the
// list as soon as ServerCall::PollCancelled() says they need no more polling.
//
// Thread-safety: Watch() may be called from any thread.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_SYNC_CANCEL_WATCHER_H_
#define REQCTX_INTERCEPTORS_INTERNAL_SYNC_CANCEL_WATCHER_H_

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "interceptors/internal/server_call.h"

namespace reqctx::internal {

inline constexpr absl::Duration kPollInterval = absl::Milliseconds(5);

class SyncCancelWatcher {
 public:
  static SyncCancelWatcher& Get();

  void Watch(std::shared_ptr<ServerCall> call);
  size_t WatchedCount();

 private:
  SyncCancelWatcher() = default;
  void Run();
  void Shutdown();

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<ServerCall>> calls_;  // Guarded by mu_.
  std::thread thread_;                              // Guarded by mu_.
  bool started_ = false;                            // Guarded by mu_.
  bool stopping_ = false;                           // Guarded by mu_.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_SYNC_CANCEL_WATCHER_H_
