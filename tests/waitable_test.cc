// The waitable Context (DoneFd), Select, Wait(ctx, cv, lock, pred) and the
// std::stop_token bridges (issue 14, part 1).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <latch>
#include <mutex>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

constexpr absl::Duration kBound = absl::Seconds(10);  // Every wait's limit.
inline constexpr Key<int> kKey("k");

constexpr int kScale =
    reqctx::testing::PlainOrSanitized(1, 10);

// poll()s `fd` for readability for at most `timeout`; true if readable.
bool Readable(int fd, absl::Duration timeout) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) ==
             1 &&
         (p.revents & POLLIN) != 0;
}

bool FdOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }

// --- DoneFd ------------------------------------------------------------------

TEST(DoneFdTest, NeverDoneContextsHaveNoDescriptor) {
  for (const Context& c : {Background(), TODO(), WithValue(Background(), kKey, 1)}) {
    absl::StatusOr<DoneFd> fd = DoneFd::Open(c);
    ASSERT_TRUE(fd.ok());
    EXPECT_EQ(fd->fd(), -1);
    EXPECT_FALSE(fd->IsDone());
  }
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<DoneFd> fd = DoneFd::Open(WithoutCancel(ctx));
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(fd->fd(), -1);
  EXPECT_EQ(DoneFd().fd(), -1);
}

TEST(DoneFdTest, ReadableExactlyOnceDone) {
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<DoneFd> fd = DoneFd::Open(ctx);
  ASSERT_TRUE(fd.ok());
  ASSERT_GE(fd->fd(), 0);
  EXPECT_FALSE(Readable(fd->fd(), absl::ZeroDuration()));
  EXPECT_FALSE(fd->IsDone());
  cancel();
  EXPECT_TRUE(Readable(fd->fd(), absl::ZeroDuration()));  // Set by cancel().
  EXPECT_TRUE(fd->IsDone());
  EXPECT_TRUE(Readable(fd->fd(), absl::ZeroDuration()));  // Stays readable.
}

TEST(DoneFdTest, AlreadyDoneIsReadableAtOnce) {
  auto [ctx, cancel] = WithTimeout(Background(), -absl::Seconds(1));
  absl::StatusOr<DoneFd> fd = DoneFd::Open(ctx);
  ASSERT_TRUE(fd.ok());
  EXPECT_TRUE(Readable(fd->fd(), absl::ZeroDuration()));
}

TEST(DoneFdTest, DeadlineMakesItReadable) {
  const absl::Time start = absl::Now();
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(30));
  absl::StatusOr<DoneFd> fd = DoneFd::Open(ctx);
  ASSERT_TRUE(fd.ok());
  EXPECT_TRUE(Readable(fd->fd(), kBound));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(25));
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(DoneFdTest, ParentCancelReachesChildDescriptor) {
  auto [parent, cancel] = WithCancel(Background());
  auto [child, cancel_child] = WithTimeout(parent, absl::Hours(1));
  absl::StatusOr<DoneFd> fd = DoneFd::Open(WithValue(child, kKey, 7));
  ASSERT_TRUE(fd.ok());
  std::thread t([c = cancel] { c(); });
  EXPECT_TRUE(Readable(fd->fd(), kBound));
  t.join();
}

TEST(DoneFdTest, SharedPerContextAndClosedWithLastHandle) {
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<DoneFd> a = DoneFd::Open(ctx);
  absl::StatusOr<DoneFd> b = DoneFd::Open(WithValue(ctx, kKey, 1));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->fd(), b->fd());  // One eventfd per context.
  auto [other, cancel_other] = WithCancel(ctx);
  absl::StatusOr<DoneFd> c = DoneFd::Open(other);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->fd(), a->fd());  // A different cancel layer: its own.
  const int fd = a->fd();
  DoneFd copy = *a;
  *a = DoneFd();
  *b = DoneFd();
  EXPECT_TRUE(FdOpen(fd));  // `copy` still holds it.
  copy = DoneFd();
  EXPECT_FALSE(FdOpen(fd));  // Closed with the last handle.
  // A new Open after that makes a fresh descriptor that still works.
  absl::StatusOr<DoneFd> again = DoneFd::Open(ctx);
  ASSERT_TRUE(again.ok());
  cancel();
  EXPECT_TRUE(Readable(again->fd(), absl::ZeroDuration()));
  EXPECT_TRUE(Readable(c->fd(), absl::ZeroDuration()));  // Child of ctx.
}

