// Tests of the client retry/hedging helper (issue 12, section 2) against
// real servers on 127.0.0.1 that fail the first N attempts, hang, push
// back, or answer with a scripted latency mix (the learned hedging delay).
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <optional>
#include <tuple>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/internal/grpc_timeout.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/pushback.h"
#include "interceptors/policy/retry.h"
#include "proto/echo.grpc.pb.h"
#include "tests/policy_test_server.h"
#include "tests/test_timing.h"

namespace reqctx::testing {
namespace {

using policy::CallWithRetry;
using policy::PolicyCounter;
using policy::RetryChannelOptions;
using policy::RetryChannelState;
using policy::RetryPolicy;
using Api = PolicyTestServer::Api;

constexpr absl::Duration kBound = absl::Seconds(20);
constexpr int kScale = PlainOrSanitized(1, 2);
// An attempt function reads the clock a little after CallWithRetry decided
// (with the budget rules) to start it: its start time may be this much
// later than the decision.
constexpr absl::Duration kStartSlack = absl::Milliseconds(5 * kScale * kScale);

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

// A PolicyTestServer on the sync API running `behavior` (with
// `server_policy`, if any), and a client calling it through CallWithRetry.
// Tests check ok() first (ASSERT_TRUE(rig.ok())).
class Rig {
 public:
  explicit Rig(Behavior behavior,
               policy::ServerPolicy* server_policy = nullptr)
      : server(Api::kSync, std::move(behavior), server_policy),
        stub_(server.NewStub()) {}
  bool ok() const { return server.ok(); }

  // One Echo call of `message` under `p` and ctx; the start time of each
  // attempt is appended to `starts` if given.
  policy::RetryOutcome<::echo::v1::EchoResponse> Call(
      const Context& ctx, const RetryPolicy& p, RetryChannelState* state,
      std::vector<absl::Time>* starts = nullptr,
      const std::string& message = "hi") {
    std::mutex mu;
    return CallWithRetry<::echo::v1::EchoResponse>(
        ctx, p, state,
        [&](grpc::ClientContext* cc, ::echo::v1::EchoResponse* response) {
          if (starts != nullptr) {
            std::lock_guard<std::mutex> lock(mu);
            starts->push_back(absl::Now());
          }
          ::echo::v1::EchoRequest request;
          request.set_message(message);
          return stub_->Echo(cc, request, response);
        });
  }
  // The same with a deadline `timeout` from now.
  policy::RetryOutcome<::echo::v1::EchoResponse> CallFor(
      absl::Duration timeout, const RetryPolicy& p,
      RetryChannelState* state = nullptr) {
    auto [ctx, cancel] = WithTimeout(Background(), timeout);
    return Call(ctx, p, state);
  }
  // Expects the call to have ended with `code` after `attempts` attempts,
  // and the server to have run `handled` handlers.
  void Expect(const policy::RetryOutcome<::echo::v1::EchoResponse>& out,
              grpc::StatusCode code, int attempts, int handled) const {
    EXPECT_EQ(out.status.error_code(), code) << out.status.error_message();
    EXPECT_EQ(out.attempts, attempts);
    EXPECT_EQ(server.handled(), handled);
  }

  PolicyTestServer server;

