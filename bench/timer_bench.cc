// timer_bench: how accurately and cheaply the shared timer service fires
// deadlines at scale. Prints measurements; asserts nothing (the properties
// are tested in tests/timer_scale_test.cc).
//
//   1. Accuracy: N contexts with deadlines spread evenly over one second.
//      A thread walks them in deadline order and waits for each; lateness is
//      (time its wait returned) - deadline, an upper bound on the timer's own
//      lateness (it includes the waiter's wake-up).
//   2. Scale: M live contexts with deadlines: heap bytes per context (glibc
//      mallinfo2), resident memory per context, creation cost, then all fire
//      or are canceled and the queue returns to empty.
//   3. AfterFunc burst: K AfterFuncs that each block 20 ms on one parent,
//      canceled at once: how long cancel() takes (per 1,000 listeners; no
//      thread is started under the lock), how long until all ran, and the
//      executor's peak thread count against its caps.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/debug.h"

ABSL_FLAG(int, accuracy_contexts, 10'000, "contexts in the accuracy run");
ABSL_FLAG(int, scale_contexts, 1'000'000, "contexts in the scale run");
ABSL_FLAG(int, afterfunc_burst, 10'000, "blocking AfterFuncs in the burst run");

namespace {

using Pair = std::pair<reqctx::Context, reqctx::CancelFunc>;

size_t HeapInUse() { return mallinfo2().uordblks; }

size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * 4096;
}

absl::Duration Percentile(std::vector<absl::Duration>& v, double p) {
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

void Accuracy(int n) {
  const absl::Time start = absl::Now() + absl::Milliseconds(100);
  std::vector<Pair> contexts;
  contexts.reserve(n);
  for (int i = 0; i < n; ++i) {
    contexts.push_back(reqctx::WithDeadline(reqctx::Background(),
                                            start + absl::Seconds(1) * i / n));
  }
  std::vector<absl::Duration> lateness;
  lateness.reserve(n);
  int early = 0;
  for (auto& [ctx, cancel] : contexts) {
    const absl::Time deadline = *ctx.Deadline();
    if (!ctx.Done().WaitFor(absl::Seconds(30))) continue;
    absl::Duration late = absl::Now() - deadline;
    if (late < absl::ZeroDuration()) ++early;
    lateness.push_back(late);
  }
  absl::PrintF("accuracy: %d deadlines over 1 s, %d fired, %d early\n", n,
               static_cast<int>(lateness.size()), early);
  absl::PrintF("| lateness | p50 | p90 | p99 | max |\n|---|---|---|---|---|\n");
  absl::Duration max = *std::max_element(lateness.begin(), lateness.end());
  absl::PrintF("| timer fire -> waiter awake | %s | %s | %s | %s |\n",
               absl::FormatDuration(Percentile(lateness, 0.50)),
               absl::FormatDuration(Percentile(lateness, 0.90)),
               absl::FormatDuration(Percentile(lateness, 0.99)),
               absl::FormatDuration(max));
}

void Scale(int m) {
  std::vector<Pair> contexts;
  contexts.reserve(m);  // Reserved before measuring: not the library's cost.
  const size_t heap_before = HeapInUse();
  const size_t rss_before = ResidentBytes();
  const absl::Time start = absl::Now();
  for (int i = 0; i < m; ++i) {
    contexts.push_back(reqctx::WithDeadline(
        reqctx::Background(),
        start + absl::Seconds(3) + absl::Microseconds((i * 7919LL) % 1'000'000)));
  }
  const absl::Duration create = absl::Now() - start;
  const size_t heap_after = HeapInUse();
  const size_t rss_after = ResidentBytes();
  const size_t queued = reqctx::debug::PendingTimerCount();
  for (int i = 0; i < m; i += 2) contexts[i].second();
  int ended = 0;
  for (auto& [ctx, cancel] : contexts) {
    if (ctx.Done().WaitFor(absl::Seconds(60))) ++ended;
  }
  absl::PrintF("scale: %d live contexts with deadlines (%d queued at peak)\n",
               m, static_cast<int>(queued));
  absl::PrintF("| per context | heap bytes | resident bytes | create |\n"
               "|---|---|---|---|\n");
  absl::PrintF("| WithDeadline | %.1f | %.1f | %s |\n",
               static_cast<double>(heap_after - heap_before) / m,
               static_cast<double>(rss_after - rss_before) / m,
               absl::FormatDuration(create / m));
  absl::PrintF("ended: %d of %d (half canceled, half fired); queue now %d\n",
               ended, m, static_cast<int>(reqctx::debug::PendingTimerCount()));
}

void AfterFuncBurst(int k) {
  auto [parent, cancel] = reqctx::WithCancel(reqctx::Background());
  std::atomic<int> ran{0};
  std::vector<reqctx::AfterFuncHandle> handles;
  handles.reserve(k);
  for (int i = 0; i < k; ++i) {
    handles.push_back(reqctx::AfterFunc(parent, [&ran] {
      absl::SleepFor(absl::Milliseconds(20));
      ran.fetch_add(1, std::memory_order_relaxed);
    }));
  }
  const absl::Time t0 = absl::Now();
  cancel();
  const absl::Duration cancel_took = absl::Now() - t0;
  while (ran.load() < k && absl::Now() - t0 < absl::Seconds(600)) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  const absl::Duration all_ran = absl::Now() - t0;
  absl::PrintF("afterfunc burst: %d AfterFuncs blocking 20 ms each on one "
               "canceled parent\n", k);
  absl::PrintF("| cancel() | per 1,000 listeners | all ran after | peak "
               "threads | soft cap | hard cap |\n|---|---|---|---|---|---|\n");
  absl::PrintF("| %s | %s | %s | %d | %d | %d |\n",
               absl::FormatDuration(cancel_took),
               absl::FormatDuration(cancel_took * 1000 / k),
               absl::FormatDuration(all_ran),
               static_cast<int>(reqctx::debug::AfterFuncPeakThreadCount()),
               static_cast<int>(reqctx::debug::AfterFuncSoftThreadCap()),
               static_cast<int>(reqctx::debug::AfterFuncHardThreadCap()));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Accuracy(absl::GetFlag(FLAGS_accuracy_contexts));
  Scale(absl::GetFlag(FLAGS_scale_contexts));
  AfterFuncBurst(absl::GetFlag(FLAGS_afterfunc_burst));
  return 0;
}