TEST(DoneFdTest, PollWakesWithinMillisecondsOfCancel) {
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<DoneFd> fd = DoneFd::Open(ctx);
  ASSERT_TRUE(fd.ok());
  std::atomic<int64_t> canceled_ns{0};
  std::thread t([&, c = cancel] {
    absl::SleepFor(absl::Milliseconds(20));  // Let the poll start (any order works).
    canceled_ns = absl::GetCurrentTimeNanos();
    c();
  });
  ASSERT_TRUE(Readable(fd->fd(), kBound));
  const int64_t woke_ns = absl::GetCurrentTimeNanos();
  t.join();
  EXPECT_LT(woke_ns - canceled_ns.load(), 50'000'000);  // Direct write: fast.
  std::printf("cancel -> poll() on the DoneFd woke: %s\n",
              absl::FormatDuration(absl::Nanoseconds(
                  woke_ns - canceled_ns.load())).c_str());
}

// Opens, drops and cancels from many threads at once: every descriptor is
// readable after its cancel, and none leaks (TSan/ASan check the rest).
TEST(DoneFdTest, ConcurrentOpenDropCancel) {
  constexpr int kThreads = 6;
  for (int round = 0; round < 200 / kScale; ++round) {
    auto [ctx, cancel] = WithCancel(Background());
    std::latch start(kThreads + 1);
    std::atomic<int> readable{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, c = ctx] {
        start.arrive_and_wait();
        absl::StatusOr<DoneFd> fd = DoneFd::Open(c);
        if (fd.ok() && Readable(fd->fd(), kBound)) ++readable;
      });
    }
    start.arrive_and_wait();
    cancel();
    for (auto& t : threads) t.join();
    EXPECT_EQ(readable.load(), kThreads);
  }
}

// --- Select ------------------------------------------------------------------

TEST(SelectTest, ReturnsWhichIsDone) {
  auto [a, cancel_a] = WithCancel(Background());
  auto [b, cancel_b] = WithCancel(Background());
  EXPECT_EQ(Select({a, b}, absl::ZeroDuration()), std::nullopt);
  EXPECT_EQ(Select({a, b}, absl::Milliseconds(10)), std::nullopt);
  std::thread t([c = cancel_b] { c(); });
  EXPECT_EQ(Select({a, b}, kBound), std::optional<size_t>(1));
  t.join();
  cancel_a();
  EXPECT_EQ(Select({a, b}), std::optional<size_t>(0));  // Lowest done index.
}

TEST(SelectTest, OverDoneSignals) {
  auto [a, cancel_a] = WithCancel(Background());
  auto [b, cancel_b] = WithCancel(Background());
  DoneSignal da = a.Done();
  DoneSignal db = b.Done();
  EXPECT_EQ(Select({da, db}, absl::ZeroDuration()), std::nullopt);
  std::thread t([c = cancel_b] { c(); });
  EXPECT_EQ(Select({da, db}, kBound), std::optional<size_t>(1));
  t.join();
  // Signals outlive their contexts' handles; never-done signals never win.
  EXPECT_EQ(Select({DoneSignal(), Background().Done(), db}, kBound),
            std::optional<size_t>(2));
}

TEST(SelectTest, TimeoutAndNeverDone) {
  const absl::Time start = absl::Now();
  EXPECT_EQ(Select({Background(), TODO()}, absl::Milliseconds(30)),
            std::nullopt);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(25));
  EXPECT_EQ(Select(std::span<const Context>(), absl::Milliseconds(1)),
            std::nullopt);
  auto [d, cancel] = WithTimeout(Background(), absl::Milliseconds(20));
  EXPECT_EQ(Select({Background(), d}, kBound), std::optional<size_t>(1));
}

