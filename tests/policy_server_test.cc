// End-to-end tests of ServerPolicy (issue 12, sections 1 and 3): real
// servers on 127.0.0.1, every scenario on the sync and callback APIs (the
// policy enforced before the handler by the method-handler wrapping) and on
// the completion-queue API (the request loop asks AdmitAsync; see
// tests/policy_test_server.cc and tests/policy_async_test.cc).
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/client_interceptor.h"
#include "interceptors/policy/server_policy.h"
#include "metrics/rpc_metrics.h"
#include "tests/policy_test_server.h"
#include "w3c/baggage.h"
#include "w3c/baggage_context.h"
#include "tests/test_timing.h"

namespace reqctx::testing {
namespace {

using policy::PolicyCounter;
using policy::ServerPolicy;
using policy::ServerPolicyOptions;
using Api = PolicyTestServer::Api;

constexpr absl::Duration kBound = kPolicyWaitBound;

// One Echo call of `work_ms` with a deadline `budget` from now, canceled by
// its client `cancel_at` after it began (if > 0 and it has not ended).
grpc::Status EchoCanceledAt(::echo::v1::Echo::Stub& stub,
                            absl::Duration budget, int64_t work_ms,
                            absl::Duration cancel_at) {
  grpc::ClientContext cc;
  const absl::Time began = absl::Now();
  cc.set_deadline(absl::ToChronoTime(began + budget));
  ::echo::v1::EchoRequest req;
  req.set_work_ms(work_ms);
  ::echo::v1::EchoResponse resp;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread canceler;
  if (cancel_at > absl::ZeroDuration()) {
    canceler = std::thread([&] {
      std::unique_lock<std::mutex> l(mu);
      if (!cv.wait_until(l, absl::ToChronoTime(began + cancel_at),
                         [&] { return done; })) {
        cc.TryCancel();
      }
    });
  }
  const grpc::Status st = stub.Echo(&cc, req, &resp);
  {
    std::lock_guard<std::mutex> l(mu);
    done = true;
    cv.notify_all();
  }
  if (canceler.joinable()) canceler.join();
  return st;
}

// Each test serves Echo (SleepWork) on its API under a policy: Start(o),
// then policy(), server(), stub().
class PolicyServerTest : public PolicedServerTest {
 protected:
  // Start(o), then a call of `work_ms` (deadline `timeout`) that holds a
  // slot: true once its handler runs. JoinBusy() waits for it to end.
  bool StartHoldingTheSlot(ServerPolicyOptions o, int64_t work_ms,
                           absl::Duration timeout = absl::Seconds(10),
                           Behavior behavior = SleepWork) {
    if (!Start(std::move(o), std::move(behavior))) return false;
    busy_ = std::make_unique<BackgroundCall>(stub(), timeout, work_ms);
    return server().WaitHandled(1, kBound);
  }
  CallResult JoinBusy() { return busy_->Join(); }
  friend void SlotHeldUntilTheHandlerEnds(PolicyServerTest& t,
                                          bool cancel_first);
  friend int ClaimsThatEvict(PolicyServerTest& t, ServerPolicyOptions o,
                             const std::vector<std::string>& headers,
                             int claims);

 private:
  std::unique_ptr<BackgroundCall> busy_;  // Ends before the server goes.
};

TEST_P(PolicyServerTest, FixedMinimumBudgetRefusesBeforeTheHandler) {
  ServerPolicyOptions o;
  o.defaults.min_budget = absl::Seconds(3);
  ASSERT_TRUE(Start(o));
  // Warm the channel so the measured call is one round trip.
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 0).status.ok());
  ASSERT_EQ(server().handled(), 1);

  CallResult r = CallEcho(stub(), absl::Seconds(1), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server's refusal (the client's own expiry would say "Deadline
  // Exceeded"), so it came before the 1 s ran out.
  EXPECT_NE(r.status.error_message().find("minimum"), std::string::npos)
      << r.status.error_message();
  EXPECT_LT(r.elapsed, absl::Seconds(1));
  EXPECT_EQ(server().handled(), 1);  // The handler never ran.
  EXPECT_EQ(policy().Counters()[PolicyCounter::kMinBudgetRejected], 1);
  // A call with no deadline has an infinite budget.
  EXPECT_TRUE(CallEcho(stub(), absl::InfiniteDuration(), 0).status.ok());
  EXPECT_EQ(server().handled(), 2);
}

TEST_P(PolicyServerTest, LearnedMinimumBudgetActsAfterWarmup) {
  ServerPolicyOptions o;
  o.defaults.learned_min_budget_quantile = 0.9;
  o.defaults.learned_warmup = 3;
  o.defaults.learned_window = 50;
  ASSERT_TRUE(Start(o));
  // Before warm-up a short budget is not refused by the policy.
  EXPECT_TRUE(CallEcho(stub(), absl::Milliseconds(500), 0).status.ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 600).status.ok());
  }
  // p90 of the recent handling times is now >= 600 ms.
  const int before = server().handled();
  CallResult r = CallEcho(stub(), absl::Milliseconds(400), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(server().handled(), before);
  EXPECT_EQ(policy().Counters()[PolicyCounter::kMinBudgetRejected], 1);
  EXPECT_TRUE(CallEcho(stub(), absl::Seconds(5), 0).status.ok());
}

