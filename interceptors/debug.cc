#include "interceptors/debug.h"

#include "interceptors/internal/client_binding_registry.h"
#include "interceptors/internal/server_call_registry.h"
#include "interceptors/internal/sync_cancel_watcher.h"

namespace reqctx::debug {

size_t LiveServerCallCount() {
  return internal::ServerCallRegistry::Get().Size();
}

size_t WatchedServerCallCount() {
  return internal::SyncCancelWatcher::Get().WatchedCount();
}

size_t PendingClientBindingCount() {
  return internal::ClientBindingRegistry::Get().Size();
}

}  // namespace reqctx::debug
