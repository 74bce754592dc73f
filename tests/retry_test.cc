// Tests of the client retry/hedging helper (issue 12, section 2) against
// real servers on 127.0.0.1 that fail the first N attempts, hang, or push
// back.
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/retry.h"
#include "tests/policy_test_server.h"

namespace reqctx::testing {
namespace {

using policy::CallWithRetry;
using policy::PolicyCounter;
using policy::RetryChannelOptions;
using policy::RetryChannelState;
using policy::RetryPolicy;
using Api = PolicyTestServer::Api;

constexpr absl::Duration kBound = absl::Seconds(20);

// Fails attempts [0, n) with `code`, then sleeps work_ms.
Behavior FailFirst(int n, grpc::StatusCode code) {
  return [n, code](int index, const Context& ctx,
                   const ::echo::v1::EchoRequest& request) {
    if (index < n) return grpc::Status(code, "scripted failure");
    return SleepWork(index, ctx, request);
  };
}

// Attempts [0, n) hang until their Context is done; then OK.
Behavior HangFirst(int n) {
  return [n](int index, const Context& ctx,
             const ::echo::v1::EchoRequest& request) {
    if (index < n) {
      ctx.Done().WaitFor(absl::Seconds(60));
      return ToGrpcStatus(ctx.Err());
    }
    return SleepWork(index, ctx, request);
  };
}

struct Client {
  explicit Client(const PolicyTestServer& server) : stub(server.NewStub()) {}
  policy::RetryOutcome<::echo::v1::EchoResponse> Call(
      const Context& ctx, const RetryPolicy& p, RetryChannelState* state,
      std::vector<absl::Time>* starts = nullptr) {
    std::mutex mu;
    return CallWithRetry<::echo::v1::EchoResponse>(
        ctx, p, state,
        [&](grpc::ClientContext* cc, ::echo::v1::EchoResponse* response) {
          if (starts != nullptr) {
            std::lock_guard<std::mutex> lock(mu);
            starts->push_back(absl::Now());
          }
          ::echo::v1::EchoRequest request;
          request.set_message("hi");
          return stub->Echo(cc, request, response);
        });
  }
  std::unique_ptr<::echo::v1::Echo::Stub> stub;
};

RetryChannelOptions NoBudgetLimits() {
  RetryChannelOptions o;
  o.ratio = 1000;
  o.throttle_k = 0;
  return o;
}

TEST(RetryTest, RetriesUntilTheServerRecovers) {
  PolicyTestServer server(Api::kSync, FailFirst(2, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryChannelState state(NoBudgetLimits());
  RetryPolicy p;
  p.max_attempts = 3;
  p.initial_backoff = absl::Milliseconds(1);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
  auto out = client.Call(ctx, p, &state);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.response.message(), "hi");
  EXPECT_EQ(out.attempts, 3);
  // One trace id, a span id of its own per attempt.
  std::vector<Arrival> a = server.arrivals();
  ASSERT_EQ(a.size(), 3u);
  std::set<std::string> spans;
  for (const Arrival& x : a) {
    EXPECT_EQ(x.trace_id, a[0].trace_id);
    spans.insert(x.span_id);
  }
  EXPECT_EQ(spans.size(), 3u);
  EXPECT_EQ(state.Counters()[PolicyCounter::kRetries], 2);
  EXPECT_EQ(state.Counters()[PolicyCounter::kRetryAttempts], 3);
}

TEST(RetryTest, KeepsTheCallersTraceId) {
  PolicyTestServer server(Api::kSync, FailFirst(1, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(1);
  TraceContext tc{"0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331",
                  true};
  auto [ctx, cancel] =
      WithTimeout(WithTraceContext(Background(), tc), absl::Seconds(10));
  EXPECT_TRUE(client.Call(ctx, p, nullptr).status.ok());
  for (const Arrival& x : server.arrivals()) {
    EXPECT_EQ(x.trace_id, tc.trace_id);
    EXPECT_NE(x.span_id, tc.span_id);
  }
}

TEST(RetryTest, DoesNotRetryOtherCodes) {
  PolicyTestServer server(Api::kSync,
                          FailFirst(5, grpc::StatusCode::INVALID_ARGUMENT));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.max_attempts = 5;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
  auto out = client.Call(ctx, p, nullptr);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(out.attempts, 1);
  EXPECT_EQ(server.handled(), 1);
}

TEST(RetryTest, PerAttemptTimeoutRecoversFromAHangingServer) {
  PolicyTestServer server(Api::kSync, HangFirst(1));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.max_attempts = 3;
  p.attempt_timeout = absl::Milliseconds(200);
  p.initial_backoff = absl::Milliseconds(1);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
  const absl::Time start = absl::Now();
  auto out = client.Call(ctx, p, nullptr);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.attempts, 2);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Each attempt's deadline is the cap, not the call's 10 s.
  std::vector<Arrival> a = server.arrivals();
  ASSERT_EQ(a.size(), 2u);
  for (const Arrival& x : a) {
    ASSERT_TRUE(x.remaining.has_value());
    // grpc-timeout rounds up to the next millisecond.
    EXPECT_LE(*x.remaining, absl::Milliseconds(202));
    EXPECT_GT(*x.remaining, absl::Milliseconds(50));
  }
}

TEST(RetryTest, AttemptDeadlineKeepsTheReserve) {
  PolicyTestServer server(Api::kSync, SleepWork);
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.reserve = absl::Milliseconds(300);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(1));
  ASSERT_TRUE(client.Call(ctx, p, nullptr).status.ok());
  std::vector<Arrival> a = server.arrivals();
  ASSERT_EQ(a.size(), 1u);
  ASSERT_TRUE(a[0].remaining.has_value());
  EXPECT_LE(*a[0].remaining, absl::Milliseconds(702));  // ms rounding up.
  EXPECT_GT(*a[0].remaining, absl::Milliseconds(400));
}

TEST(RetryTest, NoAttemptStartsPastTheDeadline) {
  // Always fails, after a few ms: retries keep coming until the budget ends.
  PolicyTestServer server(
      Api::kSync, [](int, const Context& ctx, const ::echo::v1::EchoRequest&) {
        SleepFor(ctx, absl::Milliseconds(5)).IgnoreError();
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
      });
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.max_attempts = 16;
  p.initial_backoff = absl::Milliseconds(2);
  p.max_backoff = absl::Milliseconds(20);
  p.expected_latency = absl::Milliseconds(30);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(300));
  const absl::Time deadline = *ctx.Deadline();
  std::vector<absl::Time> starts;
  RetryChannelState state(NoBudgetLimits());
  auto out = client.Call(ctx, p, &state, &starts);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_GE(starts.size(), 2u);
  for (absl::Time t : starts) {
    // Every attempt started with at least the expected latency left.
    EXPECT_GE(deadline - t, p.expected_latency);
  }
  // And the call ended by its deadline (plus scheduling slack, wide for
  // sanitizers on a loaded machine; the starts above are the property).
  EXPECT_LE(absl::Now(), deadline + absl::Milliseconds(200));
  EXPECT_GE(state.Counters()[PolicyCounter::kAttemptSkippedDeadline], 1);
}

TEST(RetryTest, NoAttemptWhenTheBudgetIsBelowExpectedLatency) {
  PolicyTestServer server(Api::kSync, SleepWork);
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.expected_latency = absl::Milliseconds(500);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(100));
  auto out = client.Call(ctx, p, nullptr);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(out.attempts, 0);
  EXPECT_EQ(server.handled(), 0);
}

TEST(RetryTest, BackoffNeverSleepsPastTheDeadline) {
  PolicyTestServer server(Api::kSync,
                          FailFirst(100, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.initial_backoff = absl::Seconds(5);
  p.max_backoff = absl::Seconds(5);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(1));
  const absl::Time start = absl::Now();
  auto out = client.Call(ctx, p, nullptr);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(out.attempts, 1);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(800));  // Did not sleep.
}

TEST(RetryTest, HonorsServerPushback) {
  // The server's policy sheds with a pushback; the retry waits that long.
  policy::ServerPolicyOptions o;
  o.defaults.max_concurrency = 1;
  o.defaults.max_queue = 0;
  o.defaults.expected_handling = absl::Milliseconds(100);
  policy::ServerPolicy server_policy(o);
  PolicyTestServer server(Api::kSync, SleepWork, &server_policy);
  ASSERT_TRUE(server.ok());
  auto blocker = server.NewStub();
  std::thread busy([&] { CallEcho(*blocker, absl::Seconds(10), 300); });
  ASSERT_TRUE(server.WaitHandled(1, kBound));
  Client client(server);
  RetryPolicy p;
  p.max_attempts = 10;
  p.retryable_codes = {grpc::StatusCode::RESOURCE_EXHAUSTED};
  p.initial_backoff = absl::Milliseconds(1);
  std::vector<absl::Time> starts;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
  auto out = client.Call(ctx, p, nullptr, &starts);
  busy.join();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_GE(starts.size(), 2u);
  // The pushback (~100 ms), not the 1 ms backoff, spaced the attempts.
  EXPECT_GE(starts[1] - starts[0], absl::Milliseconds(90));
}

TEST(RetryTest, RetryBudgetCapsRetriesPerChannel) {
  PolicyTestServer server(Api::kSync,
                          FailFirst(1 << 30, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryChannelOptions o;
  o.ratio = 0.1;
  o.min_retries_per_second = 0;
  o.throttle_k = 0;
  RetryChannelState state(o);
  RetryPolicy p;
  p.max_attempts = 3;
  p.initial_backoff = absl::Microseconds(100);
  constexpr int kCalls = 50;
  for (int i = 0; i < kCalls; ++i) {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
    client.Call(ctx, p, &state);
  }
  const int64_t retries = state.Counters()[PolicyCounter::kRetries];
  EXPECT_LE(retries, kCalls / 10);
  EXPECT_GE(retries, 1);
  EXPECT_GT(state.Counters()[PolicyCounter::kRetryBudgetExhausted], 0);
  EXPECT_EQ(server.handled(), kCalls + retries);
}

TEST(RetryTest, AdaptiveThrottlingRefusesLocally) {
  PolicyTestServer server(
      Api::kSync, FailFirst(1 << 30, grpc::StatusCode::RESOURCE_EXHAUSTED));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryChannelOptions o;
  o.throttle_k = 2;
  RetryChannelState state(o);
  RetryPolicy p;
  p.max_attempts = 1;
  constexpr int kCalls = 200;
  for (int i = 0; i < kCalls; ++i) {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
    client.Call(ctx, p, &state);
  }
  // With no accepts, p = requests / (requests + 1): nearly every call after
  // the first few is refused without reaching the server.
  const int64_t throttled = state.Counters()[PolicyCounter::kThrottledLocally];
  EXPECT_GT(throttled, kCalls / 2);
  EXPECT_EQ(server.handled() + throttled, kCalls);
}

TEST(RetryTest, HedgingCancelsTheLoserAtOnce) {
  PolicyTestServer server(Api::kSync, HangFirst(1));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryChannelState state(NoBudgetLimits());
  RetryPolicy p;
  p.max_attempts = 2;
  p.hedging_delay = absl::Milliseconds(50);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
  const absl::Time start = absl::Now();
  auto out = client.Call(ctx, p, &state);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.attempts, 2);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The hanging first attempt was canceled: its handler returns.
  EXPECT_TRUE(server.WaitFinished(2, kBound));
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedges], 1);
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedgeLosersCanceled], 1);
  std::vector<Arrival> a = server.arrivals();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].trace_id, a[1].trace_id);
  EXPECT_NE(a[0].span_id, a[1].span_id);
}