// Attack review (attack14): calls cut at their deadline are not learned
// as handling times (Ended: a flood of short deadlines must not teach the
// method its budget), also without a concurrency limit and on the async
// API. Before the fix AdmitAsync recorded the call's deadline and Context
// only when the method had a shedder: an async call without one was
// learned whatever ended it (here: three calls cut at 300 ms made the
// learned minimum ~300 ms, and a 200 ms call was refused), as a client's
// cancel was (its Context was never read).
TEST_P(PolicyServerTest, CallsCutAtTheirDeadlineTeachNoMinimumBudget) {
  ServerPolicyOptions o;
  o.defaults.learned_min_budget_quantile = 1.0;  // the window's longest
  o.defaults.learned_warmup = 1;
  o.defaults.learned_window = 50;
  ASSERT_TRUE(Start(o));
  ASSERT_FALSE(policy().LimiterStats("/echo.v1.Echo/Echo").has_value());
  // Learned: a call of 100 ms of work (the expected handling: a call cut
  // at its deadline is learned only if its handler ran that long past it).
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 100).status.ok());
  {
    // Three calls of 5 s of work, each cut by its 300 ms deadline.
    BackgroundCall a(stub(), absl::Milliseconds(300), 5000);
    BackgroundCall b(stub(), absl::Milliseconds(300), 5000);
    BackgroundCall c(stub(), absl::Milliseconds(300), 5000);
    for (BackgroundCall* call : {&a, &b, &c}) {
      EXPECT_EQ(call->Join().status.error_code(),
                grpc::StatusCode::DEADLINE_EXCEEDED);
    }
  }
  ASSERT_TRUE(server().WaitFinished(4, kBound));
  // The cut calls' handling times were not learned: the minimum is still
  // the first call's (~100 ms).
  CallResult r = CallEcho(stub(), absl::Milliseconds(200), 0);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(policy().Counters()[PolicyCounter::kMinBudgetRejected], 0);
}

// Attack review (attack14), a repro left open: what a method learns of
// calls cut short is the callers' to choose when its handler honours its
// Context. Ended learns a call cut at its deadline when its handler
// returned a whole expected handling after the deadline ("kept working"),
// and a call its client canceled when it ran at least the expected
// handling before the cancel. On a fast method (handling ~1 ms) the first
// is true of every cut call -- the deadline's own delivery and the
// handler's return take ~2 ms (25-37 ms on a loaded machine) -- and the
// second of any cancel after 1 ms: a caller that asks for long work and
// cuts it short at T (deadline or cancel) teaches the method a handling
// time of T. Here three such calls (5 s of work cut at 500 ms) set the
// learned minimum budget (quantile 1.0) to ~502 ms, and an honest call of
// 200 ms is refused; measured on every API, learned minimum with
// deadlines / with cancels at 500 ms: sync 502.4-504.4 / 504.4 ms,
// callback 501.6-501.8 / 501.2, async 501.5-502.6 / 501.0. With the
// default window (1,000) and quantile 0.9 it takes a tenth of the calls
// (e.g. 20 streams that each sleep until canceled at 200 ms against 1,000
// calls a second); the mean of the last 64 (the expected handling) moves
// as well: its refusals at arrival and the late-call rule (a drop only for
// a budget that covered it) then follow the caller's T. A fix needs the
// time the handler ran after its Context ended (a handler that ignores its
// Context, whose real cost SlotHeldUntilTheHandlerEnds learns, against one
// that returned at once), which the glue does not record.
TEST_P(PolicyServerTest, DISABLED_CutCallsOfAFastMethodTeachNoMinimumBudget) {
  for (bool cancel : {false, true}) {
    ServerPolicyOptions o;
    o.defaults.learned_min_budget_quantile = 1.0;  // the window's longest
    o.defaults.learned_warmup = 1;
    o.defaults.learned_window = 50;
    ASSERT_TRUE(Start(o));
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 0).status.ok());
    }
    std::vector<std::thread> hostile;
    for (int i = 0; i < 3; ++i) {
      hostile.emplace_back([&] {
        const grpc::Status st = EchoCanceledAt(
            stub(), cancel ? kBound : absl::Milliseconds(500), 5000,
            cancel ? absl::Milliseconds(500) : absl::ZeroDuration());
        EXPECT_FALSE(st.ok());
      });
    }
    for (std::thread& t : hostile) t.join();
    ASSERT_TRUE(server().WaitFinished(8, kBound));
    CallResult r = CallEcho(stub(), absl::Milliseconds(200), 0);
    EXPECT_TRUE(r.status.ok()) << (cancel ? "canceled: " : "cut: ")
                               << r.status.error_message();
    EXPECT_EQ(policy().Counters()[PolicyCounter::kMinBudgetRejected], 0)
        << (cancel ? "canceled" : "cut");
  }
}

