// //async:grpc_call: co_await reqctx::Call against a real echo server on
// 127.0.0.1 (reqctx's server interceptor; the client channel from
// reqctx::CreateChannel). The server's stats say what reached it and how it
// ended; every wait is bounded.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "async/call.h"
#include "async/coro.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "w3c/trace_context.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"

namespace reqctx {
namespace {

using ::echo::v1::Echo;
using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using Snapshot = echo::EchoStats::Snapshot;

constexpr absl::Duration kBound = absl::Seconds(20);
constexpr int64_t kLongWorkMs = 600 * 1000;  // Only a cancel ends it in time.

class CoroCallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    echo::EchoServerOptions options;
    options.name = "coro";
    options.workers = 1;
    auto server = echo::EchoServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = Echo::NewStub(
        reqctx::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  // Waits until `n` calls are active on the server.
  bool WaitActive(int64_t n) {
    return server_->stats().WaitUntil(
        [n](const Snapshot& s) { return s.active_requests == n; }, kBound);
  }
  bool WaitIdle() {
    return server_->stats().WaitUntil(
        [](const Snapshot& s) {
          return s.active_requests == 0 && s.active_workers == 0;
        },
        kBound);
  }

  static EchoRequest Request(std::string message, int64_t work_ms) {
    EchoRequest r;
    r.set_message(std::move(message));
    r.set_work_ms(work_ms);
    return r;
  }

  std::unique_ptr<echo::EchoServer> server_;
  std::unique_ptr<Echo::Stub> stub_;
};

Task<absl::StatusOr<EchoResponse>> CallOnce(Context ctx,
                                            std::unique_ptr<Echo::Stub>* stub,
                                            EchoRequest request) {
  co_return co_await Call(ctx, *stub, &Echo::Stub::async::Echo, request);
}

TEST_F(CoroCallTest, ReturnsTheResponseAndCarriesTheDeadline) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(10));
  absl::StatusOr<EchoResponse> r =
      RunSync(CallOnce(ctx, &stub_, Request("hi", 0)));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->hops_size(), 1);
  EXPECT_EQ(r->hops(0).service(), "coro");
  // The server saw ctx's deadline (sent as grpc-timeout).
  EXPECT_GT(r->hops(0).deadline_remaining_ms(), 0);
  // grpc-timeout rounds up to 100 ms below 100 s (client_interceptor.h).
  EXPECT_LE(r->hops(0).deadline_remaining_ms(), 10000 + 100);
  EXPECT_EQ(r->hops(0).trace_id().size(), 32u);  // A W3C trace id was sent.

  // No deadline on the Context: none on the call.
  absl::StatusOr<EchoResponse> r2 =
      RunSync(CallOnce(Background(), &stub_, Request("hi", 0)));
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->hops(0).deadline_remaining_ms(), -1);
}

TEST_F(CoroCallTest, ServerErrorIsMappedToTheStatus) {
  absl::StatusOr<EchoResponse> r =
      RunSync(CallOnce(Background(), &stub_, Request("bad", -5)));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CoroCallTest, DoneContextFailsAtOnceWithoutReachingTheServer) {
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  absl::StatusOr<EchoResponse> r =
      RunSync(CallOnce(ctx, &stub_, Request("late", 0)));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(server_->stats().Get().started_total, 0);
}

TEST_F(CoroCallTest, CancelWhileSuspendedEndsTheCallEverywhere) {
  auto [ctx, cancel] = WithCancel(Background());
  Loop loop;
  absl::StatusOr<EchoResponse> result = absl::UnknownError("not run");
  loop.Spawn([](Context c, std::unique_ptr<Echo::Stub>* stub,
                absl::StatusOr<EchoResponse>* out) -> Task<void> {
    *out = co_await CallOnce(c, stub, Request("long", kLongWorkMs));
  }(ctx, &stub_, &result));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(1)));  // The call is started.
  ASSERT_TRUE(WaitActive(1));
  absl::Time start = absl::Now();
  cancel();
  EXPECT_TRUE(loop.RunFor(kBound));
  EXPECT_LT(absl::Now() - start, kBound);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(WaitIdle());
  EXPECT_EQ(server_->stats().Get().canceled_total, 1);
}

TEST_F(CoroCallTest, DeadlineEndsASuspendedCall) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(100));
  absl::StatusOr<EchoResponse> r =
      RunSync(CallOnce(ctx, &stub_, Request("slow", kLongWorkMs)));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(WaitIdle());
  EXPECT_EQ(server_->stats().Get().deadline_exceeded_total, 1);
}

