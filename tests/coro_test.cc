// //async:coro: Task, Loop, Sleep, Done, WhenAll. Every wait is bounded; a
// task "suspended" below is one a RunFor left unfinished, so the cancel
// really arrives while it is suspended.
#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "async/coro.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

constexpr int kScale =
    reqctx::testing::PlainOrSanitized(1, 10);  // Same properties, smaller sizes.

// No test waits longer than this for anything (generous for TSan).
constexpr absl::Duration kBound = absl::Seconds(20);
// Long enough that only a cancel can end it inside kBound.
constexpr absl::Duration kForever = absl::Hours(1);

// Sets *flag when destroyed: shows a coroutine frame was destroyed.
struct DestroyFlag {
  std::atomic<bool>* flag;
  ~DestroyFlag() { flag->store(true); }
};

Task<absl::Status> SleepTask(Context ctx, absl::Duration d) {
  co_return co_await Sleep(ctx, d);
}

TEST(CoroSleep, RunsTheFullDurationOnALiveContext) {
  auto [ctx, cancel] = WithCancel(Background());
  absl::Time start = absl::Now();
  EXPECT_TRUE(RunSync(SleepTask(ctx, absl::Milliseconds(30))).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(30));
}

TEST(CoroSleep, EndsWithTheContextsDeadline) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(20));
  absl::Time start = absl::Now();
  absl::Status s = RunSync(SleepTask(ctx, kForever));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, kBound);
}

TEST(CoroSleep, DoneContextOrNonPositiveDurationDoesNotSuspend) {
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  EXPECT_EQ(RunSync(SleepTask(ctx, kForever)).code(),
            absl::StatusCode::kCancelled);
  EXPECT_TRUE(RunSync(SleepTask(Background(), absl::ZeroDuration())).ok());
  EXPECT_TRUE(RunSync(SleepTask(Background(), -absl::Seconds(1))).ok());
}

TEST(CoroSleep, CancelFromAnotherThreadWhileSuspended) {
  auto [ctx, cancel] = WithCancel(Background());
  Loop loop;
  absl::Status result = absl::UnknownError("not run");
  std::thread::id resumed_on;
  loop.Spawn([](Context c, absl::Status* out,
                std::thread::id* where) -> Task<void> {
    *out = co_await Sleep(c, kForever);
    *where = std::this_thread::get_id();
  }(ctx, &result, &resumed_on));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(20)));  // Suspended now.
  std::thread canceler([c = cancel] { c(); });
  EXPECT_TRUE(loop.RunFor(kBound));
  canceler.join();
  EXPECT_EQ(result.code(), absl::StatusCode::kCancelled);
  // Resumed on the loop's thread, not the canceler's or an AfterFunc's.
  EXPECT_EQ(resumed_on, std::this_thread::get_id());
}

TEST(CoroDone, WaitsForCancelAndYieldsErr) {
  auto [ctx, cancel] = WithCancelCause(Background());
  Loop loop;
  absl::Status result;
  loop.Spawn([](Context c, absl::Status* out) -> Task<void> {
    *out = co_await Done(c);
  }(ctx, &result));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(10)));
  cancel(absl::AbortedError("why"));
  EXPECT_TRUE(loop.RunFor(kBound));
  EXPECT_EQ(result.code(), absl::StatusCode::kCancelled);  // Err, not Cause.
}

TEST(CoroDone, TimeoutYieldsFalseOnALiveContextTrueOnADoneOne) {
  auto [ctx, cancel] = WithCancel(Background());
  auto wait = [](Context c, absl::Duration t) -> Task<bool> {
    co_return co_await Done(c, t);
  };
  absl::Time start = absl::Now();
  EXPECT_FALSE(RunSync(wait(ctx, absl::Milliseconds(20))));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  EXPECT_FALSE(RunSync(wait(Background(), absl::ZeroDuration())));

  Loop loop;
  bool done = false;
  loop.Spawn([](Context c, bool* out) -> Task<void> {
    *out = co_await Done(c, kForever);
  }(ctx, &done));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(10)));
  cancel();
  EXPECT_TRUE(loop.RunFor(kBound));
  EXPECT_TRUE(done);
  EXPECT_TRUE(RunSync(wait(ctx, kForever)));  // Already done: at once.
}

TEST(CoroTask, NestedTasksReturnValuesAndPropagateExceptions) {
  auto inner = [](int x) -> Task<int> { co_return x * 2; };
  auto outer = [](decltype(inner) f) -> Task<int> {
    int a = co_await f(1);
    int b = co_await f(20);
    co_return a + b;
  };
  EXPECT_EQ(RunSync(outer(inner)), 42);
  auto thrower = []() -> Task<int> {
    throw std::runtime_error("boom");
    co_return 0;
  };
  EXPECT_THROW(RunSync(thrower()), std::runtime_error);
}