TEST_P(PolicyServerTest, ConcurrencyLimitShedsWithPushback) {
  ASSERT_TRUE(StartHoldingTheSlot(OneSlot(0, absl::Milliseconds(300)), 1000));
  CallResult r = CallEcho(stub(), absl::Seconds(5), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  int64_t ms = 0;
  ASSERT_TRUE(absl::SimpleAtoi(r.pushback, &ms)) << "'" << r.pushback << "'";
  EXPECT_GE(ms, 1);
  EXPECT_EQ(server().handled(), 1);
  EXPECT_EQ(policy().Counters()[PolicyCounter::kShedQueueFull], 1);
  JoinBusy();
  // The slot is given back just after the busy call's status went out.
  ASSERT_TRUE(PollUntil([&] { return policy().Running() == 0; }));
  EXPECT_TRUE(CallEcho(stub(), absl::Seconds(5), 0).status.ok());
}

TEST_P(PolicyServerTest, HopelessCallIsRefusedAtArrival) {
  ASSERT_TRUE(StartHoldingTheSlot(OneSlot(8, absl::Milliseconds(400)), 1000));
  // Expected wait (400 ms) + handling (400 ms) > 500 ms budget.
  CallResult r = CallEcho(stub(), absl::Milliseconds(500), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_LT(r.elapsed, absl::Milliseconds(300));
  EXPECT_FALSE(r.pushback.empty());
  EXPECT_EQ(policy().Counters()[PolicyCounter::kShedAtArrival], 1);
  JoinBusy();
  EXPECT_EQ(server().handled(), 1);
}

TEST_P(PolicyServerTest, QueuedCallIsDroppedWhenItsDeadlinePasses) {
  ASSERT_TRUE(StartHoldingTheSlot(OneSlot(8, absl::Milliseconds(1)), 1000));
  CallResult r = CallEcho(stub(), absl::Milliseconds(150), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  JoinBusy();
  EXPECT_EQ(server().handled(), 1);  // The queued call never ran.
  EXPECT_EQ(policy().Counters()[PolicyCounter::kQueued], 1);
  // Dropped by the server at its deadline (the client may see its own
  // deadline first; the server's drop is what the counter records).
  EXPECT_TRUE(PollUntil([&] {
    return policy().Counters()[PolicyCounter::kShedExpired] == 1;
  }));
  EXPECT_EQ(policy().Counters()[PolicyCounter::kShedExpired], 1);
}

TEST_P(PolicyServerTest, QueuedCallRunsWhenTheSlotFrees) {
  ASSERT_TRUE(StartHoldingTheSlot(OneSlot(8, absl::Milliseconds(1)), 200));
  CallResult r = CallEcho(stub(), absl::Seconds(10), 0);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  JoinBusy();
  EXPECT_EQ(server().handled(), 2);
  EXPECT_EQ(policy().Counters()[PolicyCounter::kQueued], 1);
  EXPECT_EQ(policy().Counters()[PolicyCounter::kAdmitted], 2);
}

TEST_P(PolicyServerTest, QueuedCallCanceledByItsClientIsDroppedPromptly) {
  if (GetParam() == Api::kCallback) {
    // gRPC 1.51's callback API starts listening for a client's cancel only
    // inside the method's own handler (CallbackUnaryHandler::RunHandler
    // begins the call's completion op), which a queued call has not reached:
    // it is dropped at its deadline (docs/production.md, "Load shedding
    // that knows deadlines").
    GTEST_SKIP() << "the callback API cannot see a cancel before the handler";
  }
  ASSERT_TRUE(StartHoldingTheSlot(OneSlot(8, absl::Milliseconds(1)), 3000,
                                  absl::Seconds(30)));
  grpc::ClientContext cc;
  cc.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::Status status;
  std::thread call([&] {
    ::echo::v1::EchoResponse response;
    status = stub().Echo(&cc, ::echo::v1::EchoRequest(), &response);
  });
  const bool was_queued = PollUntil([&] { return policy().Queued() == 1; });
  cc.TryCancel();
  call.join();
  ASSERT_TRUE(was_queued);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  // Dropped once the cancel reaches the server: while the busy call still
  // holds the slot (3 s), long before its own 30 s deadline.
  ASSERT_TRUE(PollUntil([&] { return policy().Queued() == 0; }));
  EXPECT_EQ(policy().Running(), 1);
  EXPECT_EQ(policy().Counters()[PolicyCounter::kShedExpired], 1);
  EXPECT_EQ(server().handled(), 1);
}

// Under sustained overload (the oldest queued call older than lifo_after)
// the newest queued call is served first.
TEST_P(PolicyServerTest, NewestFirstUnderSustainedOverload) {
  ServerPolicyOptions o = OneSlot(8, absl::Milliseconds(1));
  o.defaults.lifo_after = absl::ZeroDuration();
  ASSERT_TRUE(StartHoldingTheSlot(o, 300));
  BackgroundCall first(stub(), absl::Seconds(10), 0, "call=first");
  const bool one = PollUntil([&] { return policy().Queued() == 1; });
  BackgroundCall second(stub(), absl::Seconds(10), 0, "call=second");
  const bool two = PollUntil([&] { return policy().Queued() == 2; });
  EXPECT_TRUE(first.Join().status.ok());
  EXPECT_TRUE(second.Join().status.ok());
  ASSERT_TRUE(one && two);
  std::vector<Arrival> a = server().arrivals();
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[1].baggage, "call=second");
  EXPECT_EQ(a[2].baggage, "call=first");
}

TEST_P(PolicyServerTest, CriticalCallEvictsSheddableOne) {
  ASSERT_TRUE(StartHoldingTheSlot(OneSlot(1, absl::Milliseconds(1)), 300));
  BackgroundCall queued(stub(), absl::Seconds(10), 0, "criticality=sheddable");
  // Wait until the sheddable call is queued.
  ASSERT_TRUE(PollUntil([&] { return policy().Queued() == 1; }));
  CallResult critical =
      CallEcho(stub(), absl::Seconds(10), 0, "a=b,criticality=critical");
  const CallResult sheddable = queued.Join();
  JoinBusy();
  EXPECT_TRUE(critical.status.ok()) << critical.status.error_message();
  EXPECT_EQ(sheddable.status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_FALSE(sheddable.pushback.empty());
  EXPECT_EQ(policy().Counters()[PolicyCounter::kShedEvicted], 1);
  EXPECT_EQ(policy().Counters()[PolicyCounter::kShedSheddable], 1);
}

TEST_P(PolicyServerTest, PerMethodPolicyOverridesDefaults) {
  ServerPolicyOptions o;
  o.defaults.min_budget = absl::Seconds(100);
  o.methods["/echo.v1.Echo/Echo"].min_budget = absl::ZeroDuration();
  ASSERT_TRUE(Start(o));
  EXPECT_EQ(policy().PolicyFor("/echo.v1.Echo/Echo").min_budget,
            absl::ZeroDuration());
  EXPECT_EQ(policy().PolicyFor("/echo.v1.Echo/Stats").min_budget,
            absl::Seconds(100));
  EXPECT_TRUE(CallEcho(stub(), absl::Seconds(5), 0).status.ok());
}

TEST_P(PolicyServerTest, ManyConcurrentCallsBalance) {
  ServerPolicyOptions o;
  o.defaults.max_concurrency = 2;
  o.defaults.max_queue = 4;
  o.defaults.expected_handling = absl::Milliseconds(2);
  ASSERT_TRUE(Start(o));
  constexpr int kThreads = 8;
  constexpr int kCalls = 10;
  std::atomic<int> ok{0}, shed{0}, late{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        CallResult r = CallEcho(stub(), absl::Milliseconds(200), 5);
        switch (r.status.error_code()) {
          case grpc::StatusCode::OK: ++ok; break;
          case grpc::StatusCode::RESOURCE_EXHAUSTED: ++shed; break;
          case grpc::StatusCode::DEADLINE_EXCEEDED: ++late; break;
          default: ++other; break;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok + shed + late + other, kThreads * kCalls);
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(ok.load(), 0);
  policy::PolicyCountersSnapshot c = policy().Counters();
  EXPECT_EQ(c[PolicyCounter::kAdmitted], server().handled());
  ASSERT_TRUE(server().WaitFinished(server().handled(), kBound));
}

// The handler's remaining deadline, seen by the service at arrival.
absl::Duration HandlerRemaining(const PolicyTestServer& server) {
  std::vector<Arrival> a = server.arrivals();
  if (a.empty() || !a.back().remaining.has_value()) {
    return absl::InfiniteDuration();
  }
  return *a.back().remaining;
}

TEST_P(PolicyServerTest, ReplyMarginMovesTheHandlersDeadlineEarlier) {
  ServerPolicyOptions o;
  o.defaults.reply_margin = absl::Milliseconds(300);
  ASSERT_TRUE(Start(o));
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(1), 0).status.ok());
  EXPECT_LE(HandlerRemaining(server()), absl::Milliseconds(720));  // grpc-timeout rounding.
  EXPECT_GT(HandlerRemaining(server()), absl::Milliseconds(400));
  EXPECT_EQ(policy().Counters()[PolicyCounter::kReplyMarginApplied], 1);
  // A margin larger than the budget leaves the handler "now", not earlier:
  // its Context is done at once and the call ends DEADLINE_EXCEEDED well
  // before the caller's deadline.
  ServerPolicyOptions big;
  big.defaults.reply_margin = absl::Seconds(30);
  PolicedServer second(GetParam(), big);
  ASSERT_TRUE(second.server.ok());
  CallResult r = CallEcho(*second.stub, absl::Seconds(5), 1000);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(r.elapsed, absl::Seconds(2));
  EXPECT_LE(HandlerRemaining(second.server), absl::ZeroDuration());
  EXPECT_GT(HandlerRemaining(second.server), -absl::Seconds(1));
}

TEST_P(PolicyServerTest, DefaultAndMaximumDeadline) {
  ServerPolicyOptions o;
  o.defaults.default_deadline = absl::Milliseconds(800);
  o.defaults.max_deadline = absl::Seconds(2);
  ASSERT_TRUE(Start(o));
  // No deadline: the default.
  ASSERT_TRUE(CallEcho(stub(), absl::InfiniteDuration(), 0).status.ok());
  EXPECT_LE(HandlerRemaining(server()), absl::Milliseconds(800));
  EXPECT_GT(HandlerRemaining(server()), absl::Milliseconds(500));
  // A long deadline: capped.
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(60), 0).status.ok());
  EXPECT_LE(HandlerRemaining(server()), absl::Seconds(2));
  EXPECT_GT(HandlerRemaining(server()), absl::Milliseconds(1500));
  // A short one: unchanged.
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(1), 0).status.ok());
  EXPECT_LE(HandlerRemaining(server()), absl::Milliseconds(1020));  // grpc-timeout rounds up to 10 ms above 1 s.
  EXPECT_GT(HandlerRemaining(server()), absl::Milliseconds(700));
  policy::PolicyCountersSnapshot c = policy().Counters();
  EXPECT_EQ(c[PolicyCounter::kDeadlineDefaulted], 1);
  EXPECT_EQ(c[PolicyCounter::kDeadlineCapped], 1);
  // The default deadline ends a call that has none.
  CallResult r = CallEcho(stub(), absl::InfiniteDuration(), 5000);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(r.elapsed, absl::Seconds(3));
}

