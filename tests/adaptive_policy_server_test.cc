// ServerPolicy's issue-23 admission on real servers, on each API (sync,
// callback, async): an adaptive limit fed by the calls it admits (a client
// cancel is no sample), criticality shares, dark mode, the run-time kill
// switch and the refusal cap. The shedder's own rules are pinned down on a
// fake clock in adaptive_shedder_test.cc; this file checks they reach every
// API.
#include <grpcpp/grpcpp.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "interceptors/policy/server_policy.h"
#include "metrics/rpc_metrics.h"
#include "tests/policy_test_server.h"

namespace reqctx::policy {
namespace {

using testing::BackgroundCall;
using testing::CallEcho;
using testing::CallResult;
using testing::OneSlot;
using testing::PollUntil;

constexpr absl::Duration kBound = testing::kPolicyWaitBound;

using AdaptivePolicyServerTest = testing::PolicedServerTest;
using AsyncArrivalTest = testing::PolicedServerTest;

TEST_P(AdaptivePolicyServerTest, AdaptiveLimitLearnsFromAdmittedCalls) {
  ServerPolicyOptions o;
  o.defaults.limit.algorithm = limits::Algorithm::kGradient;
  o.defaults.limit.gradient.bounds = {/*initial=*/8, /*min=*/2, /*max=*/64,
                                      /*warmup_samples=*/2};
  o.defaults.limit.window.min_time = absl::Milliseconds(1);
  o.defaults.limit.window.min_samples = 1;
  ASSERT_EQ(o.defaults.max_concurrency, 0);  // no number chosen
  ASSERT_TRUE(Start(o));
  // A window opens at a call's end and closes at the next call ending >= 1 ms
  // later: calls in a row make a sample every second call. The last call's
  // sample is taken as its slot is given back, just after its status went
  // out (the client may see the status first). On a loaded machine a call
  // may also end in a way that is no sample (e.g. the sync API reporting the
  // finished call as canceled): so call until 3 samples were taken, bounded.
  auto samples = [&] {
    std::optional<ShedderStats> s =
        policy().LimiterStats("/echo.v1.Echo/Echo");
    return s.has_value() ? s->inputs.samples : 0;
  };
  constexpr int kMaxCalls = 40;
  int calls = 0;
  for (; calls < kMaxCalls && samples() < 3; ++calls) {
    ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 2).status.ok());
  }
  EXPECT_TRUE(PollUntil([&] { return samples() >= 3; }))
      << samples() << " samples after " << calls << " calls";
  EXPECT_TRUE(PollUntil([&] { return policy().Running() == 0; }))
      << policy().Running() << " slots still held";
  std::optional<ShedderStats> s = policy().LimiterStats("/echo.v1.Echo/Echo");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->algorithm, "gradient");
  EXPECT_GE(s->inputs.samples, 3);
  EXPECT_GT(s->inputs.long_rtt, absl::ZeroDuration());
  EXPECT_GE(s->limit, 2);
  EXPECT_LE(s->limit, 64);
}

// Attack review: a client whose calls carry deadlines shorter than the
// method's handling time. Each is admitted (a slot is free) and ends by its
// own deadline; counted as drops they would cut an AIMD limit by 10% each
// (8 -> 1 in 20 calls). They are no samples, and do not teach the expected
// handling time either.
TEST_P(AdaptivePolicyServerTest, ShortDeadlineFloodDoesNotCollapseTheLimit) {
  ServerPolicyOptions o;
  o.defaults.expected_handling = absl::Milliseconds(200);
  o.defaults.learned_warmup = 1;
  o.defaults.limit.algorithm = limits::Algorithm::kAimd;
  o.defaults.limit.aimd.bounds = {/*initial=*/8, /*min=*/1, /*max=*/64,
                                  /*warmup_samples=*/0};
  o.defaults.limit.window.min_time = absl::Milliseconds(1);
  o.defaults.limit.window.min_samples = 1;
  ASSERT_TRUE(Start(o));
  for (int i = 0; i < 20; ++i) {
    // 20 ms of budget for 2 s of work: ends by its deadline.
    CallResult r = CallEcho(stub(), absl::Milliseconds(20), 2000);
    EXPECT_FALSE(r.status.ok());
  }
  ASSERT_TRUE(PollUntil([&] { return policy().Running() == 0; }));
  std::optional<ShedderStats> s = policy().LimiterStats("/echo.v1.Echo/Echo");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->limit, 8);
  EXPECT_EQ(s->inputs.samples, 0);
  // Real calls are samples (the first opens a window, the next closes it).
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 1).status.ok());
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 2).status.ok());
  ASSERT_TRUE(PollUntil([&] { return policy().Running() == 0; }));
  s = policy().LimiterStats("/echo.v1.Echo/Echo");
  EXPECT_GE(s->inputs.samples, 1);
  EXPECT_GE(s->limit, 8);
}