TEST(CoroTask, DestroyingASuspendedTaskDestroysItsFrameAndNothingResumesIt) {
  auto [ctx, cancel] = WithCancel(Background());
  std::atomic<bool> destroyed{false};
  std::atomic<bool> resumed{false};
  {
    Loop loop;
    loop.Spawn([](Context c, std::atomic<bool>* d,
                  std::atomic<bool>* r) -> Task<void> {
      DestroyFlag flag{d};
      (void)co_await Sleep(c, kForever);
      r->store(true);
    }(ctx, &destroyed, &resumed));
    EXPECT_FALSE(loop.RunFor(absl::Milliseconds(10)));
    EXPECT_EQ(loop.pending(), 1u);
    EXPECT_FALSE(destroyed.load());
  }  // ~Loop destroys the suspended task.
  EXPECT_TRUE(destroyed.load());
  cancel();  // Its AfterFunc is gone: nothing runs, nothing is resumed.
  EXPECT_FALSE(resumed.load());

  // A task never started only owns its frame.
  std::atomic<bool> unstarted{false};
  {
    Task<void> t = [](std::atomic<bool>* d) -> Task<void> {
      DestroyFlag flag{d};
      co_return;
    }(&unstarted);
  }
  EXPECT_FALSE(unstarted.load());  // The body (and its local) never ran...
}

// The cancel races with the destruction of the suspended tasks: whichever
// wins, no frame is resumed after it is destroyed (ASan) and no data race
// (TSan).
TEST(CoroTask, CancelRacingDestructionOfSuspendedTasks) {
  const int rounds = 200 / kScale;
  for (int round = 0; round < rounds; ++round) {
    auto [ctx, cancel] = WithCancel(Background());
    std::atomic<int> finished{0};
    std::thread canceler;
    {
      Loop loop;
      for (int i = 0; i < 8; ++i) {
        loop.Spawn([](Context c, std::atomic<int>* f) -> Task<void> {
          (void)co_await Sleep(c, kForever);
          f->fetch_add(1);
        }(ctx, &finished));
      }
      EXPECT_FALSE(loop.RunFor(absl::Milliseconds(1)));
      canceler = std::thread([c = cancel] { c(); });
      if (round % 2 == 0) loop.RunFor(absl::Microseconds(200));
    }
    canceler.join();
    EXPECT_LE(finished.load(), 8);
  }
}

TEST(CoroWhenAll, RunsConcurrentlyAndKeepsOrder) {
  auto [ctx, cancel] = WithCancel(Background());
  auto job = [](Context c, int i, absl::Duration d) -> Task<int> {
    absl::Status s = co_await Sleep(c, d);
    co_return s.ok() ? i : -1;
  };
  auto all = [](decltype(job) j, Context c) -> Task<std::vector<int>> {
    std::vector<Task<int>> tasks;
    // Reverse durations: completion order differs from index order.
    for (int i = 0; i < 5; ++i) {
      tasks.push_back(j(c, i, absl::Milliseconds(50 - 10 * i)));
    }
    co_return co_await WhenAll(std::move(tasks));
  };
  absl::Time start = absl::Now();
  EXPECT_EQ(RunSync(all(job, ctx)), (std::vector<int>{0, 1, 2, 3, 4}));
  // Concurrent: about the longest sleep, not the sum (150 ms).
  absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(50));
  if (kScale == 1) {
    EXPECT_LT(took, absl::Milliseconds(140));
  }

  auto none = []() -> Task<std::vector<int>> {
    co_return co_await WhenAll(std::vector<Task<int>>{});
  };
  EXPECT_TRUE(RunSync(none()).empty());
}

TEST(CoroWhenAll, CancelEndsTheWholeGroupAtOnce) {
  auto [ctx, cancel] = WithCancel(Background());
  auto [group, cancel_group] = WithCancel(ctx);
  Loop loop;
  std::vector<absl::Status> results;
  loop.Spawn([](Context c, std::vector<absl::Status>* out) -> Task<void> {
    std::vector<Task<absl::Status>> tasks;
    for (int i = 0; i < 10; ++i) tasks.push_back(SleepTask(c, kForever));
    *out = co_await WhenAll(std::move(tasks));
  }(group, &results));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(10)));
  absl::Time start = absl::Now();
  cancel_group();
  EXPECT_TRUE(loop.RunFor(kBound));
  EXPECT_LT(absl::Now() - start, kBound);
  ASSERT_EQ(results.size(), 10u);
  for (const absl::Status& s : results) {
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  }
  EXPECT_TRUE(ctx.Err().ok());  // The parent is untouched.
}