 private:
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
};

// A default policy of `n` attempts.
RetryPolicy Attempts(int n) {
  RetryPolicy p;
  p.max_attempts = n;
  return p;
}

RetryChannelOptions NoBudgetLimits() {
  RetryChannelOptions o;
  o.ratio = 1000;
  o.throttle_k = 0;
  return o;
}

TEST(RetryTest, RetriesUntilTheServerRecovers) {
  Rig rig(FailFirst(2, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(rig.ok());
  RetryChannelState state(NoBudgetLimits());
  RetryPolicy p = Attempts(3);
  p.initial_backoff = absl::Milliseconds(1);
  auto out = rig.CallFor(absl::Seconds(10), p, &state);
  rig.Expect(out, grpc::StatusCode::OK, 3, 3);
  EXPECT_EQ(out.response.message(), "hi");
  // One trace id, a span id of its own per attempt.
  std::vector<Arrival> a = rig.server.arrivals();
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
  Rig rig(FailFirst(1, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(rig.ok());
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(1);
  TraceContext tc{"0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331",
                  true};
  auto [ctx, cancel] =
      WithTimeout(WithTraceContext(Background(), tc), absl::Seconds(10));
  EXPECT_TRUE(rig.Call(ctx, p, nullptr).status.ok());
  for (const Arrival& x : rig.server.arrivals()) {
    EXPECT_EQ(x.trace_id, tc.trace_id);
    EXPECT_NE(x.span_id, tc.span_id);
  }
}

TEST(RetryTest, DoesNotRetryOtherCodes) {
  Rig rig(FailFirst(5, grpc::StatusCode::INVALID_ARGUMENT));
  ASSERT_TRUE(rig.ok());
  RetryPolicy p = Attempts(5);
  rig.Expect(rig.CallFor(absl::Seconds(10), p),
             grpc::StatusCode::INVALID_ARGUMENT, 1, 1);
}

// Each arrival's remaining deadline is in (above, at_most].
void ExpectRemaining(const std::vector<Arrival>& arrivals, size_t n,
                     absl::Duration above, absl::Duration at_most) {
  ASSERT_EQ(arrivals.size(), n);
  for (const Arrival& x : arrivals) {
    ASSERT_TRUE(x.remaining.has_value());
    EXPECT_LE(*x.remaining, at_most);
    EXPECT_GT(*x.remaining, above);
  }
}

TEST(RetryTest, PerAttemptTimeoutRecoversFromAHangingServer) {
  Rig rig(HangFirst(1));
  ASSERT_TRUE(rig.ok());
  RetryPolicy p = Attempts(3);
  p.attempt_timeout = absl::Milliseconds(200);
  p.initial_backoff = absl::Milliseconds(1);
  const absl::Time start = absl::Now();
  auto out = rig.CallFor(absl::Seconds(10), p);
  rig.Expect(out, grpc::StatusCode::OK, 2, 2);
  // The attempt's gRPC deadline: 97% of its 200 ms, less 2 ms, so that
  // grpc-timeout never gives the server more (client_interceptor.h); gRPC
  // reads its clock in whole ms (1 ms more).
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(191));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Each attempt's deadline is the cap, not the call's 10 s (grpc-timeout
  // rounds up to the next millisecond).
  ExpectRemaining(rig.server.arrivals(), 2, absl::Milliseconds(50),
                  absl::Milliseconds(202));
}

TEST(RetryTest, AttemptDeadlineKeepsTheReserve) {
  Rig rig(SleepWork);
  ASSERT_TRUE(rig.ok());
  RetryPolicy p;
  p.reserve = absl::Milliseconds(300);
  ASSERT_TRUE(rig.CallFor(absl::Seconds(1), p).status.ok());
  ExpectRemaining(rig.server.arrivals(), 1, absl::Milliseconds(400),
                  absl::Milliseconds(702));  // ms rounding up.
}

TEST(RetryTest, NoAttemptStartsPastTheDeadline) {
  // Always fails, after a few ms: retries keep coming until the budget ends.
  Rig rig([](int, const Context& ctx, const ::echo::v1::EchoRequest&) {
    SleepFor(ctx, absl::Milliseconds(5)).IgnoreError();
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  });
  ASSERT_TRUE(rig.ok());
  RetryPolicy p = Attempts(16);
  p.initial_backoff = absl::Milliseconds(2);
  p.max_backoff = absl::Milliseconds(20);
  p.expected_latency = absl::Milliseconds(30);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(300));
  const absl::Time deadline = *ctx.Deadline();
  std::vector<absl::Time> starts;
  RetryChannelState state(NoBudgetLimits());
  auto out = rig.Call(ctx, p, &state, &starts);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_GE(starts.size(), 2u);
  for (absl::Time t : starts) {
    // Every attempt started with at least the expected latency left.
    EXPECT_GE(deadline - t, p.expected_latency - kStartSlack);
  }
  // And the call ended by its deadline (plus scheduling slack, wide for
  // sanitizers on a loaded machine; the starts above are the property).
  EXPECT_LE(absl::Now(), deadline + absl::Milliseconds(200));
  EXPECT_GE(state.Counters()[PolicyCounter::kAttemptSkippedDeadline], 1);
}

TEST(RetryTest, NoAttemptWhenTheBudgetIsBelowExpectedLatency) {
  Rig rig(SleepWork);
  ASSERT_TRUE(rig.ok());
  RetryPolicy p;
  p.expected_latency = absl::Milliseconds(500);
  rig.Expect(rig.CallFor(absl::Milliseconds(100), p),
             grpc::StatusCode::DEADLINE_EXCEEDED, 0, 0);
}

TEST(RetryTest, BackoffNeverSleepsPastTheDeadline) {
  Rig rig(FailFirst(100, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(rig.ok());
  RetryPolicy p;
  p.initial_backoff = absl::Seconds(5);
  p.max_backoff = absl::Seconds(5);
  const absl::Time start = absl::Now();
  rig.Expect(rig.CallFor(absl::Seconds(1), p), grpc::StatusCode::UNAVAILABLE,
             1, 1);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(800));  // Did not sleep.
}

TEST(RetryTest, HonorsServerPushback) {
  // The server's policy sheds with a pushback; the retry waits that long.
  policy::ServerPolicyOptions o;
  o.defaults.max_concurrency = 1;
  o.defaults.max_queue = 0;
  o.defaults.expected_handling = absl::Milliseconds(100);
  policy::ServerPolicy server_policy(o);
  Rig rig(SleepWork, &server_policy);
  ASSERT_TRUE(rig.ok());
  auto blocker = rig.server.NewStub();
  std::thread busy([&] { CallEcho(*blocker, absl::Seconds(10), 300); });
  ASSERT_TRUE(rig.server.WaitHandled(1, kBound));
  RetryPolicy p = Attempts(10);
  p.retryable_codes = {grpc::StatusCode::RESOURCE_EXHAUSTED};
  p.initial_backoff = absl::Milliseconds(1);
  std::vector<absl::Time> starts;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
  auto out = rig.Call(ctx, p, nullptr, &starts);
  busy.join();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_GE(starts.size(), 2u);
  // The pushback (~100 ms), not the 1 ms backoff, spaced the attempts.
  EXPECT_GE(starts[1] - starts[0], absl::Milliseconds(90));
}

// Makes `calls` sequential calls under `p` and `state`, each with 10 s.
void CallRepeatedly(Rig& rig, int calls, const RetryPolicy& p,
                    RetryChannelState* state) {
  for (int i = 0; i < calls; ++i) rig.CallFor(absl::Seconds(10), p, state);
}

TEST(RetryTest, RetryBudgetCapsRetriesPerChannel) {
  Rig rig(FailFirst(1 << 30, grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(rig.ok());
  RetryChannelOptions o;
  o.ratio = 0.1;
  o.min_retries_per_second = 0;
  o.throttle_k = 0;
  RetryChannelState state(o);
  RetryPolicy p = Attempts(3);
  p.initial_backoff = absl::Microseconds(100);
  constexpr int kCalls = 50;
  CallRepeatedly(rig, kCalls, p, &state);
  const int64_t retries = state.Counters()[PolicyCounter::kRetries];
  EXPECT_LE(retries, kCalls / 10);
  EXPECT_GE(retries, 1);
  EXPECT_GT(state.Counters()[PolicyCounter::kRetryBudgetExhausted], 0);
  EXPECT_EQ(rig.server.handled(), kCalls + retries);
}

TEST(RetryTest, AdaptiveThrottlingRefusesLocally) {
  Rig rig(FailFirst(1 << 30, grpc::StatusCode::RESOURCE_EXHAUSTED));
  ASSERT_TRUE(rig.ok());
  RetryChannelOptions o;
  o.throttle_k = 2;
  RetryChannelState state(o);
  RetryPolicy p = Attempts(1);
  constexpr int kCalls = 200;
  CallRepeatedly(rig, kCalls, p, &state);
  // With no accepts, p = requests / (requests + 1): nearly every call after
  // the first few is refused without reaching the server.
  const int64_t throttled = state.Counters()[PolicyCounter::kThrottledLocally];
  EXPECT_GT(throttled, kCalls / 2);
  EXPECT_EQ(rig.server.handled() + throttled, kCalls);
}

// A burst of concurrent calls on a cold channel (a relay just started, or
// idle for throttle_window) is not throttled: attempts in flight are not
// refusals. Before, the n-th concurrent attempt was refused with
// probability n / (n + 1): 9 of 10 concurrent calls through a fresh echo
// relay (--retry_max_attempts=3) failed with UNAVAILABLE "throttled by the
// client" although the backend was healthy.
TEST(RetryTest, AdaptiveThrottlingAdmitsABurstOnAColdChannel) {
  RetryChannelState state;  // Default throttle_k = 2.
  constexpr int kBurst = 64;
  for (int i = 0; i < kBurst; ++i) {
    EXPECT_TRUE(state.AdmitByThrottle()) << "attempt " << i;
  }
  // Once they are known to be refused by the server, the throttle acts.
  for (int i = 0; i < kBurst; ++i) {
    state.RecordOutcome(grpc::StatusCode::UNAVAILABLE);
  }
  int refused = 0;
  for (int i = 0; i < 100; ++i) {
    if (!state.AdmitByThrottle()) {
      ++refused;
    } else {
      state.RecordOutcome(grpc::StatusCode::UNAVAILABLE);
    }
  }
  EXPECT_GT(refused, 50);
}

TEST(RetryTest, HedgingCancelsTheLoserAtOnce) {
  Rig rig(HangFirst(1));
  ASSERT_TRUE(rig.ok());
  RetryChannelState state(NoBudgetLimits());
  RetryPolicy p = Attempts(2);
  p.hedging_delay = absl::Milliseconds(50);
  const absl::Time start = absl::Now();
  auto out = rig.CallFor(absl::Seconds(10), p, &state);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.attempts, 2);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The hanging first attempt was canceled: its handler returns.
  EXPECT_TRUE(rig.server.WaitFinished(2, kBound));
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedges], 1);
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedgeLosersCanceled], 1);
  std::vector<Arrival> a = rig.server.arrivals();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].trace_id, a[1].trace_id);
  EXPECT_NE(a[0].span_id, a[1].span_id);
}

// Calls under `p` (3 attempts, hedged) against a server that hangs them
// all; once the three are on the server, cancels the call's Context, and
// expects CANCELLED and every handler to see the cancel.
void ExpectAllThreeCanceled(Rig& rig, const RetryPolicy& p) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  std::thread canceler([&, cancel = cancel] {
    rig.server.WaitHandled(3, kBound);
    cancel();
  });
  auto out = rig.Call(ctx, p, nullptr);
  canceler.join();
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(out.attempts, 3);
  EXPECT_TRUE(rig.server.WaitFinished(3, kBound));
}

