// AfterFunc: runs once after done, on another thread, never blocking the
// canceler; Stop() semantics; the handle's destructor waits for a running f.
#include <atomic>
#include <condition_variable>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/debug.h"
#include "gtest/gtest.h"
#include "tests/process_probe.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

constexpr absl::Duration kLongWait = absl::Seconds(10);

// A one-shot event with a bounded wait.
class Event {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    fired_ = true;
    cv_.notify_all();
  }
  bool WaitFor(absl::Duration d) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(d),
                        [this] { return fired_; });
  }
  bool HasFired() {
    std::lock_guard<std::mutex> lock(mu_);
    return fired_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool fired_ = false;
};

// After canceling `ctx`: a stopped f was unlinked, so the cancel had nothing
// to schedule for it. Gives a would-be runner every chance (an AfterFunc
// registered afterwards has run) before checking that `ran` stayed false.
void ExpectDidNotRun(const Context& ctx, const std::atomic<bool>& ran) {
  Event probe;
  AfterFuncHandle p = AfterFunc(ctx, [&] { probe.Notify(); });
  ASSERT_TRUE(probe.WaitFor(kLongWait));
  EXPECT_FALSE(ran.load());
}

// internal::AfterFuncCore embedded in an owner (as the gRPC client
// interceptor does, one per call): the owner is freed as soon as
// StopAndWait() returns, also when f has just run on the executor and is
// finishing. Run() must touch nothing of the core after it marks f finished
// (ASan: heap-use-after-free otherwise, e.g. a virtual call after the
// unlock). Cancels race the stop at every point: each round either runs f
// once or stops it.
TEST(AfterFuncTest, EmbeddedCoreOwnerFreedRightAfterStopAndWait) {
  struct Owner {
    internal::AfterFuncCore core;
  };
  constexpr int kRounds = testing::PlainOrSanitized(2000, 300);
  std::atomic<int> ran{0};
  int stopped = 0;
  for (int i = 0; i < kRounds; ++i) {
    auto [ctx, cancel] = WithCancel(Background());
    auto owner = std::make_unique<Owner>();
    owner->core.Start(ctx, [&ran] { ran.fetch_add(1); });
    std::thread canceler([cancel = cancel] { cancel(); });
    if (i % 2 == 0) canceler.join();  // Half: f scheduled before the stop.
    if (owner->core.Stop()) ++stopped;
    owner->core.Wait();
    owner.reset();  // Freed at once: f has returned or never runs.
    if (canceler.joinable()) canceler.join();
  }
  EXPECT_EQ(ran.load() + stopped, kRounds);
}

TEST(AfterFuncTest, RunsOnceAfterCancelOnAnotherThread) {
  auto [ctx, cancel] = WithCancel(Background());
  std::atomic<int> runs{0};
  std::thread::id ran_on;
  Event ran;
  AfterFuncHandle h = AfterFunc(ctx, [&] {
    ran_on = std::this_thread::get_id();
    runs.fetch_add(1);
    ran.Notify();
  });
  EXPECT_EQ(debug::ListenerCount(ctx), 1u);
  EXPECT_FALSE(ran.HasFired());
  cancel();
  cancel();
  ASSERT_TRUE(ran.WaitFor(kLongWait));
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_FALSE(h.Stop());  // Already started.
  h = AfterFuncHandle();    // Waits for f to finish; then runs is final.
  EXPECT_EQ(runs.load(), 1);
}

TEST(AfterFuncTest, RunsAtOnceIfAlreadyDoneEvenForATemporaryContext) {
  Event ran;
  AfterFuncHandle h = AfterFunc(WithTimeout(Background(), absl::ZeroDuration()).first,
                                [&] { ran.Notify(); });
  EXPECT_TRUE(ran.WaitFor(kLongWait));
}

TEST(AfterFuncTest, TemporaryContextStillFiresOnDeadline) {
  Event ran;
  AfterFuncHandle h;
  {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(5));
    // `cancel` stays alive through the copy below; ctx is dropped.
    CancelFunc keep = cancel;
    h = AfterFunc(ctx, [&] { ran.Notify(); });
    ASSERT_TRUE(ran.WaitFor(kLongWait));
  }
}

TEST(AfterFuncTest, CancelDoesNotWaitForF) {
  auto [ctx, cancel] = WithCancel(Background());
  Event release;
  Event started;
  AfterFuncHandle h = AfterFunc(ctx, [&] {
    started.Notify();
    release.WaitFor(kLongWait);
  });
  cancel();  // Returns although f is blocked.
  EXPECT_TRUE(ctx.Done().IsDone());
  EXPECT_TRUE(started.WaitFor(kLongWait));
  release.Notify();
}

TEST(AfterFuncTest, BlockingFDoesNotDelayOthers) {
  auto [ctx, cancel] = WithCancel(Background());
  Event release;
  Event blocked_started;
  Event other_ran;
  AfterFuncHandle blocker = AfterFunc(ctx, [&] {
    blocked_started.Notify();
    release.WaitFor(kLongWait);
  });
  AfterFuncHandle other = AfterFunc(ctx, [&] { other_ran.Notify(); });
  cancel();
  ASSERT_TRUE(blocked_started.WaitFor(kLongWait));
  EXPECT_TRUE(other_ran.WaitFor(kLongWait));  // Not stuck behind blocker.
  release.Notify();
}