TEST_P(PolicyServerTest, CriticalityReachesTheHandlersContext) {
  ASSERT_TRUE(Start(ServerPolicyOptions{}));
  ASSERT_TRUE(
      CallEcho(stub(), absl::Seconds(5), 0, "x=1,criticality=critical").status.ok());
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 0).status.ok());
  ASSERT_TRUE(
      CallEcho(stub(), absl::Seconds(5), 0, "criticality=bogus").status.ok());
  std::vector<Arrival> a = server().arrivals();
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].criticality, policy::Criticality::kCritical);
  EXPECT_EQ(a[1].criticality, policy::Criticality::kDefault);
  EXPECT_EQ(a[2].criticality, policy::Criticality::kDefault);
}

// Every policy at once: margin, default, minimum budget, shedding.
TEST_P(PolicyServerTest, PoliciesCombine) {
  ServerPolicyOptions o;
  o.defaults.reply_margin = absl::Milliseconds(50);
  o.defaults.default_deadline = absl::Seconds(2);
  o.defaults.min_budget = absl::Milliseconds(100);
  o.defaults.max_concurrency = 1;
  o.defaults.max_queue = 4;
  o.defaults.expected_handling = absl::Milliseconds(200);
  ASSERT_TRUE(StartHoldingTheSlot(o, 300, absl::InfiniteDuration()));
  // Below the minimum: refused by the budget rule first.
  EXPECT_EQ(CallEcho(stub(), absl::Milliseconds(60), 0).status.error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  // Enough for the minimum but not for the queue: shed at arrival.
  CallResult shed = CallEcho(stub(), absl::Milliseconds(300), 0);
  EXPECT_EQ(shed.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Enough for both: queued, then served with the margin applied.
  CallResult ok = CallEcho(stub(), absl::Seconds(3), 0);
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  JoinBusy();
  EXPECT_EQ(server().handled(), 2);
  // The busy call had no deadline: it got the default, minus the margin.
  std::vector<Arrival> a = server().arrivals();
  ASSERT_TRUE(a[0].remaining.has_value());
  EXPECT_LE(*a[0].remaining, absl::Milliseconds(1950));
  policy::PolicyCountersSnapshot c = policy().Counters();
  EXPECT_EQ(c[PolicyCounter::kMinBudgetRejected], 1);
  EXPECT_EQ(c[PolicyCounter::kShedAtArrival], 1);
  EXPECT_EQ(c[PolicyCounter::kDeadlineDefaulted], 1);
}

// Criticality trust (issue 19, A4). One slot held by a busy call, a queue
// of one holding a call with no criticality (default); then `claims` calls,
// one after another, each with `headers` as its `baggage` headers. Returns
// how many claims evicted the queued call (a claim that is believed
// critical evicts it; one that is not is refused, queue full, and the
// queued call runs once the busy one ends).
int ClaimsThatEvict(PolicyServerTest& t, ServerPolicyOptions o,
                    const std::vector<std::string>& headers, int claims = 1);

TEST_P(PolicyServerTest, CriticalityTrustedFromEveryoneByDefault) {
  EXPECT_EQ(ClaimsThatEvict(*this, OneSlot(1, absl::Milliseconds(1)),
                            {"criticality=critical"}),
            1);
}

TEST_P(PolicyServerTest, UntrustedCriticalFloodDoesNotOutrankTheServersCalls) {
  ServerPolicyOptions o = OneSlot(1, absl::Milliseconds(1));
  o.criticality.trust = policy::CriticalityTrust::kNobody;
  EXPECT_EQ(ClaimsThatEvict(*this, o, {"criticality=critical"}, 5), 0);
}

TEST_P(PolicyServerTest, CriticalityTrustedOnlyFromListedPeers) {
  ServerPolicyOptions listed = OneSlot(1, absl::Milliseconds(1));
  listed.criticality.trust = policy::CriticalityTrust::kListedPeers;
  listed.criticality.trusted_peers = {"10.0.0.0/8", "127.0.0.0/8"};
  EXPECT_EQ(ClaimsThatEvict(*this, listed, {"criticality=critical"}), 1);
  ServerPolicyOptions others = listed;
  others.criticality.trusted_peers = {"10.0.0.0/8", "::1", "127.0.0.2"};
  EXPECT_EQ(ClaimsThatEvict(*this, others, {"criticality=critical"}), 0);
}

// Several `baggage` headers are one list (the glue joins them, the last
// `criticality` member wins): the shedder sees the criticality the
// handler's Context has, not the first header's.
TEST_P(PolicyServerTest, ShedderAndHandlerReadEveryBaggageHeader) {
  EXPECT_EQ(ClaimsThatEvict(*this, OneSlot(1, absl::Milliseconds(1)),
                            {"a=1", "criticality=critical"}),
            1);
  std::vector<Arrival> a = server().arrivals();
  ASSERT_EQ(a.size(), 2u);  // The busy call, then the claim.
  EXPECT_EQ(a[1].criticality, policy::Criticality::kCritical);
}

TEST_P(PolicyServerTest, UntrustedClaimIsReplacedInTheHandlersContext) {
  ServerPolicyOptions o;
  o.criticality.trust = policy::CriticalityTrust::kNobody;
  o.criticality.untrusted = policy::Criticality::kSheddable;
  std::mutex mu;
  std::string passed_on;  // Guarded by mu.
  ASSERT_TRUE(Start(o, [&](int, const Context& ctx,
                           const ::echo::v1::EchoRequest&) {
    std::lock_guard<std::mutex> lock(mu);
    passed_on = FormatBaggage(Baggage(ctx).members());
    return grpc::Status::OK;
  }));
  ASSERT_TRUE(CallEchoWithHeaders(stub(), absl::Seconds(5), 0,
                                  {"x=1,criticality=critical"})
                  .status.ok());
  std::vector<Arrival> a = server().arrivals();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].criticality, policy::Criticality::kSheddable);
  std::lock_guard<std::mutex> lock(mu);
  // What the next hop would get: the caller's other members, the server's
  // criticality.
  EXPECT_EQ(passed_on, "x=1,criticality=sheddable");
}