TEST(RetryTest, CancelingTheContextCancelsEveryAttempt) {
  Rig rig(HangFirst(100));
  ASSERT_TRUE(rig.ok());
  RetryPolicy p = Attempts(3);
  p.hedging_delay = absl::Milliseconds(20);
  ExpectAllThreeCanceled(rig, p);
}

TEST(RetryTest, SendsTheCriticality) {
  Rig rig(SleepWork);
  ASSERT_TRUE(rig.ok());
  auto [ctx, cancel] = WithTimeout(
      policy::WithCriticality(Background(), policy::Criticality::kSheddable),
      absl::Seconds(10));
  ASSERT_TRUE(rig.Call(ctx, RetryPolicy(), nullptr).status.ok());
  ASSERT_EQ(rig.server.arrivals().size(), 1u);
  EXPECT_EQ(rig.server.arrivals()[0].baggage, "criticality=sheddable");
}

TEST(RetryTest, ContextDoneBeforeTheCallMakesNoAttempt) {
  Rig rig(SleepWork);
  ASSERT_TRUE(rig.ok());
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  rig.Expect(rig.Call(ctx, RetryPolicy(), nullptr),
             grpc::StatusCode::CANCELLED, 0, 0);
}

// ---- Hedging after a learned delay ----

TEST(LearnedHedgingDelayTest, LearnsTheQuantileAfterWarmupWithinBounds) {
  policy::LearnedHedgingOptions o;
  o.window = 100;
  o.warmup = 20;
  o.min_delay = absl::Milliseconds(3);
  o.max_delay = absl::Milliseconds(90);
  policy::LearnedHedgingDelay learned(o);
  EXPECT_DOUBLE_EQ(learned.options().quantile, 0.95);  // The default: p95.
  for (int i = 1; i < 20; ++i) learned.Record(absl::Milliseconds(i));
  EXPECT_FALSE(learned.Delay().has_value());  // 19 < warmup.
  learned.Record(absl::Milliseconds(20));
  // p95 of 1..20 ms (nearest rank 19).
  EXPECT_EQ(learned.Delay(), absl::Milliseconds(19));
  for (int i = 21; i <= 100; ++i) learned.Record(absl::Milliseconds(i));
  EXPECT_EQ(learned.Delay(), absl::Milliseconds(90));  // p95 = 95: max.
  EXPECT_EQ(learned.samples(), 100);
  // The window keeps the last 100: all 1 ms now, below min_delay.
  for (int i = 0; i < 100; ++i) learned.Record(absl::Milliseconds(1));
  EXPECT_EQ(learned.Delay(), absl::Milliseconds(3));
}

TEST(LearnedHedgingDelayTest, BadOptionsFallBackSafely) {
  policy::LearnedHedgingOptions o;
  o.quantile = std::nan("");
  o.window = 0;
  o.warmup = 0;
  o.min_delay = -absl::Seconds(1);
  o.max_delay = -absl::Seconds(2);
  policy::LearnedHedgingDelay learned(o);
  EXPECT_FALSE(learned.Delay().has_value());
  learned.Record(-absl::Milliseconds(5));
  // Window and warm-up of 1, bounds [0, 0], quantile 0.
  EXPECT_EQ(learned.Delay(), absl::ZeroDuration());
}

TEST(LearnedHedgingDelayTest, ConcurrentRecordsAndReads) {
  policy::LearnedHedgingOptions o;
  o.window = 64;
  o.warmup = 8;
  o.max_delay = absl::Seconds(10);
  policy::LearnedHedgingDelay learned(o);
  constexpr int kThreads = 4;
  constexpr int kEach = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&learned] {
      for (int i = 0; i < kEach; ++i) {
        learned.Record(absl::Milliseconds(5));
        std::optional<absl::Duration> d = learned.Delay();
        if (d.has_value()) {
          EXPECT_EQ(*d, absl::Milliseconds(5));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(learned.samples(), kThreads * kEach);
}

// A policy of `max_attempts` that hedges after a delay learned with `o`,
// its warm-up set to `warmup`.
RetryPolicy LearnedPolicy(int max_attempts, size_t warmup,
                          policy::LearnedHedgingOptions o = {}) {
  o.warmup = warmup;
  RetryPolicy p = Attempts(max_attempts);
  p.learned_hedging = std::make_shared<policy::LearnedHedgingDelay>(o);
  return p;
}

// A server whose latency the request's message picks. On a message's first
// arrival: "fast..." answers at once, "mid..." after kMid, "slow..." hangs
// until its call is canceled (bounded by the call's deadline); a cancel
// that cuts the work short is counted. Any later arrival of the same
// message (a hedge) answers at once, as a healthy replica would.
class LatencyScript {
 public:
  static constexpr absl::Duration kMid = absl::Milliseconds(100 * kScale);

  Behavior behavior() {
    return [this](int, const Context& ctx,
                  const ::echo::v1::EchoRequest& request) {
      const std::string& m = request.message();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!seen_.insert(m).second) return grpc::Status::OK;
      }
      absl::Duration work = absl::ZeroDuration();
      if (m.rfind("mid", 0) == 0) work = kMid;
      if (m.rfind("slow", 0) == 0) work = absl::InfiniteDuration();
      absl::Status s = SleepFor(ctx, work);
      if (!s.ok()) cut_short_.fetch_add(1);
      return ToGrpcStatus(s);
    };
  }
  // First attempts whose work a cancel cut short.
  int cut_short() const { return cut_short_.load(); }

 private:
  std::mutex mu_;
  std::set<std::string> seen_;  // Guarded by mu_.
  std::atomic<int> cut_short_{0};
};

// Call k's message. Per 20 calls: 16 fast, 3 mid (15%) and, from call
// `slow_from` on, 1 slow (5%; before that, fast).
std::string ScriptedMessage(int k, int slow_from) {
  const int r = k % 20;
  const char* kind = "fast";
  if (r == 5 || r == 11 || r == 17) kind = "mid";
  if (r == 19 && k >= slow_from) kind = "slow";
  return absl::StrCat(kind, "-", k);
}

