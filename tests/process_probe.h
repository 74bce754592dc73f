// Test helper: what this process holds (threads, resident memory), a
// loopback port nobody listens on, and a bounded wait for a condition that
// has no event to wait on (debug counters, /proc values). Shared by the leak,
// fault and soak tests.
//
// Thread-safety: every function is safe from any thread.
#ifndef REQCTX_TESTS_PROCESS_PROBE_H_
#define REQCTX_TESTS_PROCESS_PROBE_H_

#include <cstdint>
#include <functional>

#include "absl/time/time.h"

namespace reqctx::testing {

// Threads of this process ("Threads:" in /proc/self/status); -1 if unknown.
int ThreadCount();
// Threads of process `pid` (/proc/PID/status); -1 if unknown (or gone).
int ThreadCountOf(int pid);
// Resident set size of this process in bytes (/proc/self/statm); -1 if
// unknown.
int64_t ResidentBytes();
// A 127.0.0.1 port that was free a moment ago: bound (port 0) and closed
// again. Nothing in this process listens on it; connecting is refused
// unless another process takes it meanwhile (unlikely: the kernel hands out
// ephemeral ports in sequence).
int UnusedLoopbackPort();
// The calling thread's kernel id (gettid).
int CurrentThreadId();
// Waits until thread `tid` of this process is asleep in the kernel (state S
// or D in /proc/self/task/TID/stat), e.g. blocked in a join or a condition
// wait; false if that did not happen within `bound`. Lets a test release a
// gate only once another thread is known to wait on it.
bool WaitUntilThreadBlocked(int tid, absl::Duration bound = absl::Seconds(20));
// Polls `done` every millisecond until it returns true or `bound` passes;
// returns the last result. Only for conditions with no change event.
bool Eventually(const std::function<bool()>& done,
                absl::Duration bound = absl::Seconds(20));

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_PROCESS_PROBE_H_