// What the limit learned of each admitted call, on every API, is counted in
// reqctx_policy_limit_samples_total{outcome} (and a drop in
// PolicyCounter::kLimitDropped): a call that completes is a success, one
// that runs into a deadline shorter than the expected (mean) handling time
// is ignored, one whose deadline covered it is a drop.
TEST_P(AdaptivePolicyServerTest, EachOutcomeIsCountedAndOnlyCoveredDeadlinesDrop) {
  ServerPolicyOptions o;
  o.defaults.learned_warmup = 1;
  o.defaults.limit.algorithm = limits::Algorithm::kAimd;
  o.defaults.limit.aimd.bounds = {/*initial=*/8, /*min=*/1, /*max=*/64,
                                  /*warmup_samples=*/0};
  ASSERT_TRUE(Start(o));
  const std::string method = "/echo.v1.Echo/Echo";
  const metrics::PolicyMethodMetrics& m = metrics::PolicyMethod(method);
  auto outcomes = [&] { return m.LimitSampleCounts(); };
  const auto before = outcomes();
  // Handling times of 100 ms: the expected handling time.
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(CallEcho(stub(), absl::Seconds(10), 100).status.ok());
  }
  // 30 ms of budget for 2 s of work: shorter than the expected handling.
  EXPECT_FALSE(CallEcho(stub(), absl::Milliseconds(30), 2000).status.ok());
  ASSERT_TRUE(PollUntil([&] { return policy().Running() == 0; }));
  EXPECT_EQ(policy().Counters()[PolicyCounter::kLimitDropped], 0);
  // 1 s of budget for 2 s of work: covered the expected handling.
  EXPECT_FALSE(CallEcho(stub(), absl::Seconds(1), 2000).status.ok());
  ASSERT_TRUE(PollUntil([&] {
    return policy().Running() == 0 &&
           policy().Counters()[PolicyCounter::kLimitDropped] == 1;
  }));
  const auto after = outcomes();
  EXPECT_EQ(after[0] - before[0], 8);  // success
  EXPECT_EQ(after[1] - before[1], 1);  // ignored: the 30 ms call
  EXPECT_EQ(after[2] - before[2], 1);  // dropped: the 1 s call
}

// A late call's budget is its budget at admission plus the time gRPC held
// it after the glue's interceptor first saw it (ClassifyEnd's `arrived`:
// admission minus that time). On the async API gRPC 1.51 runs that
// interceptor when the completion queue first delivers the request, then
// queues the request's tag again: a busy application thread (here: 250 ms
// of other work before AdmitAsync) eats the budget after the interceptor
// saw the call. A call that came with 300 ms for an expected 100 ms,
// admitted with ~50 ms and still running at its deadline, is a drop: the
// server held it too long. Measured from its admission (as before) it was
// kIgnore -- no sample, no brake. (On the sync and callback APIs the
// interceptor runs on the thread and just before the handler wrapper:
// nothing of gRPC's lies between them; see arrival_probe_test.)
TEST_P(AsyncArrivalTest, LateCallIsJudgedByTheBudgetItArrivedWith) {
  ServerPolicyOptions o;
  o.defaults.learned_warmup = 1;
  o.defaults.limit.algorithm = limits::Algorithm::kAimd;
  o.defaults.limit.aimd.bounds = {/*initial=*/8, /*min=*/1, /*max=*/64,
                                  /*warmup_samples=*/0};
  ASSERT_TRUE(Start(o));
  const metrics::PolicyMethodMetrics& m =
      metrics::PolicyMethod("/echo.v1.Echo/Echo");
  const auto before = m.LimitSampleCounts();
  // Handling times of 100 ms: the expected handling time.
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(CallEcho(stub(), absl::Seconds(10), 100).status.ok());
  }
  // The loop thread works 250 ms on something else before it admits the
  // next call (work, not a wait for an event: there is none to wait on).
  server().BeforeNextAsyncAdmit(
      [] { absl::SleepFor(absl::Milliseconds(250)); });
  // 300 ms of budget for 2 s of work.
  EXPECT_FALSE(CallEcho(stub(), absl::Milliseconds(300), 2000).status.ok());
  ASSERT_TRUE(PollUntil([&] {
    return policy().Running() == 0 &&
           policy().Counters()[PolicyCounter::kLimitDropped] == 1;
  })) << "the late call was not a drop";
  const auto after = m.LimitSampleCounts();
  EXPECT_EQ(after[0] - before[0], 8);  // success
  EXPECT_EQ(after[1] - before[1], 0);  // ignored
  EXPECT_EQ(after[2] - before[2], 1);  // dropped
}

