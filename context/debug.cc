#include "context/debug.h"

#include "context/internal/context_access.h"
#include "context/internal/executor.h"
#include "context/internal/timer_service.h"

namespace reqctx::debug {

size_t ListenerCount(const Context& ctx) {
  internal::CancelNode* c = ContextAccess::CancelLayer(ctx);
  return c == nullptr ? 0 : c->ListenerCountForTesting();
}

size_t PendingTimerCount() {
  return internal::TimerService::Get().PendingCount();
}

size_t AfterFuncThreadCount() { return internal::Executor::Get().ThreadCount(); }

}  // namespace reqctx::debug
