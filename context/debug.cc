#include "context/debug.h"

#include "context/internal/context_access.h"
#include "context/internal/executor.h"
#include "context/internal/thread_start.h"
#include "context/internal/timer_service.h"

namespace reqctx::debug {

size_t ListenerCount(const Context& ctx) {
  internal::CancelNode* c = ContextAccess::CancelLayer(ctx);
  return c == nullptr ? 0 : c->ListenerCountForTesting();
}

bool ListenersArePerCpu(const Context& ctx) {
  internal::CancelNode* c = ContextAccess::CancelLayer(ctx);
  return c != nullptr && c->IsShardedForTesting();
}

void MakeListenersPerCpuForTesting(const Context& ctx) {
  internal::CancelNode* c = ContextAccess::CancelLayer(ctx);
  if (c != nullptr) c->ShardForTesting();
}

size_t PendingTimerCount() {
  return internal::TimerService::Get().PendingCount();
}

size_t AfterFuncThreadCount() { return internal::Executor::Get().ThreadCount(); }

size_t AfterFuncPeakThreadCount() {
  return internal::Executor::Get().PeakThreadCount();
}

size_t AfterFuncSoftThreadCap() { return internal::Executor::SoftCap(); }
size_t AfterFuncHardThreadCap() { return internal::Executor::HardCap(); }

size_t TimerThreadWakeups() {
  return internal::TimerService::Get().WakeupsForTesting();
}

size_t TimerHeapReservedBytes() {
  return internal::TimerService::Get().ReservedBytesForTesting();
}

void FailThreadStartsForTesting(int n) {
  internal::FailThreadStartsForTesting(n);
}

void SetWallClockOffsetForTesting(absl::Duration offset) {
  internal::SetWallClockOffsetForTesting(offset);
}

}  // namespace reqctx::debug