TEST(RetryTest, CancelingTheContextCancelsEveryAttempt) {
  PolicyTestServer server(Api::kSync, HangFirst(100));
  ASSERT_TRUE(server.ok());
  Client client(server);
  RetryPolicy p;
  p.max_attempts = 3;
  p.hedging_delay = absl::Milliseconds(20);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  std::thread canceler([&, cancel = cancel] {
    // All three attempts are hanging on the server; then cancel.
    server.WaitHandled(3, kBound);
    cancel();
  });
  auto out = client.Call(ctx, p, nullptr);
  canceler.join();
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(out.attempts, 3);
  EXPECT_TRUE(server.WaitFinished(3, kBound));  // Every handler saw it.
}

TEST(RetryTest, SendsTheCriticality) {
  PolicyTestServer server(Api::kSync, SleepWork);
  ASSERT_TRUE(server.ok());
  Client client(server);
  auto [ctx, cancel] = WithTimeout(
      policy::WithCriticality(Background(), policy::Criticality::kSheddable),
      absl::Seconds(10));
  ASSERT_TRUE(client.Call(ctx, RetryPolicy(), nullptr).status.ok());
  ASSERT_EQ(server.arrivals().size(), 1u);
  EXPECT_EQ(server.arrivals()[0].baggage, "criticality=sheddable");
}

TEST(RetryTest, ContextDoneBeforeTheCallMakesNoAttempt) {
  PolicyTestServer server(Api::kSync, SleepWork);
  ASSERT_TRUE(server.ok());
  Client client(server);
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  auto out = client.Call(ctx, RetryPolicy(), nullptr);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(out.attempts, 0);
  EXPECT_EQ(server.handled(), 0);
}

}  // namespace
}  // namespace reqctx::testing
