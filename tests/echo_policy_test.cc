// End-to-end tests of the production policies on the echo service (issue
// 12): a frontend -> middle -> backend chain of in-process servers on
// 127.0.0.1 configured through EchoServerOptions (what the server flags
// set), observed through the Stats RPC's policy_counts.
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/criticality.h"
#include "limits/limit_options.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "tests/echo_chain.h"

namespace reqctx::testing {
namespace {

using echo::EchoServer;
using echo::EchoServerOptions;

struct PolicyChain {
  std::unique_ptr<EchoServer> backend, middle, frontend;
};

// Starts backend, middle, frontend with the given per-hop options (name and
// next are filled in). Returns false if any fails to start.
bool StartChain(EchoServerOptions back, EchoServerOptions mid,
                EchoServerOptions front, PolicyChain* chain) {
  back.name = "backend";
  auto b = EchoServer::Start(back);
  if (!b.ok()) return false;
  chain->backend = std::move(*b);
  mid.name = "middle";
  mid.next = chain->backend->address();
  auto m = EchoServer::Start(mid);
  if (!m.ok()) return false;
  chain->middle = std::move(*m);
  front.name = "frontend";
  front.next = chain->middle->address();
  auto f = EchoServer::Start(front);
  if (!f.ok()) return false;
  chain->frontend = std::move(*f);
  return true;
}

struct Result {
  grpc::Status status;
  ::echo::v1::EchoResponse response;
};

// One Echo call to `server` under `parent`, with a deadline `timeout` from
// now (none if infinite), `work_ms` of work and criticality `c`.
Result CallIn(const Context& parent, const EchoServer& server,
              absl::Duration timeout, int64_t work_ms,
              policy::Criticality c = policy::Criticality::kDefault) {
  auto stub = NewStub(server);
  Context ctx = policy::WithCriticality(parent, c);
  CancelFunc cancel;
  if (timeout != absl::InfiniteDuration()) {
    std::tie(ctx, cancel) = WithTimeout(ctx, timeout);
  }
  ::echo::v1::EchoRequest request;
  request.set_message("policy");
  request.set_work_ms(work_ms);
  Result r;
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  policy::PropagateCriticality(ctx, cc.get());
  r.status = stub->Echo(cc.get(), request, &r.response);
  return r;
}

Result Call(const EchoServer& server, absl::Duration timeout, int64_t work_ms,
            policy::Criticality c = policy::Criticality::kDefault) {
  return CallIn(Background(), server, timeout, work_ms, c);
}

// The server's policy counts, read through its Stats RPC.
int64_t Count(const EchoServer& server, const std::string& name) {
  auto stub = NewStub(server);
  grpc::ClientContext cc;
  cc.set_deadline(absl::ToChronoTime(absl::Now() + kWaitBound));
  ::echo::v1::StatsResponse s;
  if (!stub->Stats(&cc, ::echo::v1::StatsRequest(), &s).ok()) return -1;
  auto it = s.policy_counts().find(name);
  return it == s.policy_counts().end() ? 0 : it->second;
}

bool PollUntil(const std::function<bool()>& done) {
  const absl::Time end = absl::Now() + kWaitBound;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

TEST(EchoPolicyTest, MinimumBudgetRefusesAtTheRightHop) {
  EchoServerOptions back;
  back.server_policy.defaults.min_budget = absl::Seconds(3);
  PolicyChain chain;
  ASSERT_TRUE(StartChain(back, {}, {}, &chain));
  Result r = Call(*chain.frontend, absl::Seconds(2), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Count(*chain.backend, "min_budget_rejected"), 1);
  EXPECT_EQ(Count(*chain.middle, "min_budget_rejected"), 0);
  EXPECT_EQ(Count(*chain.frontend, "min_budget_rejected"), 0);
  EXPECT_EQ(chain.backend->stats().Get().started_total, 0);  // Never ran.
  EXPECT_EQ(chain.middle->stats().Get().started_total, 1);
  // With enough budget the chain works.
  EXPECT_TRUE(Call(*chain.frontend, absl::Seconds(10), 0).status.ok());
}

TEST(EchoPolicyTest, ReplyMarginShrinksEveryHop) {
  EchoServerOptions o;
  o.server_policy.defaults.reply_margin = absl::Milliseconds(200);
  PolicyChain chain;
  ASSERT_TRUE(StartChain(o, o, o, &chain));
  Result r = Call(*chain.frontend, absl::Seconds(5), 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.response.hops_size(), 3);
  const int64_t f = r.response.hops(0).deadline_remaining_ms();
  const int64_t m = r.response.hops(1).deadline_remaining_ms();
  const int64_t b = r.response.hops(2).deadline_remaining_ms();
  EXPECT_LE(f, 4800 + 10);  // grpc-timeout rounds up (10 ms above 1 s).
  // Each hop: the margin, within the rounding and a little handling time,
  // plus what each hop keeps back so that grpc-timeout's encoding never
  // gives the next hop more than it has (client_interceptor.h: up to 3% +
  // 10 ms + 2 ms here).
  auto kept_back = [](int64_t left) { return left * 3 / 100 + 10 + 2; };
  EXPECT_GE(f - m, 200 - 10);
  EXPECT_LE(f - m, 200 + kept_back(f) + 100);
  EXPECT_GE(m - b, 200 - 50);
  EXPECT_LE(m - b, 200 + kept_back(m) + 100);
  EXPECT_EQ(Count(*chain.backend, "reply_margin_applied"), 1);
}

TEST(EchoPolicyTest, DefaultDeadlineAtTheFrontendReachesEveryHop) {
  EchoServerOptions front;
  front.server_policy.defaults.default_deadline = absl::Seconds(2);
  PolicyChain chain;
  ASSERT_TRUE(StartChain({}, {}, front, &chain));
  Result r = Call(*chain.frontend, absl::InfiniteDuration(), 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  for (const auto& hop : r.response.hops()) {
    EXPECT_GE(hop.deadline_remaining_ms(), 0) << hop.service();
    // Each hop converts the deadline between gRPC's clocks: on a loaded
    // machine that can read a little over the default.
    EXPECT_LE(hop.deadline_remaining_ms(), 2000 + 100) << hop.service();
  }
  EXPECT_EQ(Count(*chain.frontend, "deadline_defaulted"), 1);
}

TEST(EchoPolicyTest, CriticalityTravelsToTheBackendsShedder) {
  EchoServerOptions back;
  back.server_policy.defaults.max_concurrency = 1;
  back.server_policy.defaults.max_queue = 1;
  PolicyChain chain;
  ASSERT_TRUE(StartChain(back, {}, {}, &chain));
  // Occupy the backend's only slot until the test lets it go (no timing
  // window: on a loaded machine the calls below may take long to arrive).
  auto [busy_ctx, stop_busy] = WithCancel(Background());
  std::thread busy([&, busy_ctx = busy_ctx] {
    CallIn(busy_ctx, *chain.backend, kWaitBound, 60'000);
  });
  ASSERT_TRUE(chain.backend->stats().WaitUntil(
      [](const echo::EchoStats::Snapshot& s) { return s.active_requests == 1; },
      kWaitBound));
  // A sheddable call through the chain waits in the backend's queue...
  Result sheddable;
  std::thread queued([&] {
    sheddable = Call(*chain.frontend, kWaitBound, 0,
                     policy::Criticality::kSheddable);
  });
  EXPECT_TRUE(PollUntil([&] { return Count(*chain.backend, "queued") == 1; }));
  // ...until a critical one evicts it: the backend saw "sheddable" two hops
  // away from the client that set it. The critical call then waits for the
  // slot, which the busy call gives back once the eviction happened.
  Result critical;
  std::thread critical_call([&] {
    critical = Call(*chain.backend, kWaitBound, 0,
                    policy::Criticality::kCritical);
  });
  EXPECT_TRUE(
      PollUntil([&] { return Count(*chain.backend, "shed_evicted") == 1; }));
  stop_busy();
  critical_call.join();
  queued.join();
  busy.join();
  EXPECT_TRUE(critical.status.ok()) << critical.status.error_message();
  EXPECT_EQ(sheddable.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << sheddable.status.error_message();
  EXPECT_EQ(Count(*chain.backend, "shed_evicted"), 1);
  EXPECT_EQ(Count(*chain.backend, "shed_sheddable"), 1);
}

TEST(EchoPolicyTest, MiddleRetriesAnUnavailableBackend) {
  // The middle's next hop is a port nobody listens on.
  EchoServerOptions mid;
  mid.name = "middle";
  mid.next = "127.0.0.1:1";
  mid.retry.max_attempts = 3;
  mid.retry.initial_backoff = absl::Milliseconds(1);
  // No adaptive throttling: with no call accepted yet it would refuse a
  // retry at random (p = requests / (requests + 1)).
  mid.retry_channel.throttle_k = 0;
  auto middle = EchoServer::Start(mid);
  ASSERT_TRUE(middle.ok());
  Result r = Call(**middle, absl::Seconds(10), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Count(**middle, "retry_attempts"), 3);
  EXPECT_EQ(Count(**middle, "retries"), 2);
}

// An adaptive limit alone (no concurrency number) switches the policy on:
// the server sheds by it, and its calls feed it.
TEST(EchoPolicyTest, AdaptiveLimitAloneIsEnforced) {
  EchoServerOptions o;
  o.server_policy.defaults.max_concurrency = 0;
  o.server_policy.defaults.limit.algorithm = limits::Algorithm::kVegas;
  o.server_policy.defaults.limit.window.min_time = absl::Milliseconds(1);
  o.server_policy.defaults.limit.window.min_samples = 1;
  auto server = EchoServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Call(**server, absl::Seconds(10), 1).status.ok());
  }
  std::optional<policy::ShedderStats> s;
  ASSERT_TRUE(PollUntil([&] {
    s = (*server)->server_policy().LimiterStats("/echo.v1.Echo/Echo");
    return s.has_value() && s->running == 0 && s->inputs.samples >= 1;
  })) << (s.has_value() ? s->inputs.samples : -1);
  EXPECT_EQ(s->algorithm, "vegas");
  EXPECT_EQ(Count(**server, "admitted"), 3);
}

TEST(EchoPolicyTest, InvalidPolicyFailsStart) {
  EchoServerOptions o;
  o.server_policy.defaults.learned_min_budget_quantile = -1;
  auto s = EchoServer::Start(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("learned_min_budget_quantile"),
            std::string::npos);
  EchoServerOptions r;
  r.retry.max_attempts = 0;
  EXPECT_FALSE(EchoServer::Start(r).ok());
}

}  // namespace
}  // namespace reqctx::testing
