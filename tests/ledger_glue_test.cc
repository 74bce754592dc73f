// The budget ledger on every server API (sync, callback, completion-queue):
// the glue records each call and returns its ledger on a failed status with
// the policy's decisions (minimum budget, shed, queued time, reply margin),
// the call's cause and its handler's time (issue 21, section 1).
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "context/core.h"
#include "context/sleep.h"
#include "gtest/gtest.h"
#include "interceptors/policy/server_policy.h"
#include "ledger/causes.h"
#include "ledger/grpc_ledger.h"
#include "ledger/ledger.h"
#include "tests/policy_test_server.h"
#include "tests/test_timing.h"

namespace reqctx::testing {
namespace {

using policy::ServerPolicyOptions;
using Api = PolicyTestServer::Api;

constexpr char kMethod[] = "/echo.v1.Echo/Echo";

class LedgerGlueTest : public ::testing::TestWithParam<Api> {
 protected:
  bool Start(ServerPolicyOptions o, Behavior behavior = SleepWork) {
    served_ = std::make_unique<PolicedServer>(GetParam(), std::move(o),
                                              std::move(behavior));
    return served_->server.ok();
  }
  ::echo::v1::Echo::Stub& stub() { return *served_->stub; }
  std::unique_ptr<PolicedServer> served_;
};

// A handler's own failure: the ledger names the method, its code, its work.
TEST_P(LedgerGlueTest, FailedHandlerReturnsItsLedger) {
  ASSERT_TRUE(Start(ServerPolicyOptions{},
                    [](int, const Context& ctx, const ::echo::v1::EchoRequest&) {
                      (void)SleepFor(ctx, absl::Milliseconds(30));
                      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
                    }));
  CallResult r = CallEcho(stub(), absl::Seconds(5), 0);
  ASSERT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  absl::StatusOr<Ledger> l = LedgerFromStatus(r.status);
  ASSERT_TRUE(l.ok()) << l.status();
  SCOPED_TRACE(LedgerLine(*l));
  EXPECT_EQ(l->root.method, kMethod);
  EXPECT_EQ(l->root.code, 14);
  ASSERT_TRUE(l->root.budget.has_value());
  // grpc-timeout rounds a 5 s timeout up to the next 10 ms.
  EXPECT_LE(*l->root.budget, absl::Seconds(5) + absl::Milliseconds(10));
  EXPECT_GT(*l->root.budget, absl::Seconds(2));
  EXPECT_GE(l->root.work, absl::Milliseconds(25));
  EXPECT_EQ(l->root.outbound_wait, absl::ZeroDuration());
  EXPECT_NE(LedgerLine(*l).find("ended here: UNAVAILABLE"), std::string::npos);
}

// A successful call sends no details.
TEST_P(LedgerGlueTest, SuccessReturnsNoLedger) {
  ASSERT_TRUE(Start(ServerPolicyOptions{}));
  CallResult r = CallEcho(stub(), absl::Seconds(10), 0);
  ASSERT_TRUE(r.status.ok());
  EXPECT_TRUE(r.status.error_details().empty());
}

TEST_P(LedgerGlueTest, MinimumBudgetRefusalIsInTheLedger) {
  ServerPolicyOptions o;
  o.defaults.min_budget = absl::Seconds(3);
  o.defaults.reply_margin = absl::Milliseconds(5);
  ASSERT_TRUE(Start(o));
  CallResult r = CallEcho(stub(), absl::Seconds(1), 0);
  ASSERT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  absl::StatusOr<Ledger> l = LedgerFromStatus(r.status);
  ASSERT_TRUE(l.ok()) << l.status();
  SCOPED_TRACE(LedgerLine(*l));
  EXPECT_EQ(l->root.policy.min_budget, absl::Seconds(3));
  EXPECT_EQ(l->root.cause, CauseKind::kMinBudget);
  ASSERT_TRUE(l->root.reply_margin.has_value());
  EXPECT_EQ(*l->root.reply_margin, absl::Milliseconds(5));
}

TEST_P(LedgerGlueTest, ShedCallIsInTheLedger) {
  ASSERT_TRUE(Start(OneSlot(0, absl::Milliseconds(300))));
  BackgroundCall busy(stub(), absl::Seconds(10), 1000);
  ASSERT_TRUE(served_->server.WaitHandled(1, kPolicyWaitBound));
  CallResult r = CallEcho(stub(), absl::Seconds(5), 0);
  ASSERT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  absl::StatusOr<Ledger> l = LedgerFromStatus(r.status);
  ASSERT_TRUE(l.ok()) << l.status();
  SCOPED_TRACE(LedgerLine(*l));
  EXPECT_TRUE(l->root.policy.shed);
  EXPECT_EQ(l->root.cause, CauseKind::kShed);
  EXPECT_NE(LedgerLine(*l).find("shed"), std::string::npos);
  busy.Join();
}

TEST_P(LedgerGlueTest, DeadlineCappedIsInTheLedger) {
  ServerPolicyOptions o;
  o.defaults.max_deadline = absl::Milliseconds(100);
  ASSERT_TRUE(Start(o, [](int, const Context& ctx,
                          const ::echo::v1::EchoRequest&) {
    (void)SleepFor(ctx, absl::Seconds(30));  // Until the capped deadline.
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "capped");
  }));
  CallResult r = CallEcho(stub(), absl::Seconds(20), 0);
  ASSERT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  absl::StatusOr<Ledger> l = LedgerFromStatus(r.status);
  ASSERT_TRUE(l.ok()) << l.status();
  SCOPED_TRACE(LedgerLine(*l));
  EXPECT_EQ(l->root.policy.deadline_change,
            LedgerPolicy::DeadlineChange::kCapped);
  EXPECT_LE(l->root.policy.policy_budget, absl::Milliseconds(100));
  EXPECT_GE(l->root.work, absl::Milliseconds(80));
}

INSTANTIATE_TEST_SUITE_P(Apis, LedgerGlueTest,
                         ::testing::Values(Api::kSync, Api::kCallback,
                                           Api::kAsync),
                         [](const ::testing::TestParamInfo<Api>& info) {
                           switch (info.param) {
                             case Api::kSync: return std::string("Sync");
                             case Api::kCallback: return std::string("Callback");
                             case Api::kAsync: return std::string("Async");
                           }
                           return std::string("Unknown");
                         });

}  // namespace
}  // namespace reqctx::testing