TEST(SelectTest, ManyWaitersManyContexts) {
  for (int round = 0; round < 100 / kScale; ++round) {
    std::vector<Context> ctxs;
    std::vector<CancelFunc> cancels;
    for (int i = 0; i < 8; ++i) {
      auto [c, f] = WithCancel(Background());
      ctxs.push_back(c);
      cancels.push_back(f);
    }
    const size_t winner = round % 8;
    std::vector<std::thread> waiters;
    std::atomic<int> right{0};
    for (int w = 0; w < 4; ++w) {
      waiters.emplace_back([&] {
        if (Select(ctxs, kBound) == std::optional<size_t>(winner)) ++right;
      });
    }
    cancels[winner]();
    for (auto& t : waiters) t.join();
    EXPECT_EQ(right.load(), 4);
  }
}

// --- Wait(ctx, cv, lock, pred) ----------------------------------------------

TEST(CvWaitTest, PredicateOrDone) {
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  auto [ctx, cancel] = WithCancel(Background());
  std::thread producer([&] {
    std::lock_guard<std::mutex> lock(mu);
    ready = true;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(Wait(ctx, cv, lock, [&] { return ready; }));
    EXPECT_TRUE(lock.owns_lock());
  }
  producer.join();

  ready = false;
  std::thread canceler([c = cancel] { c(); });
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_FALSE(Wait(ctx, cv, lock, [&] { return ready; }));
    EXPECT_TRUE(lock.owns_lock());
  }
  canceler.join();
  // Done context, true predicate: the predicate wins.
  std::unique_lock<std::mutex> lock(mu);
  ready = true;
  EXPECT_TRUE(Wait(ctx, cv, lock, [&] { return ready; }));
  ready = false;
  EXPECT_FALSE(Wait(ctx, cv, lock, [&] { return ready; }));
}

TEST(CvWaitTest, NeverDoneContextIsPlainWait) {
  std::mutex mu;
  std::condition_variable cv;
  int n = 0;
  std::thread producer([&] {
    for (int i = 0; i < 3; ++i) {
      std::lock_guard<std::mutex> lock(mu);
      ++n;
      cv.notify_all();
    }
  });
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_TRUE(Wait(Background(), cv, lock, [&] { return n == 3; }));
  lock.unlock();
  producer.join();
}

