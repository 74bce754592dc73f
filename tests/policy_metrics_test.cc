// The server policy's Prometheus families (interceptors/policy/
// policy_metrics.h), recorded by //interceptors/policy itself: known traffic
// through a real server with a ServerPolicy (one slot, a queue of one), then
// a scrape over HTTP from the process Registry with exact per-method,
// per-reason, per-criticality counts and queue-wait histogram totals.
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/policy/detach.h"
#include "interceptors/policy/server_policy.h"
#include "metrics/metrics_server.h"
#include "tests/http_client.h"
#include "tests/policy_test_server.h"

namespace reqctx::testing {
namespace {

using policy::ServerPolicy;
using policy::ServerPolicyOptions;

constexpr absl::Duration kBound = kPolicyWaitBound;
constexpr char kMethod[] = "/echo.v1.Echo/Echo";

// `name`{method="/echo.v1.Echo/Echo"<extra>}.
std::string M(const std::string& name, const std::string& extra = "") {
  return absl::StrCat(name, "{method=\"", kMethod, "\"", extra, "}");
}

std::string Rejected(const std::string& reason, const std::string& crit) {
  return M("reqctx_policy_rejected_total",
           absl::StrCat(",reason=\"", reason, "\",criticality=\"", crit, "\""));
}

std::string Queued(const std::string& crit) {
  return M("reqctx_policy_queued_total",
           absl::StrCat(",criticality=\"", crit, "\""));
}

// Handlers asked for work_ms == 1 wait until Open() (or their Context
// ends); work_ms == 2 detaches a bounded follow-up; the rest answer at once.
class Gate {
 public:
  grpc::Status Behave(const Context& ctx,
                      const ::echo::v1::EchoRequest& request) {
    if (request.work_ms() == 2) {
      auto [follow_up, cancel] = policy::DetachWithBound(ctx, absl::Seconds(1));
      cancel();
      return grpc::Status::OK;
    }
    if (request.work_ms() != 1) return grpc::Status::OK;
    std::unique_lock<std::mutex> lock(mu_);
    const int round = round_;
    cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound), [&] {
      return round_ != round || !ctx.Err().ok();
    });
    return grpc::Status::OK;
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    ++round_;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int round_ = 0;  // Guarded by mu_.
};

// On the sync API (handler wrapping) and the async API (AdmitAsync): both
// see a client's cancel of a queued call (the callback API cannot before
// the handler; see policy_server_test).
class PolicyMetricsTest
    : public ::testing::TestWithParam<PolicyTestServer::Api> {};

TEST_P(PolicyMetricsTest, KnownTrafficGivesExactCountsByReasonAndCriticality) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start(MetricsServerOptions());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto scrape = [&] {
    absl::StatusOr<HttpResponse> r =
        HttpGet((*metrics)->port(), "/metrics", kBound);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->body : std::string();
  };

  ServerPolicyOptions o = OneSlot(1, absl::Milliseconds(500));
  o.defaults.min_budget = absl::Milliseconds(200);
  o.defaults.default_deadline = absl::Seconds(20);
  o.defaults.max_deadline = absl::Seconds(30);
  Gate gate;
  PolicedServer served(
      GetParam(), o,
      [&](int, const Context& ctx, const ::echo::v1::EchoRequest& r) {
        return gate.Behave(ctx, r);
      });
  ASSERT_TRUE(served.server.ok());
  ServerPolicy& policy = served.policy;
  PolicyTestServer& server = served.server;
  ::echo::v1::Echo::Stub& stub = *served.stub;
  const std::string before = scrape();
  // The families are registered (HELP/TYPE) once the policy is applied.
  EXPECT_NE(before.find("# TYPE reqctx_policy_rejected_total counter"),
            std::string::npos);
  EXPECT_NE(before.find("# TYPE reqctx_policy_queue_wait_seconds histogram"),
            std::string::npos);