// A call its client cancels is no sample of the limit on every API (the
// handler returns as soon as its Context ends: a fast "success" otherwise,
// which would pull the limit's latency estimates down), while the calls that
// complete still are.
TEST_P(AdaptivePolicyServerTest, ClientCancelIsNoSample) {
  ServerPolicyOptions o;
  o.defaults.limit.algorithm = limits::Algorithm::kGradient;
  o.defaults.limit.gradient.bounds = {/*initial=*/8, /*min=*/1, /*max=*/64,
                                      /*warmup_samples=*/0};
  o.defaults.limit.window.min_time = absl::Milliseconds(1);
  o.defaults.limit.window.min_samples = 1;
  ASSERT_TRUE(Start(o));
  constexpr int kCanceled = 4;
  for (int i = 0; i < kCanceled; ++i) {
    grpc::ClientContext cc;
    cc.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    ::echo::v1::EchoRequest request;
    request.set_work_ms(60000);
    ::echo::v1::EchoResponse response;
    // Shared with the callback: set_value may still touch the promise after
    // the future is ready, and this iteration's scope may end by then.
    auto done = std::make_shared<std::promise<grpc::Status>>();
    std::future<grpc::Status> status = done->get_future();
    stub().async()->Echo(&cc, &request, &response,
                         [done](grpc::Status s) { done->set_value(s); });
    ASSERT_TRUE(server().WaitHandled(i + 1, kBound));
    cc.TryCancel();
    // Bounded: the client's cancel ends the call at once.
    ASSERT_EQ(status.wait_for(absl::ToChronoSeconds(kBound)),
              std::future_status::ready);
    EXPECT_EQ(status.get().error_code(), grpc::StatusCode::CANCELLED);
    // The handler returns once its Context ends; then its slot comes back.
    ASSERT_TRUE(server().WaitFinished(i + 1, kBound));
    ASSERT_TRUE(PollUntil([&] { return policy().Running() == 0; }));
  }
  std::optional<ShedderStats> s = policy().LimiterStats("/echo.v1.Echo/Echo");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->inputs.samples, 0);
  // Calls that complete are samples (the first opens a window, the next
  // closes it).
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 1).status.ok());
  ASSERT_TRUE(CallEcho(stub(), absl::Seconds(5), 2).status.ok());
  ASSERT_TRUE(PollUntil([&] { return policy().Running() == 0; }));
  s = policy().LimiterStats("/echo.v1.Echo/Echo");
  EXPECT_GE(s->inputs.samples, 1);
}

TEST_P(AdaptivePolicyServerTest, CriticalShareRunsPastSheddableCalls) {
  ServerPolicyOptions o = OneSlot(8, absl::Milliseconds(1));
  o.defaults.max_concurrency = 2;
  o.defaults.shares = {0, 0, 0.5};  // one of two slots kept for critical
  ASSERT_TRUE(Start(o));
  BackgroundCall a(stub(), absl::Seconds(30), 2000, "criticality=sheddable");
  BackgroundCall b(stub(), absl::Seconds(30), 2000, "criticality=sheddable");
  ASSERT_TRUE(server().WaitHandled(2, kBound));
  // Both slots held by sheddable calls: a critical call still runs at once.
  CallResult critical =
      CallEcho(stub(), absl::Seconds(10), 0, "criticality=critical");
  EXPECT_TRUE(critical.status.ok()) << critical.status.error_message();
  EXPECT_LT(critical.elapsed, absl::Milliseconds(1500));
  EXPECT_EQ(policy().Counters()[PolicyCounter::kQueued], 0);
  // Another sheddable one waits for a slot.
  BackgroundCall c(stub(), absl::Seconds(30), 0, "criticality=sheddable");
  EXPECT_TRUE(PollUntil([&] { return policy().Queued() == 1; }));
  EXPECT_TRUE(a.Join().status.ok());
  EXPECT_TRUE(b.Join().status.ok());
  EXPECT_TRUE(c.Join().status.ok());
}