TEST(AfterFuncTest, StopPreventsRunAndLaterStopsReturnFalse) {
  auto [ctx, cancel] = WithCancel(Background());
  std::atomic<bool> ran{false};
  AfterFuncHandle h = AfterFunc(ctx, [&] { ran = true; });
  EXPECT_TRUE(h.Stop());
  EXPECT_FALSE(h.Stop());
  EXPECT_EQ(debug::ListenerCount(ctx), 0u);
  cancel();
  ExpectDidNotRun(ctx, ran);
}

TEST(AfterFuncTest, NeverDoneContextNeverRunsAndFirstStopIsTrue) {
  std::atomic<bool> ran{false};
  AfterFuncHandle h = AfterFunc(Background(), [&] { ran = true; });
  AfterFuncHandle h2 = AfterFunc(WithoutCancel(TODO()), [&] { ran = true; });
  EXPECT_TRUE(h.Stop());
  EXPECT_FALSE(h.Stop());
  EXPECT_TRUE(h2.Stop());
  EXPECT_FALSE(ran.load());
  AfterFuncHandle empty;
  EXPECT_FALSE(empty.Stop());
}

TEST(AfterFuncTest, DestructorStopsPendingF) {
  auto [ctx, cancel] = WithCancel(Background());
  std::atomic<bool> ran{false};
  { AfterFuncHandle h = AfterFunc(ctx, [&] { ran = true; }); }
  EXPECT_EQ(debug::ListenerCount(ctx), 0u);
  cancel();
  ExpectDidNotRun(ctx, ran);
}

TEST(AfterFuncTest, DestructorWaitsForRunningF) {
  // f is held until the owner is known to be blocked (in the handle's
  // destructor): a destructor that did not wait would return while f is
  // still held, and `finished` would be false.
  auto [ctx, cancel] = WithCancel(Background());
  Event started;
  std::atomic<bool> gate{false};
  std::atomic<bool> finished{false};
  auto h = std::make_unique<AfterFuncHandle>(AfterFunc(ctx, [&] {
    started.Notify();
    while (!gate.load()) std::this_thread::yield();
    finished = true;
  }));
  cancel();
  ASSERT_TRUE(started.WaitFor(kLongWait));
  const int owner = testing::CurrentThreadId();
  std::thread releaser([&] {
    testing::WaitUntilThreadBlocked(owner);
    gate = true;
  });
  h.reset();
  EXPECT_TRUE(finished.load());
  releaser.join();
}

TEST(AfterFuncTest, HandleDestroyedInsideFDoesNotDeadlock) {
  auto [ctx, cancel] = WithCancel(Background());
  Event done;
  auto holder = std::make_shared<std::unique_ptr<AfterFuncHandle>>();
  *holder = std::make_unique<AfterFuncHandle>(AfterFunc(ctx, [holder, &done] {
    holder->reset();  // Destroys our own handle from inside f.
    done.Notify();
  }));
  cancel();
  EXPECT_TRUE(done.WaitFor(kLongWait));
}

TEST(AfterFuncTest, StopRacesWithCancelExactlyOneWins) {
  for (int i = 0; i < 500; ++i) {
    auto [ctx, cancel] = WithCancel(Background());
    std::atomic<int> runs{0};
    AfterFuncHandle h = AfterFunc(ctx, [&] { runs.fetch_add(1); });
    std::latch go(2);
    bool stopped = false;
    std::thread stopper([&] {
      go.arrive_and_wait();
      stopped = h.Stop();
    });
    go.arrive_and_wait();
    cancel();
    stopper.join();
    h = AfterFuncHandle();  // Waits for a running f.
    EXPECT_EQ(runs.load() + (stopped ? 1 : 0), 1) << "iteration " << i;
  }
}

TEST(AfterFuncTest, CancelFuncCalledFromInsideF) {
  auto [ctx, cancel] = WithCancel(Background());
  auto [other, cancel_other] = WithCancel(Background());
  AfterFuncHandle h = AfterFunc(ctx, [cancel_other = cancel_other, cancel = cancel] {
    cancel();        // Own context, already done: no-op.
    cancel_other();  // Another one: fine, no deadlock.
  });
  cancel();
  EXPECT_TRUE(other.Done().WaitFor(kLongWait));
}

TEST(AfterFuncTest, ABurstOfAfterFuncsAllRun) {
  auto [ctx, cancel] = WithCancel(Background());
  constexpr int kFuncs = 200;
  std::atomic<int> runs{0};
  std::vector<AfterFuncHandle> handles;
  for (int i = 0; i < kFuncs; ++i) {
    handles.push_back(AfterFunc(ctx, [&] { runs.fetch_add(1); }));
  }
  cancel();         // A burst may start a worker per callback: none waits.
  handles.clear();  // Each destructor waits for its f.
  EXPECT_EQ(runs.load(), kFuncs);
}

TEST(AfterFuncTest, SequentialAfterFuncsReuseIdleWorkers) {
  // One callback at a time: each finds the previous one's worker idle, so
  // 200 callbacks do not cost 200 threads. (Generous bound: a worker may be
  // between its task and its idle wait when the next one arrives.)
  constexpr int kFuncs = 200;
  const size_t before = debug::AfterFuncThreadCount();
  for (int i = 0; i < kFuncs; ++i) {
    auto [ctx, cancel] = WithCancel(Background());
    Event ran;
    AfterFuncHandle h = AfterFunc(ctx, [&] { ran.Notify(); });
    cancel();
    ASSERT_TRUE(ran.WaitFor(kLongWait));
  }
  EXPECT_LT(debug::AfterFuncThreadCount(), before + kFuncs / 4);
}

}  // namespace
}  // namespace reqctx
