// Tests of the client retry/hedging helper (issue 12, section 2) against
// real servers on 127.0.0.1 that fail the first N attempts, hang, push
// back, or answer with a scripted latency mix (the learned hedging delay).
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/retry.h"
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
  // grpc-timeout never gives the server more (client_interceptor.h).
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(192));
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
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
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

}  // namespace
}  // namespace reqctx::testing