TEST(CvWaitTest, CancelWakesTheWaiter) {
  std::mutex mu;
  std::condition_variable cv;
  auto [ctx, cancel] = WithCancel(Background());
  std::atomic<int64_t> canceled_ns{0};
  std::thread t([&, c = cancel] {
    {
      std::lock_guard<std::mutex> lock(mu);  // The waiter is in cv.wait.
    }
    canceled_ns = absl::GetCurrentTimeNanos();
    c();
  });
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_FALSE(Wait(ctx, cv, lock, [] { return false; }));
  const int64_t woke_ns = absl::GetCurrentTimeNanos();
  lock.unlock();
  t.join();
  EXPECT_LT(woke_ns - canceled_ns.load(), 1'000'000'000);
  std::printf("cancel -> Wait(ctx, cv, lock, pred) returned: %s\n",
              absl::FormatDuration(absl::Nanoseconds(
                  woke_ns - canceled_ns.load())).c_str());
}

// A cancel racing with notifies, with the mutex and condvar destroyed right
// after each Wait returns: ASan catches a waker touching them late, TSan a
// race; a lost wake-up hangs (the bounded deadline below then fails it).
TEST(CvWaitTest, CancelRacingNotifyLosesNothing) {
  for (int round = 0; round < 2000 / kScale; ++round) {
    auto [outer, outer_cancel] = WithTimeout(Background(), kBound);
    auto [ctx, cancel] = WithCancel(outer);
    auto mu = std::make_unique<std::mutex>();
    auto cv = std::make_unique<std::condition_variable>();
    bool flag = false;
    std::thread t([&, c = cancel] {
      if (round % 2 == 0) {
        std::lock_guard<std::mutex> lock(*mu);
        flag = (round % 4 == 0);
        cv->notify_all();
      }
      c();
    });
    {
      std::unique_lock<std::mutex> lock(*mu);
      Wait(ctx, *cv, lock, [&] { return flag; });
    }
    t.join();
    EXPECT_TRUE(outer.Err().ok()) << "round " << round;  // Did not hang.
    cv.reset();
    mu.reset();
  }
}

// --- std::stop_token ---------------------------------------------------------

TEST(StopTokenTest, StopRequestedWhenContextDone) {
  EXPECT_FALSE(StopTokenOf(Background()).stop_possible());
  auto [ctx, cancel] = WithCancel(Background());
  std::stop_token token = StopTokenOf(ctx);
  EXPECT_TRUE(token.stop_possible());
  EXPECT_FALSE(token.stop_requested());
  std::mutex mu;
  std::condition_variable_any cv;
  std::thread t([c = cancel] { c(); });
  {
    std::unique_lock<std::mutex> lock(mu);
    // Returns only through the stop request (the predicate never holds).
    EXPECT_FALSE(cv.wait(lock, token, [] { return false; }));
  }
  t.join();
  EXPECT_TRUE(token.stop_requested());
  EXPECT_TRUE(StopTokenOf(ctx).stop_requested());  // Done already: at once.
}

TEST(StopTokenTest, WorkerWaitingOnTokenStopsOnDeadline) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(20));
  std::atomic<bool> stopped{false};
  {
    // A worker that knows only the stop_token, as library code would.
    std::jthread worker([&stopped, token = StopTokenOf(ctx)] {
      std::mutex mu;
      std::condition_variable_any cv;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, token, std::chrono::seconds(10), [] { return false; });
      stopped = token.stop_requested();
    });
  }  // Joins.
  EXPECT_TRUE(stopped.load());
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(StopTokenTest, WithStopTokenCancelsOnRequest) {
  std::stop_source source;
  auto [ctx, cancel] = WithStopToken(Background(), source.get_token());
  EXPECT_TRUE(ctx.Err().ok());
  source.request_stop();
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kCancelled);  // Synchronous.
  EXPECT_EQ(Cause(ctx).message(), "stop requested");
}

TEST(StopTokenTest, WithStopTokenEdgeCases) {
  std::stop_source stopped;
  stopped.request_stop();
  auto [a, cancel_a] = WithStopToken(Background(), stopped.get_token());
  EXPECT_EQ(a.Err().code(), absl::StatusCode::kCancelled);

  auto [b, cancel_b] = WithStopToken(Background(), std::stop_token());
  EXPECT_TRUE(b.Err().ok());  // No stop possible: a plain WithCancel.
  cancel_b();
  EXPECT_EQ(b.Err().code(), absl::StatusCode::kCancelled);

  // Parent cancel first; a later stop request is harmless.
  std::stop_source source;
  auto [parent, cancel_parent] = WithCancel(Background());
  auto [c, cancel_c] = WithStopToken(parent, source.get_token());
  cancel_parent();
  EXPECT_EQ(c.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(Cause(c).message() != "stop requested");
  source.request_stop();

  // Child dropped before any request: the callback is deregistered (the
  // request then touches nothing; ASan would see a freed callback).
  std::stop_source later;
  for (int i = 0; i < 100; ++i) {
    auto [d, cancel_d] = WithStopToken(Background(), later.get_token());
  }
  later.request_stop();
}

TEST(StopTokenTest, ConcurrentRequestAndCancel) {
  for (int round = 0; round < 500 / kScale; ++round) {
    std::stop_source source;
    auto [ctx, cancel] = WithStopToken(Background(), source.get_token());
    std::stop_token back = StopTokenOf(ctx);
    std::thread a([&] { source.request_stop(); });
    std::thread b([c = cancel] { c(); });
    a.join();
    b.join();
    EXPECT_FALSE(ctx.Err().ok());
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_FALSE(cv.wait_for(lock, back, std::chrono::seconds(10),
                             [] { return false; }));
    EXPECT_TRUE(back.stop_requested());
  }
}

}  // namespace
}  // namespace reqctx