// A claim the caller's hop believed reaches the next hop even when its
// baggage is over what the outbound header budget (client_interceptor.h)
// leaves for it: 170 members of 23 bytes fill the room, and the
// `criticality` member, last (where WithCriticality and most callers put
// it), did not fit (the next hop saw kDefault before). The budget's trimming
// keeps it first, on a forwarded header and on a Context's baggage alike.
// An Echo made the reqctx way: NewClientContext(ctx) on `stub`.
grpc::Status CallEchoFrom(::echo::v1::Echo::Stub& stub, const Context& ctx) {
  auto [call_ctx, cancel] = WithTimeout(ctx, absl::Seconds(5));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(call_ctx);
  ::echo::v1::EchoRequest request;
  ::echo::v1::EchoResponse response;
  return stub.Echo(cc.get(), request, &response);
}

TEST_P(PolicyServerTest, CriticalityOutlivesTheOutboundHeaderBudget) {
  ASSERT_TRUE(Start(ServerPolicyOptions{}));
  std::string members;
  for (int i = 0; i < 170; ++i) {
    absl::StrAppend(&members, i > 0 ? "," : "", "k",
                    absl::Dec(i, absl::kZeroPad3), "=", std::string(18, 'v'));
  }
  ASSERT_LT(members.size(), kMaxBaggageBytes);
  ASSERT_TRUE(CallEchoWithHeaders(stub(), absl::Seconds(5), 0,
                                  {members + ",criticality=critical"})
                  .status.ok());
  const Context ctx = policy::WithCriticality(
      WithBaggageHeader(Background(), members), policy::Criticality::kCritical);
  ASSERT_TRUE(CallEchoFrom(stub(), ctx).ok());
  std::vector<Arrival> a = server().arrivals();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].criticality, policy::Criticality::kCritical)
      << "forwarded header";
  EXPECT_EQ(a[1].criticality, policy::Criticality::kCritical) << "Context";
}