TEST(RetryTest, LearnedHedgingDelayConvergesAndHedgesOnlyTheSlowCalls) {
  LatencyScript script;
  Rig rig(script.behavior());
  ASSERT_TRUE(rig.ok());
  RetryChannelState state(NoBudgetLimits());
  policy::LearnedHedgingOptions o;
  // p90 of this mix lies inside the mid cluster: fast calls are far below
  // it, slow ones (which never answer) far above.
  o.quantile = 0.9;
  o.window = 100;
  o.min_delay = absl::Milliseconds(40 * kScale);
  o.max_delay = absl::Seconds(5);
  RetryPolicy p = LearnedPolicy(2, 40, o);
  // Slow calls only once the delay is learned: unhedged, they would hang
  // until their deadline.
  const int slow_from = 40;  // The warm-up.
  constexpr int kCalls = 140;
  int hedged = 0, slow_calls = 0, slow_hedged = 0, fast_calls = 0,
      fast_hedged = 0;
  for (int k = 0; k < kCalls; ++k) {
    const std::optional<absl::Duration> delay = p.learned_hedging->Delay();
    ASSERT_EQ(delay.has_value(), k >= slow_from) << k;  // One sample a call.
    const std::string m = ScriptedMessage(k, slow_from);
    auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
    const absl::Time start = absl::Now();
    auto out = rig.Call(ctx, p, &state, nullptr, m);
    const absl::Duration took = absl::Now() - start;
    ASSERT_TRUE(out.status.ok()) << m << ": " << out.status.error_message();
    EXPECT_EQ(out.response.message(), m);
    const bool fast = m.rfind("fast", 0) == 0;
    const bool slow = m.rfind("slow", 0) == 0;
    if (delay.has_value()) {
      fast_calls += fast;
      slow_calls += slow;
    }
    if (out.attempts == 1) continue;
    ASSERT_EQ(out.attempts, 2) << m;
    // A hedge only ever fires after the delay with no answer: for a call
    // that really was slower than the delay.
    ASSERT_TRUE(delay.has_value()) << m << ": hedged before warm-up";
    EXPECT_GE(took, *delay) << m;
    ++hedged;
    slow_hedged += slow;
    fast_hedged += fast;
  }
  // Every slow call was hedged (the hedge won: each call above was OK) ...
  EXPECT_EQ(slow_calls, (kCalls - slow_from) / 20);
  EXPECT_EQ(slow_hedged, slow_calls);
  // ... and a fast one only if the machine stalled it past the delay (the
  // check above); on a quiet machine none is.
  EXPECT_LE(fast_hedged, fast_calls / 10);
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedges], hedged);
  // The losers were canceled, not left to run: every slow first attempt
  // was cut short (a hedged mid one may have finished first).
  ASSERT_TRUE(rig.server.WaitFinished(rig.server.handled(), kBound));
  EXPECT_GE(script.cut_short(), slow_hedged);
  EXPECT_LE(script.cut_short(), hedged);
  // Converged into the mid cluster (p90 of the latencies seen), far from
  // both min_delay and the hang.
  std::optional<absl::Duration> d = p.learned_hedging->Delay();
  ASSERT_TRUE(d.has_value());
  EXPECT_GE(*d, LatencyScript::kMid);
  EXPECT_LT(*d, 3 * LatencyScript::kMid);
}

TEST(RetryTest, LearnedHedgeNeverStartsPastTheDeadline) {
  Rig rig(HangFirst(100));
  ASSERT_TRUE(rig.ok());
  RetryChannelState state(NoBudgetLimits());
  RetryPolicy p = LearnedPolicy(3, 10);
  p.expected_latency = absl::Milliseconds(150);
  for (int i = 0; i < 10; ++i) {
    p.learned_hedging->Record(absl::Milliseconds(100));
  }
  ASSERT_EQ(p.learned_hedging->Delay(), absl::Milliseconds(100));
  // 200 ms of budget: at the hedge (100 ms in) less than the expected
  // 150 ms is left, so no hedge starts; the first attempt runs out.
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(200));
  const absl::Time deadline = *ctx.Deadline();
  std::vector<absl::Time> starts;
  auto out = rig.Call(ctx, p, &state, &starts);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(out.attempts, 1);
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_GE(deadline - starts[0], p.expected_latency - kStartSlack);
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedges], 0);
  EXPECT_GE(state.Counters()[PolicyCounter::kAttemptSkippedDeadline], 1);
  // The failed attempt taught it nothing.
  EXPECT_EQ(p.learned_hedging->samples(), 10);
}

TEST(RetryTest, ACanceledCallTeachesTheLearnedDelayNothing) {
  Rig rig(HangFirst(100));
  ASSERT_TRUE(rig.ok());
  RetryPolicy p = LearnedPolicy(3, 5);
  for (int i = 0; i < 5; ++i) p.learned_hedging->Record(absl::Milliseconds(20));
  // Both hedges go out after the learned 20 ms.
  ExpectAllThreeCanceled(rig, p);
  // No attempt answered OK: no latency, not even a lower bound, recorded.
  EXPECT_EQ(p.learned_hedging->samples(), 5);
}

TEST(RetryTest, BeforeWarmupTheFixedDelayOrNoHedge) {
  Rig rig(HangFirst(1));
  ASSERT_TRUE(rig.ok());
  RetryPolicy p = LearnedPolicy(2, 1000);
  p.attempt_timeout = absl::Milliseconds(300);
  // No fixed delay: not hedged; the hanging attempt is retried after its
  // attempt_timeout instead.
  const absl::Time start = absl::Now();
  auto out = rig.CallFor(absl::Seconds(10), p);
  rig.Expect(out, grpc::StatusCode::OK, 2, 2);
  // The attempt's gRPC deadline: 97% of 300 ms, less 2 ms
  // (client_interceptor.h), and gRPC reads its clock in whole ms.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(288));
  // The OK attempt's latency was learned; the timed-out one's was not.
  EXPECT_EQ(p.learned_hedging->samples(), 1);
  // A fixed delay: used until warm-up (the second call's first arrival,
  // index 2, answers at once, so make the server hang again).
  Rig hanging(HangFirst(1));
  ASSERT_TRUE(hanging.ok());
  p.hedging_delay = absl::Milliseconds(20);
  p.attempt_timeout = absl::InfiniteDuration();
  RetryChannelState state(NoBudgetLimits());
  out = hanging.CallFor(absl::Seconds(10), p, &state);
  hanging.Expect(out, grpc::StatusCode::OK, 2, 2);
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedges], 1);
  EXPECT_TRUE(hanging.server.WaitFinished(2, kBound));  // Loser canceled.
}

TEST(RetryTest, ConcurrentCallsShareOneLearnedDelay) {
  Rig rig(SleepWork);
  ASSERT_TRUE(rig.ok());
  RetryChannelState state(NoBudgetLimits());
  policy::LearnedHedgingOptions o;
  o.min_delay = absl::Seconds(5);  // Never reached: no hedges here.
  o.max_delay = absl::Seconds(5);
  RetryPolicy p = LearnedPolicy(2, 5, o);
  constexpr int kThreads = 4;
  constexpr int kEach = 10;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        if (rig.CallFor(absl::Seconds(10), p, &state).status.ok()) ++ok;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kEach);
  EXPECT_EQ(p.learned_hedging->samples(), kThreads * kEach);
  EXPECT_EQ(p.learned_hedging->Delay(), absl::Seconds(5));
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedges], 0);
}


// ---- The decision as values (no server, no clock) ----

using policy::AttemptOutcome;
using policy::DecideRetry;
using policy::Pushback;
using policy::RetryAction;
using policy::RetryCallState;
using policy::RetryPlan;
using policy::RetryReason;

TEST(PushbackTest, ParsesAsGrpcA6Says) {
  using K = Pushback::Kind;
  EXPECT_EQ(policy::ParsePushback(std::nullopt).kind, K::kNone);
  EXPECT_EQ(policy::ParsePushback("300"),
            Pushback::RetryAfter(absl::Milliseconds(300)));
  EXPECT_EQ(policy::ParsePushback("0"), Pushback::RetryAfter(absl::ZeroDuration()));
  EXPECT_EQ(policy::ParsePushback("2147483647"),
            Pushback::RetryAfter(absl::Milliseconds(2147483647)));
  // Negative or not a valid 32-bit integer: do not retry.
  for (const char* bad : {"-1", "-300", "", " 300", "300 ", "+5", "1.5", "3e2",
                          "abc", "12abc", "0x10", "2147483648",
                          "99999999999999999999", "-0x1"}) {
    EXPECT_EQ(policy::ParsePushback(bad).kind, K::kStop) << "'" << bad << "'";
  }
}