// Fan-out: three calls on one group context, canceled as a group.
TEST_F(CoroCallTest, FanOutIsCanceledAsAGroup) {
  auto [ctx, cancel] = WithCancel(Background());
  auto [group, cancel_group] = WithCancel(ctx);
  Loop loop;
  std::vector<absl::StatusOr<EchoResponse>> results;
  loop.Spawn([](Context g, std::unique_ptr<Echo::Stub>* stub,
                std::vector<absl::StatusOr<EchoResponse>>* out) -> Task<void> {
    std::vector<Task<absl::StatusOr<EchoResponse>>> calls;
    for (int i = 0; i < 3; ++i) {
      calls.push_back(Call(g, *stub, &Echo::Stub::async::Echo,
                           Request("fan", kLongWorkMs)));
    }
    *out = co_await WhenAll(std::move(calls));
  }(group, &stub_, &results));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(1)));
  ASSERT_TRUE(WaitActive(3));
  cancel_group();
  EXPECT_TRUE(loop.RunFor(kBound));
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  }
  ASSERT_TRUE(WaitIdle());
  EXPECT_EQ(server_->stats().Get().canceled_total, 3);
  EXPECT_TRUE(ctx.Err().ok());
}

// Fan-out where all calls succeed: results in order.
TEST_F(CoroCallTest, FanOutReturnsResultsInOrder) {
  auto run = [](std::unique_ptr<Echo::Stub>* stub)
      -> Task<std::vector<absl::StatusOr<EchoResponse>>> {
    std::vector<Task<absl::StatusOr<EchoResponse>>> calls;
    for (int i = 0; i < 4; ++i) {
      calls.push_back(Call(Background(), *stub, &Echo::Stub::async::Echo,
                           Request("m" + std::to_string(i), 0)));
    }
    co_return co_await WhenAll(std::move(calls));
  };
  std::vector<absl::StatusOr<EchoResponse>> results = RunSync(run(&stub_));
  ASSERT_EQ(results.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_NE(results[i]->message().find("m" + std::to_string(i)),
              std::string::npos);
  }
}

TEST_F(CoroCallTest, CarriesTheContextsTrace) {
  TraceContext tc{"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true};
  Context ctx = WithTraceContext(Background(), tc);
  absl::StatusOr<EchoResponse> r = RunSync(CallOnce(ctx, &stub_, Request("t", 0)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->hops(0).trace_id(), tc.trace_id);
  EXPECT_NE(r->hops(0).span_id(), tc.span_id);  // The server's own span.
}

// Many concurrent calls; half of them on a group that is canceled while
// they run: the canceled half ends CANCELLED, the rest complete, and the
// server's books balance.
TEST_F(CoroCallTest, ConcurrentCallsWithAGroupCanceledMidway) {
  constexpr int kEach = 8;
  auto [group, cancel_group] = WithCancel(Background());
  Loop loop;
  std::vector<absl::StatusOr<EchoResponse>> canceled, completed;
  loop.Spawn([](Context g, std::unique_ptr<Echo::Stub>* stub,
                std::vector<absl::StatusOr<EchoResponse>>* out) -> Task<void> {
    std::vector<Task<absl::StatusOr<EchoResponse>>> calls;
    for (int i = 0; i < kEach; ++i) {
      calls.push_back(Call(g, *stub, &Echo::Stub::async::Echo,
                           Request("slow", kLongWorkMs)));
    }
    *out = co_await WhenAll(std::move(calls));
  }(group, &stub_, &canceled));
  loop.Spawn([](std::unique_ptr<Echo::Stub>* stub,
                std::vector<absl::StatusOr<EchoResponse>>* out) -> Task<void> {
    std::vector<Task<absl::StatusOr<EchoResponse>>> calls;
    for (int i = 0; i < kEach; ++i) {
      calls.push_back(Call(Background(), *stub, &Echo::Stub::async::Echo,
                           Request("quick", 0)));
    }
    *out = co_await WhenAll(std::move(calls));
  }(&stub_, &completed));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(1)));
  ASSERT_TRUE(server_->stats().WaitUntil(
      [](const Snapshot& s) { return s.active_requests >= kEach; }, kBound));
  cancel_group();
  EXPECT_TRUE(loop.RunFor(kBound));
  ASSERT_EQ(canceled.size(), static_cast<size_t>(kEach));
  ASSERT_EQ(completed.size(), static_cast<size_t>(kEach));
  for (const auto& r : canceled) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  }
  for (const auto& r : completed) EXPECT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(WaitIdle());
  Snapshot st = server_->stats().Get();
  EXPECT_EQ(st.canceled_total, kEach);
  EXPECT_EQ(st.completed_total, kEach);
  EXPECT_EQ(st.started_total, st.finished_total());
}

// Destroying the task suspended in a call cancels the call; nothing resumes
// the destroyed frame when gRPC's callback arrives later.
TEST_F(CoroCallTest, DestroyingASuspendedCallCancelsIt) {
  {
    Loop loop;
    loop.Spawn([](std::unique_ptr<Echo::Stub>* stub) -> Task<void> {
      (void)co_await CallOnce(Background(), stub, Request("orphan", kLongWorkMs));
      ADD_FAILURE() << "resumed after destruction";
    }(&stub_));
    EXPECT_FALSE(loop.RunFor(absl::Milliseconds(1)));
    ASSERT_TRUE(WaitActive(1));
  }  // ~Loop destroys the task.
  ASSERT_TRUE(WaitIdle());
  EXPECT_EQ(server_->stats().Get().canceled_total, 1);
}

}  // namespace
}  // namespace reqctx