// Handlers that IGNORE their Context (issue 19, B10): the first call's
// handler waits until its Context is done (deadline or client cancel), says
// so, then keeps working until the test opens the gate; later calls return
// at once. Counts the handlers running at once, and the most ever.
class StubbornWork : public std::enable_shared_from_this<StubbornWork> {
 public:
  // The behavior shares this object: the server (kept by the fixture) may
  // outlive the test's own reference.
  Behavior behavior() {
    return [this, self = shared_from_this()](int index, const Context& ctx,
                                             const ::echo::v1::EchoRequest&) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        max_running_ = std::max(max_running_, ++running_);
      }
      if (index == 0) {
        const bool done = ctx.Done().WaitFor(kBound);
        std::unique_lock<std::mutex> lock(mu_);
        first_saw_done_ = done;
        cv_.notify_all();
        // Not its Context: the gate (bounded, so a broken test ends).
        cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                     [&] { return open_; });
      }
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
      return grpc::Status::OK;
    };
  }
  // Waits until the first handler has seen its Context done.
  bool WaitFirstSawDone() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                        [&] { return first_saw_done_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  int max_running() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_running_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int running_ = 0;           // Guarded by mu_.
  int max_running_ = 0;       // Guarded by mu_.
  bool first_saw_done_ = false;  // Guarded by mu_.
  bool open_ = false;         // Guarded by mu_.
};

// One slot; the first call's handler outlives its Context (ended by
// `end_first`: its deadline, or its client's cancel) while a second call
// waits in the queue. The slot is the first handler's until it returns:
// the second call runs only after the gate opens, never beside it, and
// the method's latency window learns the first call's real handling time.
void SlotHeldUntilTheHandlerEnds(PolicyServerTest& t, bool cancel_first);

TEST_P(PolicyServerTest, SlotIsHeldPastTheDeadlineOfAHandlerThatIgnoresIt) {
  SlotHeldUntilTheHandlerEnds(*this, /*cancel_first=*/false);
}

TEST_P(PolicyServerTest, SlotIsHeldPastTheCancelOfAHandlerThatIgnoresIt) {
  SlotHeldUntilTheHandlerEnds(*this, /*cancel_first=*/true);
}