TEST(PushbackTest, FormatsWholeMillisecondsAtLeastOne) {
  EXPECT_EQ(policy::FormatPushback(absl::ZeroDuration()), "1");
  EXPECT_EQ(policy::FormatPushback(-absl::Seconds(1)), "1");
  EXPECT_EQ(policy::FormatPushback(absl::Microseconds(1200)), "2");
  EXPECT_EQ(policy::FormatPushback(absl::Milliseconds(300)), "300");
  EXPECT_EQ(policy::FormatPushback(absl::InfiniteDuration()), "2147483647");
  // What the server sends, the client reads back.
  EXPECT_EQ(policy::ParsePushback(policy::FormatPushback(absl::Hours(1000))),
            Pushback::RetryAfter(absl::Milliseconds(2147483647)));
}

TEST(DecideRetryTest, BackoffIsExponentialCappedAndJitteredByTheDraw) {
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(10);
  p.backoff_multiplier = 2;
  p.max_backoff = absl::Milliseconds(100);
  p.jitter = 0.2;
  EXPECT_EQ(policy::Backoff(p, 0, 0.5), absl::Milliseconds(10));
  EXPECT_EQ(policy::Backoff(p, 0, 0), absl::Milliseconds(8));
  EXPECT_EQ(policy::Backoff(p, 0, 1), absl::Milliseconds(12));
  EXPECT_EQ(policy::Backoff(p, 3, 0.5), absl::Milliseconds(80));
  EXPECT_EQ(policy::Backoff(p, 4, 0.5), absl::Milliseconds(100));  // Capped.
  EXPECT_EQ(policy::Backoff(p, 1000, 1), absl::Milliseconds(120));
  EXPECT_EQ(policy::Backoff(p, 0, 7), absl::Milliseconds(12));  // Clamped.
  p.backoff_multiplier = 0.5;  // Counts as 1.
  p.jitter = 5;                // Counts as 1.
  EXPECT_EQ(policy::Backoff(p, 3, 0.5), absl::Milliseconds(10));
  EXPECT_EQ(policy::Backoff(p, 3, 0), absl::ZeroDuration());
  p.initial_backoff = -absl::Seconds(1);
  EXPECT_EQ(policy::Backoff(p, 2, 0.5), absl::ZeroDuration());
}

TEST(DecideRetryTest, AttemptTimeoutIsTheSmallerOfItsOwnAndTheCallsMinusReserve) {
  RetryPolicy p;
  p.reserve = absl::Milliseconds(300);
  auto t = policy::AttemptTimeoutFor(p, absl::InfiniteDuration());
  EXPECT_EQ(t.timeout, absl::InfiniteDuration());
  EXPECT_FALSE(t.own_timer);
  p.attempt_timeout = absl::Milliseconds(200);
  t = policy::AttemptTimeoutFor(p, absl::Seconds(1));
  EXPECT_EQ(t.timeout, absl::Milliseconds(200));
  EXPECT_TRUE(t.own_timer);
  t = policy::AttemptTimeoutFor(p, absl::InfiniteDuration());  // Background.
  EXPECT_EQ(t.timeout, absl::Milliseconds(200));
  EXPECT_TRUE(t.own_timer);
  // The cap path: attempt_timeout above remaining - reserve.
  p.attempt_timeout = absl::Seconds(10);
  t = policy::AttemptTimeoutFor(p, absl::Seconds(1));
  EXPECT_EQ(t.timeout, absl::Milliseconds(700));
  EXPECT_FALSE(t.own_timer);
  p.attempt_timeout = absl::Milliseconds(700);  // Equal: the call's.
  EXPECT_FALSE(policy::AttemptTimeoutFor(p, absl::Seconds(1)).own_timer);
}

AttemptOutcome Outcome(grpc::StatusCode code, Pushback pushback = {},
                       std::optional<absl::Duration> own_timer_left = {}) {
  AttemptOutcome o;
  o.code = code;
  o.pushback = pushback;
  o.own_timer_left = own_timer_left;
  return o;
}

RetryCallState Call(int attempts, absl::Duration remaining,
                    bool hedging = false) {
  RetryCallState c;
  c.attempts_started = attempts;
  c.remaining = remaining;
  c.hedging = hedging;
  return c;
}

void ExpectPlan(const RetryPlan& plan, RetryAction action, RetryReason reason,
                absl::Duration delay = absl::ZeroDuration()) {
  EXPECT_EQ(plan.action, action);
  EXPECT_EQ(plan.reason, reason);
  EXPECT_EQ(plan.delay, delay);
}

constexpr absl::Duration kInf = absl::InfiniteDuration();
constexpr auto kUnavailable = grpc::StatusCode::UNAVAILABLE;
constexpr auto kDeadline = grpc::StatusCode::DEADLINE_EXCEEDED;

TEST(DecideRetryTest, OkAndNonRetryableCodesAreFinal) {
  RetryPolicy p = Attempts(3);
  ExpectPlan(DecideRetry(p, Outcome(grpc::StatusCode::OK), Call(1, kInf), 0.5),
             RetryAction::kFinal, RetryReason::kOk);
  ExpectPlan(DecideRetry(p, Outcome(grpc::StatusCode::INVALID_ARGUMENT),
                         Call(1, kInf), 0.5),
             RetryAction::kFinal, RetryReason::kNotRetryable);
  // Even with a pushback that says "retry", or a done Context.
  RetryCallState done = Call(1, kInf);
  done.context_done = true;
  ExpectPlan(DecideRetry(p,
                         Outcome(grpc::StatusCode::INVALID_ARGUMENT,
                                 Pushback::RetryAfter(absl::Milliseconds(1))),
                         done, 0.5),
             RetryAction::kFinal, RetryReason::kNotRetryable);
}

TEST(DecideRetryTest, DeadlineExceededOnlyWhenCutByTheAttemptsOwnTimer) {
  RetryPolicy p = Attempts(3);
  p.retryable_codes = {kUnavailable, kDeadline};  // Listed, and still:
  // No timer of its own (Background(), or the call's deadline - reserve):
  // the server's or the call's DEADLINE_EXCEEDED is final.
  ExpectPlan(DecideRetry(p, Outcome(kDeadline), Call(1, kInf), 0.5),
             RetryAction::kFinal, RetryReason::kNotRetryable);
  // A 1 s attempt timer with 999 ms left: the server said so at once.
  ExpectPlan(DecideRetry(p, Outcome(kDeadline, {}, absl::Milliseconds(999)),
                         Call(1, kInf), 0.5),
             RetryAction::kFinal, RetryReason::kNotRetryable);
  // Its own timer fired (or gRPC's, within the slack, just before it).
  for (absl::Duration left : {absl::ZeroDuration(), -absl::Milliseconds(3),
                              policy::kAttemptTimerSlack}) {
    const RetryPlan plan =
        DecideRetry(p, Outcome(kDeadline, {}, left), Call(1, kInf), 0.5);
    EXPECT_EQ(plan.action, RetryAction::kRetry) << left;
  }
  // Not listed: the same.
  p.retryable_codes = {kUnavailable};
  EXPECT_EQ(DecideRetry(p, Outcome(kDeadline, {}, absl::ZeroDuration()),
                        Call(1, kInf), 0.5)
                .action,
            RetryAction::kRetry);
}

