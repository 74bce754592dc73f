// Issue 21, section 2: every Context the glue makes ends with a documented
// cause (ledger/causes.h), per cancel site, on every server API; the
// ended-calls metric carries it as a label; an outbound call ended by its
// Context's cause says that cause in its status message, on the sync and the
// callback client paths.
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "context/internal/owned_deadline.h"
#include "drain/call_tracker.h"
#include "drain/shutdown_signal.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/observability.h"
#include "interceptors/policy/detach.h"
#include "interceptors/policy/retry.h"
#include "ledger/causes.h"
#include "ledger/grpc_ledger.h"
#include "ledger/ledger.h"
#include "metrics/metrics.h"
#include "proto/echo.grpc.pb.h"
#include "tests/http_client.h"
#include "tests/policy_test_server.h"
#include "tests/test_timing.h"

namespace reqctx::testing {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using policy::ServerPolicyOptions;
using Api = PolicyTestServer::Api;

constexpr absl::Duration kBound = kPolicyWaitBound;
// A caller's deadline long enough for the call to reach the server on 2
// loaded cores (a call that expires in transit never runs its handler).
constexpr absl::Duration kDeadline =
    PlainOrSanitized(absl::Seconds(1), absl::Seconds(4));

// What handlers saw: the cause of each call's Context once it was done.
class CauseLog {
 public:
  void Add(const absl::Status& cause) {
    std::lock_guard<std::mutex> lock(mu_);
    kinds_.push_back(CauseOf(cause));
    causes_.push_back(cause);
    cv_.notify_all();
  }
  // Waits (bounded) for the `n`-th entry; kNone if it never came.
  CauseKind Kind(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                 [&] { return kinds_.size() > n; });
    return kinds_.size() > n ? kinds_[n] : CauseKind::kNone;
  }
  absl::Status Status(size_t n) {
    Kind(n);
    std::lock_guard<std::mutex> lock(mu_);
    return causes_.size() > n ? causes_[n] : absl::OkStatus();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<CauseKind> kinds_;
  std::vector<absl::Status> causes_;
};

// A behavior that waits (bounded) for its Context to end, logs its cause and
// answers its error.
Behavior WaitAndLog(CauseLog* log) {
  return [log](int, const Context& ctx, const EchoRequest&) {
    if (!ctx.Done().WaitFor(kBound)) return grpc::Status::OK;
    log->Add(Cause(ctx));
    return ToGrpcStatus(ctx.Err());
  };
}

std::string ApiName(const ::testing::TestParamInfo<Api>& info) {
  switch (info.param) {
    case Api::kSync: return "Sync";
    case Api::kCallback: return "Callback";
    case Api::kAsync: return "Async";
  }
  return "Unknown";
}

class ServerCauseTest : public ::testing::TestWithParam<Api> {};

TEST_P(ServerCauseTest, CallersDeadline) {
  CauseLog log;
  PolicyTestServer server(GetParam(), WaitAndLog(&log));
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  EXPECT_EQ(CallEcho(*stub, kDeadline, 0).status.error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(log.Kind(0), CauseKind::kCallerDeadline);
  EXPECT_EQ(log.Status(0).code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_P(ServerCauseTest, ClientCancel) {
  CauseLog log;
  PolicyTestServer server(GetParam(), WaitAndLog(&log));
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  grpc::ClientContext cc;
  cc.set_deadline(absl::ToChronoTime(absl::Now() + kBound));
  grpc::Status status;
  std::thread caller([&] {
    EchoRequest req;
    EchoResponse resp;
    status = stub->Echo(&cc, req, &resp);
  });
  EXPECT_TRUE(server.WaitHandled(1, kBound));
  cc.TryCancel();
  caller.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(log.Kind(0), CauseKind::kClientCancel);
}

TEST_P(ServerCauseTest, ReplyMargin) {
  CauseLog log;
  ServerPolicyOptions o;
  o.defaults.reply_margin = kDeadline / 2;
  PolicedServer served(GetParam(), o, WaitAndLog(&log));
  ASSERT_TRUE(served.server.ok());
  // The handler's Context ends half the deadline before the caller's; its
  // answer reaches the caller in time.
  CallResult r = CallEcho(*served.stub, kDeadline, 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(log.Kind(0), CauseKind::kReplyMargin);
}

TEST_P(ServerCauseTest, DefaultedAndCappedDeadlines) {
  CauseLog log;
  ServerPolicyOptions o;
  o.defaults.default_deadline = absl::Milliseconds(200);
  o.defaults.max_deadline = absl::Milliseconds(200);
  PolicedServer served(GetParam(), o, WaitAndLog(&log));
  ASSERT_TRUE(served.server.ok());
  // No deadline: defaulted. A long one: capped.
  CallEcho(*served.stub, absl::InfiniteDuration(), 0);
  EXPECT_EQ(log.Kind(0), CauseKind::kDeadlinePolicy);
  CallEcho(*served.stub, absl::Seconds(30), 0);
  EXPECT_EQ(log.Kind(1), CauseKind::kDeadlinePolicy);
}

INSTANTIATE_TEST_SUITE_P(Apis, ServerCauseTest,
                         ::testing::Values(Api::kSync, Api::kCallback,
                                           Api::kAsync),
                         ApiName);

// reqctx_server_handled_total{method,code,cause} for Echo, from this
// process's registry.
double Handled(const char* code, const char* cause) {
  return ExpositionSample(
      metrics::Registry::Default().Expose(),
      absl::StrCat("reqctx_server_handled_total{method=\"/echo.v1.Echo/Echo\","
                   "code=\"",
                   code, "\",cause=\"", cause, "\"}"));
}

class RefusalCauseTest : public ::testing::TestWithParam<Api> {
 protected:
  void SetUp() override { EnableRpcMetrics(); }
};

TEST_P(RefusalCauseTest, ShedCallsAreCountedWithTheirCause) {
  PolicedServer served(GetParam(), OneSlot(0, absl::Milliseconds(300)));
  ASSERT_TRUE(served.server.ok());
  BackgroundCall busy(*served.stub, absl::Seconds(10), 1000);
  ASSERT_TRUE(served.server.WaitHandled(1, kBound));
  const double before = Handled("RESOURCE_EXHAUSTED", "SHED");
  CallResult r = CallEcho(*served.stub, absl::Seconds(5), 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Counted before the status went out.
  EXPECT_EQ(Handled("RESOURCE_EXHAUSTED", "SHED"), before + 1);
  busy.Join();
}

TEST_P(RefusalCauseTest, MinimumBudgetRefusalsAreCountedWithTheirCause) {
  ServerPolicyOptions o;
  o.defaults.min_budget = absl::Seconds(30);
  PolicedServer served(GetParam(), o);
  ASSERT_TRUE(served.server.ok());
  const double before = Handled("DEADLINE_EXCEEDED", "MIN_BUDGET");
  CallResult r = CallEcho(*served.stub, kDeadline, 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Handled("DEADLINE_EXCEEDED", "MIN_BUDGET"), before + 1);
}

INSTANTIATE_TEST_SUITE_P(Apis, RefusalCauseTest,
                         ::testing::Values(Api::kSync, Api::kCallback,
                                           Api::kAsync),
                         ApiName);

// The server shutting down: gRPC's own Server::Shutdown cancel, and
// drain::CallTracker's, read SERVER_SHUTDOWN (not CLIENT_CANCEL or none) in
// the call's Context, the metric and the ledger, given the server's
// shutdown signal (drain/shutdown_signal.h).
class ShutdownCauseTest : public ::testing::TestWithParam<Api> {
 protected:
  void SetUp() override { EnableRpcMetrics(); }
};

// Waits (bounded) until Handled(code, cause) reaches `value`: the metric is
// counted when the call ends, which a shutdown's cancel does on gRPC's
// threads after the handler returned.
bool WaitForHandled(const char* code, const char* cause, double value) {
  const absl::Time end = absl::Now() + kBound;
  while (Handled(code, cause) < value) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

TEST_P(ShutdownCauseTest, GrpcShutdownCancelIsTheServerShuttingDown) {
  CauseLog log;
  ServerCallRules rules;
  rules.shutdown = std::make_shared<drain::ShutdownSignal>();
  PolicyTestServer server(GetParam(), WaitAndLog(&log), rules);
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  const double before = Handled("CANCELLED", "SERVER_SHUTDOWN");
  const double client_cancels = Handled("CANCELLED", "CLIENT_CANCEL");
  BackgroundCall call(*stub, kBound, 0);
  ASSERT_TRUE(server.WaitHandled(1, kBound));
  // drain::ShutdownServer(server, signal, now): gRPC cancels the call.
  server.Shutdown();
  EXPECT_EQ(log.Kind(0), CauseKind::kServerShutdown);
  EXPECT_EQ(log.Status(0).message(), "canceled: server shutting down");
  call.Join();
  EXPECT_TRUE(WaitForHandled("CANCELLED", "SERVER_SHUTDOWN", before + 1));
  EXPECT_EQ(Handled("CANCELLED", "CLIENT_CANCEL"), client_cancels);
}

TEST_P(ShutdownCauseTest, CallTrackerCancelIsTheServerShuttingDown) {
  auto signal = std::make_shared<drain::ShutdownSignal>();
  drain::CallTracker tracker(signal);
  ServerCallRules rules;
  rules.shutdown = signal;
  CauseLog log;
  PolicyTestServer server(
      GetParam(),
      [&](int, const Context& ctx, const EchoRequest&) {
        drain::CallTracker::Call tracked = tracker.Track(ctx);
        const Context& c = tracked.context();
        if (!c.Done().WaitFor(kBound)) return grpc::Status::OK;
        log.Add(Cause(c));
        return ToGrpcStatus(drain::ShutdownStatusOr(c, c.Err()));
      },
      rules);
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  const double before = Handled("UNAVAILABLE", "SERVER_SHUTDOWN");
  BackgroundCall call(*stub, kBound, 0);
  ASSERT_TRUE(server.WaitHandled(1, kBound));
  // A call tracked after this is canceled at once, so the order of the two
  // does not matter.
  tracker.CancelAll();
  CallResult r = call.Join();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(log.Kind(0), CauseKind::kServerShutdown);
  // The server call itself, not only the tracked Context: its ledger and
  // its metric (counted before the status went out).
  absl::StatusOr<Ledger> l = LedgerFromStatus(r.status);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->root.cause, CauseKind::kServerShutdown);
  EXPECT_EQ(Handled("UNAVAILABLE", "SERVER_SHUTDOWN"), before + 1);
}

INSTANTIATE_TEST_SUITE_P(Apis, ShutdownCauseTest,
                         ::testing::Values(Api::kSync, Api::kCallback,
                                           Api::kAsync),
                         ApiName);

// Hedging: the losing attempt's Context ends with HEDGE_LOST, and its call
// says so; the server saw its caller cancel.
TEST(HedgeCauseTest, TheLoserSaysItLost) {
  CauseLog server_log;
  // The first attempt (message "first") waits for its Context to end and
  // logs why; the hedge answers once the first attempt has reached the
  // server. Told apart by the request, not the order of arrival: under a
  // loaded sanitizer run the hedge may arrive first.
  const std::pair<Context, CancelFunc> first_arrived = WithCancel(Background());
  PolicyTestServer server(
      Api::kSync, [&](int index, const Context& ctx, const EchoRequest& r) {
        if (r.message() == "first") {
          first_arrived.second();
          return WaitAndLog(&server_log)(index, ctx, r);
        }
        first_arrived.first.Done().WaitFor(kBound);
        return grpc::Status::OK;
      });
  ASSERT_TRUE(server.ok());
  auto stub = server.NewStub();
  policy::RetryPolicy p;
  p.max_attempts = 2;
  p.hedging_delay = absl::Milliseconds(50);
  std::mutex mu;
  std::vector<grpc::Status> statuses(2);
  auto [ctx, cancel] = WithTimeout(Background(), kBound);
  policy::RetryResult result = policy::CallWithRetry(
      ctx, p, nullptr, [&](grpc::ClientContext* cc, int attempt) {
        EchoRequest req;
        req.set_message(attempt == 0 ? "first" : "hedge");
        EchoResponse resp;
        grpc::Status s = stub->Echo(cc, req, &resp);
        std::lock_guard<std::mutex> lock(mu);
        statuses[attempt] = s;
        return s;
      });
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.winner, 1);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(statuses[0].error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(statuses[0].error_message(), "canceled: hedge lost");
  EXPECT_EQ(server_log.Kind(0), CauseKind::kClientCancel);
}

// Outbound calls made under a Context that a cause ended.
class OutboundCauseTest : public ::testing::Test {
 protected:
  OutboundCauseTest() : backend_(Api::kSync, WaitAndLog(&backend_log_)) {}
  CauseLog backend_log_;
  PolicyTestServer backend_;
};

TEST_F(OutboundCauseTest, ShutdownOnTheSyncAndCallbackPaths) {
  ASSERT_TRUE(backend_.ok());
  auto stub = backend_.NewStub();
  drain::CallTracker tracker;
  drain::CallTracker::Call call = tracker.Track(Background());
  // Sync.
  std::unique_ptr<grpc::ClientContext> sync_cc = NewClientContext(call.context());
  grpc::Status sync_status;
  std::thread caller([&] {
    EchoRequest req;
    EchoResponse resp;
    sync_status = stub->Echo(sync_cc.get(), req, &resp);
  });
  // Callback.
  std::unique_ptr<grpc::ClientContext> cb_cc = NewClientContext(call.context());
  EchoRequest cb_req;
  EchoResponse cb_resp;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<grpc::Status> cb_status;
  stub->async()->Echo(cb_cc.get(), &cb_req, &cb_resp, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    cb_status = std::move(s);
    cv.notify_all();
  });
  ASSERT_TRUE(backend_.WaitHandled(2, kBound));
  EXPECT_EQ(tracker.CancelAll(), 1u);
  caller.join();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                            [&] { return cb_status.has_value(); }));
  }
  for (const grpc::Status* s : {&sync_status, &*cb_status}) {
    EXPECT_EQ(s->error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_EQ(s->error_message(), "canceled: server shutting down");
  }
  // The cause does not cross the wire: the backend saw its caller cancel.
  EXPECT_EQ(backend_log_.Kind(0), CauseKind::kClientCancel);
  EXPECT_EQ(backend_log_.Kind(1), CauseKind::kClientCancel);
}

TEST_F(OutboundCauseTest, AlreadyEndedContextFailsWithItsCause) {
  ASSERT_TRUE(backend_.ok());
  auto stub = backend_.NewStub();
  Group g(Background());
  g.Go([](const Context&) { return absl::NotFoundError("no such user"); });
  ASSERT_FALSE(g.Wait().ok());
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(g.context());
  EchoRequest req;
  EchoResponse resp;
  grpc::Status s = stub->Echo(cc.get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(s.error_message(),
            "canceled: a sibling in the group failed (task #1): no such user");
  EXPECT_EQ(backend_.handled(), 0);
}

// A middle hop's outbound call runs out of its caller's deadline: the
// middle's status names the cause. gRPC ends the outbound call at its own
// deadline, set a little before the middle's Context's.
TEST_F(OutboundCauseTest, MiddleHopRunsOutOfTheCallersDeadline) {
  ASSERT_TRUE(backend_.ok());
  auto backend_stub = backend_.NewStub();
  std::mutex mu;
  std::optional<grpc::Status> outbound;
  PolicyTestServer middle(
      Api::kSync, [&](int, const Context& ctx, const EchoRequest&) {
        std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
        EchoRequest req;
        EchoResponse resp;
        grpc::Status s = backend_stub->Echo(cc.get(), req, &resp);
        std::lock_guard<std::mutex> lock(mu);
        outbound = s;
        return s;
      });
  ASSERT_TRUE(middle.ok());
  auto stub = middle.NewStub();
  CallResult r = CallEcho(*stub, kDeadline, 0);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(middle.WaitFinished(1, kBound));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_TRUE(outbound.has_value());
  EXPECT_EQ(outbound->error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(outbound->error_message(), "deadline exceeded: caller's deadline");
}

// A Context with a plain deadline (no reqctx cause) keeps gRPC's message.
TEST_F(OutboundCauseTest, NoCauseKeepsTheStatusAsItWas) {
  ASSERT_TRUE(backend_.ok());
  auto stub = backend_.NewStub();
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(200));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  EchoRequest req;
  EchoResponse resp;
  grpc::Status s = stub->Echo(cc.get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(s.error_message().find("caller"), std::string::npos)
      << s.error_message();
}

TEST(DetachCauseTest, TheBoundEndsItWithItsCause) {
  auto [call, cancel_call] = WithCancel(Background());
  auto [detached, cancel] =
      policy::DetachWithBound(call, absl::Milliseconds(20));
  cancel_call();
  EXPECT_FALSE(detached.IsDone()) << "detached from the call";
  ASSERT_TRUE(detached.Done().WaitFor(kBound));
  EXPECT_EQ(CauseOf(Cause(detached)), CauseKind::kDetachedBound);
  EXPECT_EQ(detached.Err().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(OwnedDeadlineCauseTest, CauseOfAnOwnedDeadlineAndOfACancel) {
  auto [ctx, cancel] = internal::WithOwnedTimeout(
      Background(), absl::Milliseconds(1), CauseStatus(CauseKind::kCallerDeadline));
  EXPECT_EQ(CauseOf(internal::DeadlineCause(ctx)), CauseKind::kCallerDeadline);
  internal::ArmOwnedDeadline(cancel);
  ASSERT_TRUE(ctx.Done().WaitFor(kBound));
  EXPECT_EQ(CauseOf(Cause(ctx)), CauseKind::kCallerDeadline);
  // A child sees its parent's cause.
  auto [child, cancel_child] = WithCancel(ctx);
  EXPECT_EQ(CauseOf(Cause(child)), CauseKind::kCallerDeadline);

  auto [c2, cancel2] = WithTimeout(Background(), absl::Hours(1));
  EXPECT_TRUE(internal::DeadlineCause(c2).ok());
  internal::CancelWithCause(cancel2, CauseStatus(CauseKind::kClientCancel));
  EXPECT_EQ(c2.Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(CauseOf(Cause(c2)), CauseKind::kClientCancel);
  // The first cancel wins.
  internal::CancelWithCause(cancel2, CauseStatus(CauseKind::kShed));
  EXPECT_EQ(CauseOf(Cause(c2)), CauseKind::kClientCancel);
  EXPECT_TRUE(internal::DeadlineCause(Background()).ok());
}

}  // namespace
}  // namespace reqctx::testing