// Attack review of 2026db4: how the late calls of handlers that ignore
// their Context are classified and learned, on every API. Four slots,
// expected handling 20 ms, learned after one call; the handler sleeps
// request.work_ms whatever its Context. Calls one at a time:
//   1. budget 5 s, work 40 ms: a success, learned (expected 40 ms);
//   2. server deadline 60 ms, work 80 (1.33x): dropped (60 >= 40); not
//      learned (only 20 ms past its deadline);
//   3. client cancel at 190 of 200 ms (inside ClientDeadlineSlack's 20 ms),
//      work 220: a late call, dropped; not learned (20 ms past);
//   4. server deadline 30 ms (under the expected 40), work 45: ignored;
//   5. client cancel at 100 of 300 ms (outside the slack), work 150:
//      ignored (a cancel).
// Outcomes are read from reqctx_policy_limit_samples_total (this process).
TEST_P(PolicyServerTest, LateCallsOfAHandlerThatIgnoresItsContext) {
  policy::ServerPolicyOptions o = OneSlot(8, absl::Milliseconds(20));
  o.defaults.max_concurrency = 4;
  o.defaults.learned_warmup = 1;
  ASSERT_TRUE(Start(o, [](int, const Context&,
                          const ::echo::v1::EchoRequest& r) {
    absl::SleepFor(absl::Milliseconds(r.work_ms()));  // ignores its Context
    return grpc::Status::OK;
  }));
  const char* const kMethodName = "/echo.v1.Echo/Echo";
  // One call (deadline `budget`, canceled at `cancel_at` if > 0); the
  // outcome it added, once its slot is back.
  auto call = [&](absl::Duration budget, int64_t work_ms,
                  absl::Duration cancel_at) -> int {
    const auto before = metrics::PolicyMethod(kMethodName).LimitSampleCounts();
    const grpc::Status st = EchoCanceledAt(stub(), budget, work_ms, cancel_at);
    EXPECT_TRUE(PollUntil([&] { return policy().Running() == 0; }));
    const auto after = metrics::PolicyMethod(kMethodName).LimitSampleCounts();
    int outcome = -1;
    for (int i = 0; i < 3; ++i) {
      if (after[i] != before[i]) outcome = i;
    }
    std::printf("[%s] budget %lld ms work %lld cancel at %lld: status %d, "
                "outcome %d (0 success, 1 ignore, 2 dropped)\n",
                ApiName({GetParam(), 0}).c_str(),
                static_cast<long long>(absl::ToInt64Milliseconds(budget)),
                static_cast<long long>(work_ms),
                static_cast<long long>(absl::ToInt64Milliseconds(cancel_at)),
                st.error_code(), outcome);
    return outcome;
  };
  const absl::Duration kNone = absl::ZeroDuration();
  EXPECT_EQ(call(absl::Seconds(5), 40, kNone), 0);
  EXPECT_EQ(call(absl::Milliseconds(60), 80, kNone), 2);
  EXPECT_EQ(call(absl::Milliseconds(200), 220, absl::Milliseconds(190)), 2);
  EXPECT_EQ(call(absl::Milliseconds(30), 45, kNone), 1);
  EXPECT_EQ(call(absl::Milliseconds(300), 150, absl::Milliseconds(100)), 1);
}

INSTANTIATE_TEST_SUITE_P(Apis, PolicyServerTest, kAllApis, ApiName);



int ClaimsThatEvict(PolicyServerTest& t, ServerPolicyOptions o,
                    const std::vector<std::string>& headers, int claims) {
  // The first call holds the slot until the gate opens; the others return
  // at once. Shared with the server's behavior, which the server (kept by
  // the fixture) may outlive this function with.
  struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;  // Guarded by mu.
  };
  auto gate = std::make_shared<Gate>();
  auto open_gate = [gate] {
    std::lock_guard<std::mutex> lock(gate->mu);
    gate->open = true;
    gate->cv.notify_all();
  };
  if (!t.StartHoldingTheSlot(
          std::move(o), 0, kBound,
          [gate](int index, const Context&, const ::echo::v1::EchoRequest&) {
            if (index == 0) {
              std::unique_lock<std::mutex> lock(gate->mu);
              gate->cv.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                                [&] { return gate->open; });
            }
            return grpc::Status::OK;
          })) {
    ADD_FAILURE() << "server did not start";
    open_gate();
    return -1;
  }
  BackgroundCall queued(t.stub(), kBound, 0);
  const bool was_queued = PollUntil([&] { return t.policy().Queued() == 1; });
  std::vector<std::unique_ptr<std::thread>> calls;
  std::vector<CallResult> results(claims);
  auto decided = [&] {
    policy::PolicyCountersSnapshot c = t.policy().Counters();
    return c[PolicyCounter::kShedQueueFull] + c[PolicyCounter::kShedEvicted];
  };
  for (int i = 0; was_queued && i < claims; ++i) {
    calls.push_back(std::make_unique<std::thread>([&, i] {
      results[i] = CallEchoWithHeaders(t.stub(), kBound, 0, headers);
    }));
    // Refused (queue full), or the queued call evicted: one decision each.
    EXPECT_TRUE(PollUntil([&] { return decided() == i + 1; }));
    if (t.policy().Counters()[PolicyCounter::kShedEvicted] > 0) break;
  }
  open_gate();
  for (auto& c : calls) c->join();
  const CallResult q = queued.Join();
  t.JoinBusy();
  EXPECT_TRUE(was_queued);
  const int evicted =
      static_cast<int>(t.policy().Counters()[PolicyCounter::kShedEvicted]);
  for (size_t i = 0; i < calls.size(); ++i) {
    const CallResult& claim = results[i];
    if (evicted > 0 && i + 1 == calls.size()) {
      EXPECT_TRUE(claim.status.ok()) << claim.status.error_message();
    } else {
      EXPECT_EQ(claim.status.error_code(),
                grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_NE(claim.status.error_message().find("queue full"),
                std::string::npos)
          << claim.status.error_message();
    }
  }
  EXPECT_EQ(q.status.error_code(), evicted > 0
                                       ? grpc::StatusCode::RESOURCE_EXHAUSTED
                                       : grpc::StatusCode::OK)
      << q.status.error_message();
  return evicted;
}