TEST(DecideRetryTest, ContextDoneGivesTheContextsError) {
  RetryPolicy p = Attempts(3);
  RetryCallState c = Call(1, kInf);
  c.context_done = true;
  ExpectPlan(DecideRetry(p, Outcome(kUnavailable), c, 0.5),
             RetryAction::kContextDone, RetryReason::kContextDone);
  c.hedging = true;
  ExpectPlan(DecideRetry(p, Outcome(kUnavailable), c, 0.5),
             RetryAction::kContextDone, RetryReason::kContextDone);
}

TEST(DecideRetryTest, PushbackDelaysPlainAndHedgedAlike) {
  RetryPolicy p = Attempts(3);
  p.initial_backoff = absl::Milliseconds(1);
  const Pushback pb = Pushback::RetryAfter(absl::Milliseconds(300));
  for (bool hedging : {false, true}) {
    ExpectPlan(DecideRetry(p, Outcome(kUnavailable, pb),
                           Call(1, absl::Seconds(10), hedging), 0.5),
               RetryAction::kRetry, RetryReason::kPushback,
               absl::Milliseconds(300));
    // A zero pushback is "now", not the backoff.
    ExpectPlan(DecideRetry(p,
                           Outcome(kUnavailable,
                                   Pushback::RetryAfter(absl::ZeroDuration())),
                           Call(1, absl::Seconds(10), hedging), 0.5),
               RetryAction::kRetry, RetryReason::kPushback);
    // Negative or malformed: stop.
    ExpectPlan(DecideRetry(p, Outcome(kUnavailable, Pushback::Stop()),
                           Call(1, absl::Seconds(10), hedging), 0.5),
               RetryAction::kNoMore, RetryReason::kPushbackStop);
    // Longer than max_pushback: stop rather than hold the call.
    ExpectPlan(DecideRetry(p,
                           Outcome(kUnavailable,
                                   Pushback::RetryAfter(absl::Seconds(31))),
                           Call(1, kInf, hedging), 0.5),
               RetryAction::kNoMore, RetryReason::kPushbackTooLong);
    // Past the deadline: stop at once, no wait.
    ExpectPlan(DecideRetry(p, Outcome(kUnavailable, pb),
                           Call(1, absl::Milliseconds(250), hedging), 0.5),
               RetryAction::kNoMore, RetryReason::kNoTimeLeft);
  }
}

TEST(DecideRetryTest, WithoutPushbackBackoffOrAtOnceWhenHedging) {
  RetryPolicy p = Attempts(3);
  p.initial_backoff = absl::Milliseconds(10);
  p.jitter = 0.2;
  RetryCallState c = Call(1, absl::Seconds(10));
  c.backoff_step = 2;
  ExpectPlan(DecideRetry(p, Outcome(kUnavailable), c, 0.25),
             RetryAction::kRetry, RetryReason::kBackoff,
             policy::Backoff(p, 2, 0.25));
  c.hedging = true;
  ExpectPlan(DecideRetry(p, Outcome(kUnavailable), c, 0.25),
             RetryAction::kRetry, RetryReason::kBackoff);
  // The last attempt: no more.
  ExpectPlan(DecideRetry(p, Outcome(kUnavailable), Call(3, kInf), 0.5),
             RetryAction::kNoMore, RetryReason::kMaxAttempts);
  // Expected latency and reserve count after the wait.
  p.expected_latency = absl::Milliseconds(50);
  p.reserve = absl::Milliseconds(20);
  p.jitter = 0;
  EXPECT_EQ(DecideRetry(p, Outcome(kUnavailable), Call(1, absl::Milliseconds(60)),
                        0.5)
                .action,
            RetryAction::kRetry);  // 50 ms left after 10 ms.
  ExpectPlan(DecideRetry(p, Outcome(kUnavailable),
                         Call(1, absl::Milliseconds(59)), 0.5),
             RetryAction::kNoMore, RetryReason::kNoTimeLeft);
}

// ---- Against a scripted server: pushback, DEADLINE_EXCEEDED, cancel ----