TEST(CoroWhenAll, DestroyingItDestroysTheSuspendedChildren) {
  auto [ctx, cancel] = WithCancel(Background());
  std::atomic<bool> destroyed[3] = {false, false, false};
  {
    Loop loop;
    loop.Spawn([](Context c, std::atomic<bool>* d) -> Task<void> {
      auto child = [](Context cc, std::atomic<bool>* flag) -> Task<int> {
        DestroyFlag f{flag};
        (void)co_await Sleep(cc, kForever);
        co_return 1;
      };
      std::vector<Task<int>> tasks;
      for (int i = 0; i < 3; ++i) tasks.push_back(child(c, &d[i]));
      (void)co_await WhenAll(std::move(tasks));
    }(ctx, destroyed));
    EXPECT_FALSE(loop.RunFor(absl::Milliseconds(10)));
  }
  for (auto& d : destroyed) EXPECT_TRUE(d.load());
  cancel();
}

TEST(CoroWhenAll, RethrowsTheFirstExceptionAfterAllFinish) {
  auto job = [](int i) -> Task<int> {
    if (i == 1) throw std::runtime_error("one");
    co_return i;
  };
  auto all = [](decltype(job) j) -> Task<std::vector<int>> {
    std::vector<Task<int>> tasks;
    for (int i = 0; i < 3; ++i) tasks.push_back(j(i));
    co_return co_await WhenAll(std::move(tasks));
  };
  EXPECT_THROW(RunSync(all(job)), std::runtime_error);
}

TEST(CoroLoop, PostFromOtherThreadsRunsOnTheLoopInOrder) {
  auto [ctx, cancel] = WithCancel(Background());
  Loop loop;
  // The loop runs while a task is pending: this one waits for the last post.
  loop.Spawn([](Context c) -> Task<void> { (void)co_await Done(c); }(ctx));
  std::vector<int> order;  // Touched on the loop's thread only.
  std::thread::id ran_on;
  std::thread poster([&loop, &order, &ran_on, c = cancel] {
    for (int i = 0; i < 3; ++i) {
      loop.Post([i, &order, &ran_on] {
        order.push_back(i);
        ran_on = std::this_thread::get_id();
      });
    }
    loop.Post([c] { c(); });
  });
  EXPECT_TRUE(loop.RunFor(kBound));
  poster.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  loop.Spawn(Task<void>());  // An empty task is ignored.
  EXPECT_EQ(loop.pending(), 0u);
}

TEST(CoroLoop, PostAfterTheLoopIsGoneIsDropped) {
  std::shared_ptr<internal::LoopQueue> ref;
  {
    Loop loop;
    ref = loop.ref();
  }
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> weak = token;
  EXPECT_FALSE(ref->Post([t = std::move(token)] { ++*t; }));
  EXPECT_TRUE(weak.expired());  // Dropped, not run, not leaked.
}

TEST(CoroDone, NeverDoneContextWaitsUntilTheTaskIsDestroyed) {
  std::atomic<bool> destroyed{false};
  {
    Loop loop;
    loop.Spawn([](std::atomic<bool>* d) -> Task<void> {
      DestroyFlag flag{d};
      (void)co_await Done(Background());
      ADD_FAILURE() << "Background() is never done";
    }(&destroyed));
    EXPECT_FALSE(loop.RunFor(absl::Milliseconds(20)));
  }
  EXPECT_TRUE(destroyed.load());
}

TEST(CoroTaskDeathTest, AwaitingAnEmptyTaskAbortsWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // Timer threads exist.
  auto await_empty = []() -> Task<void> { co_await Task<void>(); };
  EXPECT_DEATH(RunSync(await_empty()), "co_await on an empty reqctx::Task");
}

// Many tasks, a deadline and a cancel racing their sleeps: every task ends
// with OK, its deadline or the cancel, and the loop drains.
TEST(CoroStress, ManyTasksRacingCancelAndDeadlines) {
  const int n = 2000 / kScale;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(40));
  Loop loop;
  std::atomic<int> ok{0}, canceled{0}, expired{0};
  for (int i = 0; i < n; ++i) {
    loop.Spawn([](Context c, absl::Duration d, std::atomic<int>* o,
                  std::atomic<int>* cn, std::atomic<int>* e) -> Task<void> {
      absl::Status s = co_await Sleep(c, d);
      if (s.ok()) o->fetch_add(1);
      else if (s.code() == absl::StatusCode::kCancelled) cn->fetch_add(1);
      else if (s.code() == absl::StatusCode::kDeadlineExceeded) e->fetch_add(1);
    }(ctx, absl::Milliseconds(i % 60), &ok, &canceled, &expired));
  }
  std::thread canceler([c = cancel] {
    absl::SleepFor(absl::Milliseconds(20));  // Load, not synchronization.
    c();
  });
  EXPECT_TRUE(loop.RunFor(kBound));
  canceler.join();
  EXPECT_EQ(ok.load() + canceled.load() + expired.load(), n);
  EXPECT_GT(ok.load(), 0);  // The zero-length sleeps at least.
}

}  // namespace
}  // namespace reqctx