void SlotHeldUntilTheHandlerEnds(PolicyServerTest& t, bool cancel_first) {
  const absl::Duration first_deadline =
      PlainOrSanitized(absl::Milliseconds(300), absl::Milliseconds(600));
  ServerPolicyOptions o = OneSlot(8, absl::Milliseconds(1));
  // Learns a minimum budget from the handling times: the whole window's
  // maximum, once one call has been handled.
  o.defaults.learned_min_budget_quantile = 1.0;
  o.defaults.learned_warmup = 1;
  auto shared_work = std::make_shared<StubbornWork>();
  StubbornWork& work = *shared_work;
  ASSERT_TRUE(t.Start(o, work.behavior()));
  grpc::ClientContext first_cc;
  first_cc.set_deadline(absl::ToChronoTime(
      absl::Now() + (cancel_first ? kBound : first_deadline)));
  grpc::Status first_status;
  std::thread first([&] {
    ::echo::v1::EchoResponse response;
    first_status = t.stub().Echo(&first_cc, ::echo::v1::EchoRequest(),
                                 &response);
  });
  const bool first_runs = t.server().WaitHandled(1, kBound);
  BackgroundCall second(t.stub(), kBound, 0);
  const bool second_queued =
      PollUntil([&] { return t.policy().Queued() == 1; });
  if (cancel_first) first_cc.TryCancel();
  first.join();
  const bool saw_done = work.WaitFirstSawDone();
  // The first handler's Context is done; the handler is not. The slot stays
  // taken: the second call is not admitted. (A broken limit admits it at
  // once; this waits a while to see that, not to pass.)
  const bool second_ran_early = PollUntil(
      [&] { return t.server().handled() >= 2; },
      PlainOrSanitized(absl::Milliseconds(300), absl::Milliseconds(600)));
  const int running_while_stubborn = t.policy().Running();
  const int queued_while_stubborn = t.policy().Queued();
  const absl::Time opened = absl::Now();
  work.Open();
  CallResult r = second.Join();
  ASSERT_TRUE(first_runs);
  ASSERT_TRUE(second_queued);
  EXPECT_TRUE(saw_done);
  EXPECT_EQ(first_status.error_code(),
            cancel_first ? grpc::StatusCode::CANCELLED
                         : grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_FALSE(second_ran_early);
  EXPECT_EQ(running_while_stubborn, 1);
  EXPECT_EQ(queued_while_stubborn, 1);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(work.max_running(), 1);
  EXPECT_EQ(t.server().handled(), 2);
  ASSERT_TRUE(PollUntil([&] { return t.policy().Running() == 0; }));
  // The first call's handling time was what its handler took (at least
  // until the gate opened), not the span of its Context: a call with less
  // budget than that is refused by the learned minimum.
  const absl::Duration first_took =
      opened - t.server().arrivals()[0].at;
  CallResult c = CallEcho(t.stub(), first_took * 3 / 4, 0);
  EXPECT_EQ(c.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << c.status.error_message();
  EXPECT_NE(c.status.error_message().find("minimum"), std::string::npos)
      << c.status.error_message();
}

TEST(ServerPolicyTest, InvalidOptionsAreRefusedByApply) {
  ServerPolicyOptions o;
  o.methods["/echo.v1.Echo/Echo"].learned_min_budget_quantile = 2;
  ServerPolicy policy(o);
  ::echo::v1::Echo::Service service;
  absl::Status s = policy.Apply(&service);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("/echo.v1.Echo/Echo"), std::string::npos);
  EXPECT_FALSE(policy.Apply(nullptr).ok());
}

TEST(ServerPolicyTest, CriticalityTrustOptionsAreValidated) {
  ServerPolicyOptions o;
  o.criticality.trust = policy::CriticalityTrust::kListedPeers;
  absl::Status s = ServerPolicy(o).Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("criticality.trusted_peers"), std::string::npos)
      << s;
  o.criticality.trusted_peers = {"127.0.0.1", "10.0.0.0/40"};
  s = ServerPolicy(o).Validate();
  EXPECT_NE(s.message().find("10.0.0.0/40"), std::string::npos) << s;
  o.criticality.trusted_peers = {"127.0.0.1", "10.0.0.0/8"};
  EXPECT_TRUE(ServerPolicy(o).Validate().ok());
  o.criticality.untrusted = static_cast<policy::Criticality>(7);
  s = ServerPolicy(o).Validate();
  EXPECT_NE(s.message().find("criticality.untrusted"), std::string::npos) << s;
}

}  // namespace
}  // namespace reqctx::testing