// A one-shot event to wait on (bounded), or until a Context is done.
class Event {
 public:
  void Set() {
    std::lock_guard<std::mutex> lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool WaitFor(absl::Duration bound) { return WaitOrDone(Context(), bound); }
  // Waits until Set(), `ctx` is done or `bound` passed; true if Set().
  bool WaitOrDone(const Context& ctx, absl::Duration bound) {
    AfterFuncHandle wake = AfterFunc(ctx, [this] {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(bound),
                        [&] { return set_ || ctx.IsDone(); }) &&
           set_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

// What the scripted server answers to the call with index `n`.
struct Reply {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::optional<std::string> pushback;  // grpc-retry-pushback-ms, if any.
  Event* wait_for = nullptr;  // Answers only once it is set (or the call's
                              // Context is done: then with its error).
};
using Script = std::function<Reply(int n)>;

// An echo.v1.Echo server on 127.0.0.1 answering by `script`, recording when
// each call arrived (its receive timestamp).
class ScriptedServer final : public ::echo::v1::Echo::Service {
 public:
  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(this);
    InstallServerInterceptors(builder);
    server_ = builder.BuildAndStart();
    if (port_ == 0) server_.reset();
  }
  ~ScriptedServer() override {
    if (server_ != nullptr) server_->Shutdown();  // Waits for the handlers.
    // Orders their last writes (each ends under mu_) before the members'
    // destruction for TSan, which cannot see gRPC's own synchronisation.
    std::lock_guard<std::mutex> lock(mu_);
  }
  bool ok() const { return server_ != nullptr; }
  std::unique_ptr<::echo::v1::Echo::Stub> NewStub() const {
    return ::echo::v1::Echo::NewStub(
        CreateChannel(absl::StrCat("127.0.0.1:", port_),
                      grpc::InsecureChannelCredentials()));
  }
  std::vector<absl::Time> arrivals() const {
    std::lock_guard<std::mutex> lock(mu_);
    return arrivals_;
  }
  // Per call: the time its Context had left when it arrived (nullopt: no
  // deadline).
  std::vector<std::optional<absl::Duration>> remaining() const {
    std::lock_guard<std::mutex> lock(mu_);
    return remaining_;
  }

  grpc::Status Echo(grpc::ServerContext* sc,
                    const ::echo::v1::EchoRequest* request,
                    ::echo::v1::EchoResponse* response) override {
    const absl::Time at = absl::Now();
    Context ctx = FromServerContext(sc);
    Reply reply;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const int n = static_cast<int>(arrivals_.size());
      arrivals_.push_back(at);
      remaining_.push_back(ctx.TimeLeft());
      reply = script_(n);
    }
    if (reply.wait_for != nullptr) {
      // Until the test sets the event, or the call's deadline or cancel
      // ends its Context (bounded by kBound at worst).
      if (!reply.wait_for->WaitOrDone(ctx, kBound) && ctx.IsDone()) {
        std::lock_guard<std::mutex> lock(mu_);  // See the destructor.
        return ToGrpcStatus(ctx.Err());
      }
    }
    if (reply.pushback.has_value()) {
      sc->AddTrailingMetadata(policy::kRetryPushbackHeader, *reply.pushback);
    }
    response->set_message(request->message());
    std::lock_guard<std::mutex> lock(mu_);  // See the destructor.
    return grpc::Status(reply.code, reply.code == grpc::StatusCode::OK
                                        ? ""
                                        : "scripted");
  }

 private:
  Script script_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  mutable std::mutex mu_;
  std::vector<absl::Time> arrivals_;  // Guarded by mu_.
  std::vector<std::optional<absl::Duration>> remaining_;  // Guarded by mu_.
};

// One Echo call through CallWithRetry; `on_return(n)`, if set, runs right
// after attempt n returned.
policy::RetryOutcome<::echo::v1::EchoResponse> CallScripted(
    ::echo::v1::Echo::Stub& stub, const Context& ctx, const RetryPolicy& p,
    RetryChannelState* state = nullptr,
    const std::function<void(int)>& on_return = nullptr) {
  std::atomic<int> next{0};
  return CallWithRetry<::echo::v1::EchoResponse>(
      ctx, p, state,
      [&](grpc::ClientContext* cc, ::echo::v1::EchoResponse* response) {
        const int n = next++;
        ::echo::v1::EchoRequest request;
        request.set_message("hi");
        grpc::Status s = stub.Echo(cc, request, response);
        if (on_return) on_return(n);
        return s;
      });
}

// A policy retrying RESOURCE_EXHAUSTED, hedged after `hedging_delay` or not.
RetryPolicy ShedRetries(int attempts,
                        std::optional<absl::Duration> hedging_delay) {
  RetryPolicy p = Attempts(attempts);
  p.retryable_codes = {grpc::StatusCode::RESOURCE_EXHAUSTED,
                       grpc::StatusCode::UNAVAILABLE};
  p.initial_backoff = absl::Milliseconds(1);
  p.max_backoff = absl::Milliseconds(1);
  p.hedging_delay = hedging_delay;
  return p;
}

class RetryModeTest : public ::testing::TestWithParam<bool> {
 protected:
  // Hedged, or plain retries. The hedging timer never fires in these
  // tests: the further attempts follow the failed ones (and their
  // pushback), never a timer that fired before a pushback arrived on a
  // loaded machine (PushbackHoldsTheHedgingTimerToo covers the timer).
  std::optional<absl::Duration> HedgingDelay() const {
    return GetParam() ? std::optional(absl::Hours(1)) : std::nullopt;
  }
};

INSTANTIATE_TEST_SUITE_P(PlainAndHedged, RetryModeTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "Hedged" : "Plain";
                         });

constexpr absl::Duration kPushback = absl::Milliseconds(300);
// Generous upper bounds (a loaded 2-core machine, sanitizers): far above
// what the tests take, far below the waits they tell apart.
constexpr absl::Duration kLate = absl::Seconds(20);

TEST_P(RetryModeTest, PushbackSpacesTheNextAttempts) {
  ScriptedServer server([](int n) {
    Reply r;
    if (n < 2) {
      r.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      r.pushback = "300";
    }
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryChannelState state(NoBudgetLimits());
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  auto out = CallScripted(*stub, ctx, ShedRetries(3, HedgingDelay()), &state);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.attempts, 3);
  const std::vector<absl::Time> a = server.arrivals();
  ASSERT_EQ(a.size(), 3u);
  for (size_t i = 1; i < a.size(); ++i) {
    // The server's receive times: no attempt before the pushback ended.
    EXPECT_GE(a[i] - a[i - 1], kPushback) << i;
    EXPECT_LT(a[i] - a[i - 1], kPushback + kLate) << i;
  }
}

TEST(RetryTest, BackoffRestartsFromInitialAfterAPushback) {
  // UNAVAILABLE; then with pushback "0"; then without; then OK. Backoff
  // 100 ms x 300^n, no jitter: 100 ms, the pushback's 0 ms, then 100 ms
  // again (gRFC A6), not 30 s or more.
  ScriptedServer server([](int n) {
    Reply r;
    if (n < 3) r.code = grpc::StatusCode::UNAVAILABLE;
    if (n == 1) r.pushback = "0";
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryPolicy p = Attempts(4);
  p.initial_backoff = absl::Milliseconds(100);
  p.backoff_multiplier = 300;
  p.max_backoff = absl::Seconds(60);
  p.jitter = 0;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(180));
  auto out = CallScripted(*stub, ctx, p);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  const std::vector<absl::Time> a = server.arrivals();
  ASSERT_EQ(a.size(), 4u);
  EXPECT_GE(a[1] - a[0], absl::Milliseconds(100));
  EXPECT_GE(a[3] - a[2], absl::Milliseconds(100));
  EXPECT_LT(a[3] - a[2], kLate);
}

TEST(RetryTest, PushbackHoldsTheHedgingTimerToo) {
  // Attempt 0 hangs; the hedge (after D) is shed with a pushback of 2 D;
  // the next hedge waits for the pushback although the timer (D after the
  // hedge) says go. D is generous, so the shed reply is back before the
  // timer fires (checked below: if it were not, the timer firing first
  // would be right, and the test says so instead of passing by luck).
  constexpr absl::Duration kD =
      PlainOrSanitized(absl::Milliseconds(200), absl::Milliseconds(600));
  const std::string pushback = absl::StrCat(absl::ToInt64Milliseconds(2 * kD));
  Event release;
  ScriptedServer server([&](int n) {
    Reply r;
    if (n == 0) r.wait_for = &release;
    if (n == 1) {
      r.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      r.pushback = pushback;
    }
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryChannelState state(NoBudgetLimits());
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  std::mutex mu;
  absl::Time returned1;  // Guarded by mu.
  auto out = CallScripted(*stub, ctx, ShedRetries(3, kD), &state, [&](int n) {
    std::lock_guard<std::mutex> lock(mu);
    if (n == 1) returned1 = absl::Now();
  });
  release.Set();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.attempts, 3);
  const std::vector<absl::Time> a = server.arrivals();
  ASSERT_EQ(a.size(), 3u);
  std::lock_guard<std::mutex> lock(mu);
  if (returned1 - a[1] >= kD) {
    GTEST_SKIP() << "the shed reply took " << returned1 - a[1]
                 << ", longer than the hedging delay";
  }
  EXPECT_GE(a[2] - a[1], 2 * kD);
  EXPECT_LT(a[2] - a[1], 2 * kD + kLate);
  EXPECT_EQ(state.Counters()[PolicyCounter::kHedgeLosersCanceled], 1);
}

TEST_P(RetryModeTest, NegativeOrMalformedPushbackStops) {
  for (const char* value : {"-1", "soon", ""}) {
    ScriptedServer server([&](int) {
      Reply r;
      r.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      r.pushback = value;
      return r;
    });
    ASSERT_TRUE(server.ok());
    auto stub = server.NewStub();
    auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
    auto out = CallScripted(*stub, ctx, ShedRetries(3, HedgingDelay()));
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << value;
    EXPECT_EQ(out.attempts, 1) << value;
    EXPECT_EQ(server.arrivals().size(), 1u) << value;
  }
}

TEST(RetryTest, NegativePushbackLetsTheRunningHedgeFinish) {
  // Attempt 0 is slow; the hedge is shed with "-1": attempt 0 is not
  // canceled and answers the call (2 attempts at most: a hedging timer that
  // fired before the "-1" arrived on a loaded machine would be right to
  // start a third; NegativeOrMalformedPushbackStops shows the stop).
  Event release;
  ScriptedServer server([&](int n) {
    Reply r;
    if (n == 0) r.wait_for = &release;
    if (n >= 1) {
      r.code = grpc::StatusCode::UNAVAILABLE;
      r.pushback = "-1";
    }
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  auto out = CallScripted(*stub, ctx, ShedRetries(2, absl::Milliseconds(20)),
                          nullptr, [&](int n) {
                            if (n == 1) release.Set();
                          });
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.attempts, 2);
  EXPECT_EQ(server.arrivals().size(), 2u);
}

// The server returns DEADLINE_EXCEEDED at once, to every attempt.
class ServerDeadlineTest
    : public ::testing::TestWithParam<std::tuple<bool, absl::Duration>> {};

INSTANTIATE_TEST_SUITE_P(
    ContextAndAttemptTimeout, ServerDeadlineTest,
    ::testing::Combine(::testing::Bool(),
                       ::testing::Values(absl::InfiniteDuration(),
                                         absl::Seconds(30))));

TEST_P(ServerDeadlineTest, ServerDeadlineExceededIsNotRetried) {
  const auto [with_deadline, attempt_timeout] = GetParam();
  ScriptedServer server([](int) {
    Reply r;
    r.code = grpc::StatusCode::DEADLINE_EXCEEDED;
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  for (bool hedged : {false, true}) {
    RetryPolicy p = Attempts(3);
    p.initial_backoff = absl::Milliseconds(1);
    p.attempt_timeout = attempt_timeout;
    p.retryable_codes = {kUnavailable, kDeadline};
    if (hedged) p.hedging_delay = absl::Seconds(10);
    auto [ctx, cancel] = with_deadline
                             ? WithTimeout(Background(), absl::Seconds(120))
                             : WithCancel(Background());
    const size_t before = server.arrivals().size();
    auto out = CallScripted(*stub, ctx, p);
    EXPECT_EQ(out.status.error_code(), kDeadline) << hedged;
    EXPECT_EQ(out.attempts, 1) << hedged;
    EXPECT_EQ(server.arrivals().size() - before, 1u) << hedged;
  }
}

TEST(RetryTest, AttemptTimerDeadlineIsRetriedWithoutACallDeadline) {
  Event never;
  ScriptedServer server([&](int n) {
    Reply r;
    if (n == 0) r.wait_for = &never;  // Until the attempt's 200 ms cut it.
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryPolicy p = Attempts(8);
  p.attempt_timeout = absl::Milliseconds(200);
  p.initial_backoff = absl::Milliseconds(1);
  const absl::Time start = absl::Now();
  auto out = CallScripted(*stub, Background(), p);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  // 2, unless a loaded machine let the 200 ms cut a later attempt too.
  EXPECT_GE(out.attempts, 2);
  const std::vector<absl::Time> a = server.arrivals();
  ASSERT_GE(a.size(), 2u);
  // The retry came after attempt 0's timer, which started after `start`
  // (gRPC enforces the attempt's deadline less what the client interceptor
  // keeps back for grpc-timeout's encoding: client_interceptor.h).
  EXPECT_GE(a[1] - start,
            internal::OutboundGrpcTimeout(absl::Milliseconds(200)) -
                absl::Milliseconds(1));
}

TEST(RetryTest, CappedAttemptEndsAtTheCallsDeadlineMinusReserve) {
  // attempt_timeout (10 s) above remaining - reserve (1 s - 300 ms): the
  // attempt gets 700 ms, and its DEADLINE_EXCEEDED is the call's: final.
  Event never;
  ScriptedServer server([&](int) {
    Reply r;
    r.wait_for = &never;
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryPolicy p = Attempts(3);
  p.attempt_timeout = absl::Seconds(10);
  p.reserve = absl::Milliseconds(300);
  p.retryable_codes = {kUnavailable, kDeadline};
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(1));
  const absl::Time start = absl::Now();
  auto out = CallScripted(*stub, ctx, p);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(out.status.error_code(), kDeadline);
  EXPECT_EQ(out.attempts, 1);
  // The server saw the 700 ms (grpc-timeout rounds up to the millisecond),
  // not the 10 s nor the call's 1 s.
  const auto remaining = server.remaining();
  ASSERT_EQ(remaining.size(), 1u);
  ASSERT_TRUE(remaining[0].has_value());
  EXPECT_LE(*remaining[0], absl::Milliseconds(702));
  EXPECT_GE(took, internal::OutboundGrpcTimeout(absl::Milliseconds(700)) -
                      absl::Milliseconds(10));
  EXPECT_LT(took, kLate);
}

TEST_P(RetryModeTest, CancelDuringTheWaitReturnsCancelledAtOnce) {
  // Attempt 0 fails; the wait before attempt 1 is 60 s (backoff, or the
  // server's pushback when hedging); the test cancels during it.
  ScriptedServer server([&](int) {
    Reply r;
    r.code = grpc::StatusCode::UNAVAILABLE;
    if (GetParam()) r.pushback = "60000";
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryPolicy p = ShedRetries(3, HedgingDelay());
  p.initial_backoff = absl::Seconds(60);
  p.max_backoff = absl::Seconds(60);
  p.max_pushback = absl::Seconds(60);
  p.jitter = 0;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(300));
  Event returned;
  absl::Time canceled_at;
  std::thread canceler([&, cancel = cancel] {
    ASSERT_TRUE(returned.WaitFor(kBound));
    canceled_at = absl::Now();
    cancel();
  });
  auto out = CallScripted(*stub, ctx, p, nullptr, [&](int n) {
    if (n == 0) returned.Set();
  });
  const absl::Time end = absl::Now();
  canceler.join();
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED)
      << out.status.error_message();
  EXPECT_EQ(out.attempts, 1);
  EXPECT_EQ(server.arrivals().size(), 1u);
  EXPECT_LT(end - canceled_at, kLate);  // Not the 60 s wait.
}

TEST_P(RetryModeTest, CancelAtAnyPointEndsTheCallPromptly) {
  // Attempts fail fast with a 3 ms pushback, or hang (every third); the
  // call is canceled after 0, 1, 2, ... ms (a spread of cancel points,
  // not a synchronisation): during an attempt, a pushback wait or between
  // hedges. It always ends promptly, with CANCELLED.
  ScriptedServer server([](int n) {
    static Event never;
    Reply r;
    r.code = grpc::StatusCode::UNAVAILABLE;
    r.pushback = "3";
    if (n % 3 == 2) r.wait_for = &never;
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryPolicy p = ShedRetries(16, HedgingDelay());
  if (GetParam()) p.hedging_delay = absl::Milliseconds(2);
  constexpr int kCalls = PlainOrSanitized(20, 10);
  for (int i = 0; i < kCalls; ++i) {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(120));
    absl::Time canceled_at;
    std::thread canceler([&, cancel = cancel] {
      SleepFor(Background(), absl::Microseconds(1000 * i)).IgnoreError();
      canceled_at = absl::Now();
      cancel();
    });
    auto out = CallScripted(*stub, ctx, p);
    const absl::Time end = absl::Now();
    canceler.join();
    // Attempt 2 hangs until the cancel: no call ends before it.
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED)
        << i << ": " << out.status.error_message();
    EXPECT_LT(end - canceled_at, kLate) << i;
  }
}

TEST(RetryTest, DeadlineWhileHedgesRunReturnsDeadlineExceeded) {
  // Every attempt hangs; the call's 300 ms deadline ends it.
  Event never;
  ScriptedServer server([&](int) {
    Reply r;
    r.wait_for = &never;
    return r;
  });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  RetryPolicy p = Attempts(3);
  p.hedging_delay = absl::Milliseconds(50);
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  auto out = CallScripted(*stub, ctx, p);
  EXPECT_EQ(out.status.error_code(), kDeadline) << out.status.error_message();
  EXPECT_GE(out.attempts, 1);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(300) + kLate);
}

}  // namespace
}  // namespace reqctx::testing