  // A call with no deadline (default applied) holds the one slot.
  BackgroundCall busy(stub, absl::InfiniteDuration(), 1);
  ASSERT_TRUE(server.WaitHandled(1, kBound));
  // Below the 200 ms minimum.
  EXPECT_EQ(CallEcho(stub, absl::Milliseconds(100), 0).status.error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  // Expected wait 500 ms + handling 500 ms > 600 ms: shed at arrival.
  EXPECT_EQ(CallEcho(stub, absl::Milliseconds(600), 0, "criticality=sheddable")
                .status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A critical call with a deadline past the 30 s cap waits in the queue...
  BackgroundCall critical(stub, absl::Seconds(60), 0, "criticality=critical");
  ASSERT_TRUE(PollUntil([&] { return policy.Queued() == 1; }));
  // ... so a default one finds the queue full.
  EXPECT_EQ(CallEcho(stub, absl::Seconds(10), 0).status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  gate.Open();  // The busy call ends; the critical one runs.
  EXPECT_TRUE(busy.Join().status.ok());
  EXPECT_TRUE(critical.Join().status.ok());
  ASSERT_TRUE(PollUntil([&] { return policy.Running() == 0; }));

  // Again one slot held; a queued call canceled by its client, then one
  // whose deadline passes in the queue.
  BackgroundCall busy2(stub, absl::InfiniteDuration(), 1);
  ASSERT_TRUE(server.WaitHandled(3, kBound));
  {
    grpc::ClientContext cc;
    cc.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    ::echo::v1::EchoRequest request;
    ::echo::v1::EchoResponse response;
    grpc::Status status;
    std::thread canceled([&] { status = stub.Echo(&cc, request, &response); });
    const bool was_queued = PollUntil([&] { return policy.Queued() == 1; });
    cc.TryCancel();
    canceled.join();
    ASSERT_TRUE(was_queued);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
    ASSERT_TRUE(PollUntil([&] { return policy.Queued() == 0; }));
  }
  EXPECT_EQ(CallEcho(stub, absl::Milliseconds(1500), 0).status.error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(PollUntil([&] {
    return policy.Counters()[policy::PolicyCounter::kShedExpired] == 2;
  }));
  gate.Open();
  EXPECT_TRUE(busy2.Join().status.ok());
  ASSERT_TRUE(PollUntil([&] { return policy.Running() == 0; }));
  // A bounded follow-up detached from a call counts under its method.
  EXPECT_TRUE(CallEcho(stub, absl::Seconds(10), 2).status.ok());

  std::string after;
  auto delta = [&](const std::string& series) {
    return ExpositionSample(after, series) - ExpositionSample(before, series);
  };
  // A drop is recorded by the thread the shedder decides on, just after the
  // shedder's own count that the waits above saw: scrape until the last
  // drop's families show (bounded), then check everything exactly.
  EXPECT_TRUE(PollUntil([&] {
    after = scrape();
    return delta(M("reqctx_policy_queue_wait_seconds_count")) >= 3 &&
           delta(Rejected("expired", "default")) >= 1 &&
           delta(Rejected("canceled", "default")) >= 1;
  }));
  EXPECT_EQ(delta(Rejected("min_budget", "default")), 1);
  EXPECT_EQ(delta(Rejected("shed_at_arrival", "sheddable")), 1);
  EXPECT_EQ(delta(Rejected("shed_at_arrival", "default")), 0);
  EXPECT_EQ(delta(Rejected("queue_full", "default")), 1);
  EXPECT_EQ(delta(Rejected("evicted", "default")), 0);
  EXPECT_EQ(delta(Rejected("canceled", "default")), 1);
  EXPECT_EQ(delta(Rejected("expired", "default")), 1);
  EXPECT_EQ(delta(Queued("critical")), 1);
  EXPECT_EQ(delta(Queued("default")), 2);
  EXPECT_EQ(delta(Queued("sheddable")), 0);
  EXPECT_EQ(delta(M("reqctx_policy_queue_wait_seconds_count")), 3);
  // The expired call waited its whole 1.5 s budget (less transit); the
  // other two less than that.
  EXPECT_GE(delta(M("reqctx_policy_queue_wait_seconds_sum")), 1.0);
  EXPECT_EQ(delta(M("reqctx_policy_queue_wait_seconds_bucket", ",le=\"+Inf\"")),
            3);
  EXPECT_EQ(delta(M("reqctx_policy_deadline_defaulted_total")), 2);
  EXPECT_EQ(delta(M("reqctx_policy_deadline_capped_total")), 1);
  EXPECT_EQ(delta(M("reqctx_policy_detached_total")), 1);
  // The process-wide counts agree.
  policy::PolicyCountersSnapshot c = policy.Counters();
  EXPECT_EQ(c[policy::PolicyCounter::kMinBudgetRejected], 1);
  EXPECT_EQ(c[policy::PolicyCounter::kShedAtArrival], 1);
  EXPECT_EQ(c[policy::PolicyCounter::kShedQueueFull], 1);
  EXPECT_EQ(c[policy::PolicyCounter::kQueued], 3);
  EXPECT_EQ(server.handled(), 4);
}

INSTANTIATE_TEST_SUITE_P(
    Apis, PolicyMetricsTest,
    ::testing::Values(PolicyTestServer::Api::kSync,
                      PolicyTestServer::Api::kAsync),
    [](const auto& info) {
      return info.param == PolicyTestServer::Api::kSync ? "Sync" : "Async";
    });

}  // namespace
}  // namespace reqctx::testing
