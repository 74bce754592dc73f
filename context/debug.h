// Introspection for tests, benchmarks and leak checks. Not for control flow.
//
// Thread-safety: safe from any thread; each result is a snapshot that may be
// stale by the time it is read.
#ifndef REQCTX_CONTEXT_DEBUG_H_
#define REQCTX_CONTEXT_DEBUG_H_

#include <cstddef>

#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx::debug {

// Listeners linked to ctx's nearest cancelable layer: live children, waiters
// and pending AfterFuncs. 0 for a context that can never be done.
size_t ListenerCount(const Context& ctx);
// Whether ctx's nearest cancelable layer registers its listeners per CPU
// (it does once its lock was found contended by a registering child).
bool ListenersArePerCpu(const Context& ctx);
// Testing hook: makes ctx's nearest cancelable layer register per CPU now.
void MakeListenersPerCpuForTesting(const Context& ctx);
// Deadlines queued in the shared timer service.
size_t PendingTimerCount();
// Threads the AfterFunc executor currently owns (busy or idle).
size_t AfterFuncThreadCount();
// The most AfterFunc executor threads alive at once since the process began.
size_t AfterFuncPeakThreadCount();
// The executor's caps: threads started at once while fewer than the soft cap
// exist; beyond it only when every worker is blocked; never more than the
// hard cap.
size_t AfterFuncSoftThreadCap();
size_t AfterFuncHardThreadCap();
// How many times creating a deadline woke a timer thread (it wakes one only
// for a deadline due before that thread would wake anyway).
size_t TimerThreadWakeups();
// Bytes the timer service's heaps hold reserved (capacity, not entries).
size_t TimerHeapReservedBytes();
// Testing hook: the next `n` thread starts of the core (AfterFunc executor,
// Group tasks, timer shards) fail as on a system out of threads.
void FailThreadStartsForTesting(int n);
// Testing hook: the core reads the wall clock as absl::Now() + `offset`, as
// if the system clock had been stepped by `offset` (deadlines fire by the
// monotonic clock and must not move). Zero restores the real clock.
void SetWallClockOffsetForTesting(absl::Duration offset);

}  // namespace reqctx::debug

#endif  // REQCTX_CONTEXT_DEBUG_H_