TEST_P(AdaptivePolicyServerTest, DarkModeCountsButRefusesNothing) {
  ServerPolicyOptions o = OneSlot(0, absl::Milliseconds(1));
  o.defaults.min_budget = absl::Seconds(3);
  o.mode = ShedMode::kDark;
  ASSERT_TRUE(Start(o));
  BackgroundCall busy(stub(), absl::Seconds(30), 1000);
  ASSERT_TRUE(server().WaitHandled(1, kBound));
  // Over the limit with no queue, and below the minimum budget: both would
  // be refused; both run.
  CallResult over = CallEcho(stub(), absl::Seconds(10), 0);
  EXPECT_TRUE(over.status.ok()) << over.status.error_message();
  CallResult short_budget = CallEcho(stub(), absl::Seconds(1), 0);
  EXPECT_TRUE(short_budget.status.ok()) << short_budget.status.error_message();
  EXPECT_TRUE(busy.Join().status.ok());
  PolicyCountersSnapshot c = policy().Counters();
  EXPECT_GE(c[PolicyCounter::kDarkDecisions], 2);
  EXPECT_EQ(c[PolicyCounter::kShedQueueFull], 0);
  EXPECT_EQ(c[PolicyCounter::kMinBudgetRejected], 0);
  EXPECT_EQ(server().handled(), 3);
}

TEST_P(AdaptivePolicyServerTest, KillSwitchTurnsEnforcementOffAtRunTime) {
  ASSERT_TRUE(Start(OneSlot(0, absl::Milliseconds(1))));
  BackgroundCall busy(stub(), absl::Seconds(30), 2000);
  ASSERT_TRUE(server().WaitHandled(1, kBound));
  EXPECT_EQ(CallEcho(stub(), absl::Seconds(10), 0).status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  policy().SetMode(ShedMode::kOff);
  EXPECT_EQ(policy().Mode(), ShedMode::kOff);
  EXPECT_TRUE(CallEcho(stub(), absl::Seconds(10), 0).status.ok());
  EXPECT_EQ(policy().LimiterStats("/echo.v1.Echo/Echo")->mode, ShedMode::kOff);
  policy().SetMode(ShedMode::kEnforce);
  EXPECT_EQ(CallEcho(stub(), absl::Seconds(10), 0).status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(busy.Join().status.ok());
  EXPECT_EQ(policy().Counters()[PolicyCounter::kShedQueueFull], 2);
  EXPECT_EQ(policy().Counters()[PolicyCounter::kDarkDecisions], 0);
}

TEST_P(AdaptivePolicyServerTest, RefusalCapBoundsTheShareRefused) {
  ServerPolicyOptions o;
  o.defaults.min_budget = absl::Seconds(3);
  o.defaults.max_refused_share = 0.5;
  o.defaults.refusal_window = absl::Hours(1);  // one window for the test
  ASSERT_TRUE(Start(o));
  int refused = 0;
  constexpr int kCalls = 6;
  for (int i = 0; i < kCalls; ++i) {
    // Every call is below the minimum budget.
    CallResult r = CallEcho(stub(), absl::Seconds(1), 0);
    if (!r.status.ok()) {
      EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
      ++refused;
    }
  }
  // Judged as they come: refusals never exceed half the arrivals so far.
  EXPECT_EQ(refused, kCalls / 2);
  PolicyCountersSnapshot c = policy().Counters();
  EXPECT_EQ(c[PolicyCounter::kMinBudgetRejected], refused);
  EXPECT_EQ(c[PolicyCounter::kRefusalsCapped], kCalls - refused);
  EXPECT_EQ(server().handled(), kCalls - refused);
}

INSTANTIATE_TEST_SUITE_P(Apis, AdaptivePolicyServerTest, testing::kAllApis,
                         testing::ApiName);
INSTANTIATE_TEST_SUITE_P(
    Async, AsyncArrivalTest,
    ::testing::Values(testing::PolicyTestServer::Api::kAsync),
    testing::ApiName);

}  // namespace
}  // namespace reqctx::policy
