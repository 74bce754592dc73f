// End-to-end: real echo servers (frontend -> middle -> backend) on loopback,
// called through reqctx's client glue. Every wait is bounded (kWaitBound);
// waits are on events (EchoStats::WaitUntil, call completion), not sleeps.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/internal/grpc_timeout.h"
#include "interceptors/interceptors.h"
#include "ledger/causes.h"
#include "ledger/grpc_ledger.h"
#include "ledger/ledger.h"
#include "proto/echo.grpc.pb.h"
#include "tests/echo_chain.h"
#include "tests/work_gate.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using ::echo::v1::Hop;
using echo::EchoStats;
using testing::EchoChain;
using testing::kPromptBound;
using testing::kWaitBound;

constexpr int kWorkers = 2;

EchoRequest Request(const std::string& message, int64_t work_ms) {
  EchoRequest r;
  r.set_message(message);
  r.set_work_ms(work_ms);
  return r;
}

class EchoE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(chain_.status().ok()) << chain_.status();
    stub_ = testing::NewStub(chain_.frontend());
  }

  grpc::Status Call(const Context& ctx, const EchoRequest& request,
                    EchoResponse* response) {
    std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
    return stub_->Echo(cc.get(), request, response);
  }

  std::vector<echo::EchoServer*> Hops() {
    return {&chain_.frontend(), &chain_.middle(), &chain_.backend()};
  }

  EchoChain chain_{kWorkers};
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
};

TEST_F(EchoE2ETest, DeadlineShrinksAcrossThreeHops) {
  // Under 1 s, because gRPC C++ encodes grpc-timeout exactly (in ms) only
  // below 1 s; above it rounds up to 10 ms units, above 10 s to 100 ms units,
  // so a long deadline can grow by that much per hop on the wire.
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(900));
  EchoResponse response;
  grpc::Status s = Call(ctx, Request("hi", 50), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.message(), "hi");
  ASSERT_EQ(response.hops_size(), 3);
  EXPECT_EQ(response.hops(0).service(), "frontend");
  EXPECT_EQ(response.hops(1).service(), "middle");
  EXPECT_EQ(response.hops(2).service(), "backend");
  EXPECT_LE(response.hops(0).deadline_remaining_ms(), 900);
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(response.hops(i).deadline_remaining_ms(), 0) << i;
  }
  // Each hop arrives after the previous hop's 50 ms of work. (2 ms of slack:
  // values are truncated to ms and grpc-timeout rounds up to whole ms.)
  for (int i = 1; i < 3; ++i) {
    EXPECT_LE(response.hops(i).deadline_remaining_ms(),
              response.hops(i - 1).deadline_remaining_ms() - 48)
        << response.hops(i).service();
  }
}

TEST_F(EchoE2ETest, NoDeadlineIsMinusOneAtEveryHop) {
  EchoResponse response;
  grpc::Status s = Call(Background(), Request("x", 0), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.hops_size(), 3);
  for (const Hop& hop : response.hops()) {
    EXPECT_EQ(hop.deadline_remaining_ms(), -1) << hop.service();
  }
}

TEST_F(EchoE2ETest, TraceIdCarriedAndSpanIdsFresh) {
  const TraceContext caller{"4bf92f3577b34da6a3ce929d0e0e4736",
                            "00f067aa0ba902b7", true};
  EchoResponse response;
  grpc::Status s = Call(WithTraceContext(Background(), caller),
                        Request("t", 0), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.trace_id(), caller.trace_id);
  ASSERT_EQ(response.hops_size(), 3);
  std::set<std::string> spans = {caller.span_id.str()};
  for (const Hop& hop : response.hops()) {
    EXPECT_EQ(hop.trace_id(), caller.trace_id) << hop.service();
    EXPECT_TRUE(ParseTraceparent(FormatTraceparent(
                    {hop.trace_id(), hop.span_id(), true})))
        << hop.span_id();
    EXPECT_TRUE(spans.insert(hop.span_id()).second)
        << "span reused: " << hop.span_id();
  }

  // Without a trace in the Context, the call starts one that all hops share.
  EchoResponse fresh;
  ASSERT_TRUE(Call(Background(), Request("t", 0), &fresh).ok());
  ASSERT_EQ(fresh.hops_size(), 3);
  EXPECT_NE(fresh.trace_id(), caller.trace_id);
  for (const Hop& hop : fresh.hops()) EXPECT_EQ(hop.trace_id(), fresh.trace_id());
}

TEST_F(EchoE2ETest, DeadlineExceededEndToEnd) {
  // 1 s of work per hop, 2.5 s deadline: it runs out in the backend, half a
  // hop's work away from either edge (so a loaded machine cannot move it to
  // another hop), every hop is involved and every hop must report
  // DEADLINE_EXCEEDED.
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(2500));
  absl::Time start = absl::Now();
  EchoResponse response;
  grpc::Status s = Call(ctx, Request("late", 1000), &response);
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  // Each hop's outbound deadline is a little earlier than its own, so that
  // grpc-timeout's encoding never gives the next hop more
  // (client_interceptor.h: 97% of the time left, less 2 ms): the backend's
  // deadline, where the chain fails, is the earliest of the three hops'.
  const absl::Duration backend_deadline = internal::OutboundGrpcTimeout(
      internal::OutboundGrpcTimeout(
          internal::OutboundGrpcTimeout(absl::Milliseconds(2500))));
  EXPECT_GE(took, backend_deadline - absl::Milliseconds(50));
  EXPECT_LT(took, absl::Milliseconds(2500) + absl::Seconds(1));
  ASSERT_TRUE(chain_.WaitAllIdle());
  for (echo::EchoServer* hop : Hops()) {
    EchoStats::Snapshot st = hop->stats().Get();
    EXPECT_EQ(st.deadline_exceeded_total, 1) << hop->name();
    EXPECT_EQ(st.canceled_total, 0) << hop->name();
    EXPECT_EQ(st.completed_total, 0) << hop->name();
  }
}

TEST_F(EchoE2ETest, ClientCancelReachesLastHopAndItsWorkersWithinPromptBound) {
  auto [ctx, cancel] = WithCancel(Background());
  grpc::Status status;
  std::thread caller([&, ctx = ctx] {
    EchoResponse response;
    status = Call(ctx, Request("stop", 200), &response);
  });
  const EchoStats& backend = chain_.backend().stats();
  ASSERT_TRUE(backend.WaitUntil(
      [](const EchoStats::Snapshot& s) { return s.active_workers == kWorkers; },
      kWaitBound));
  absl::Time canceled_at = absl::Now();
  cancel();
  ASSERT_TRUE(backend.WaitUntil(testing::IsIdle, kWaitBound));
  absl::Duration to_backend = absl::Now() - canceled_at;
  caller.join();
  EXPECT_LT(to_backend, kPromptBound);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(chain_.WaitAllIdle());
  for (echo::EchoServer* hop : Hops()) {
    EchoStats::Snapshot st = hop->stats().Get();
    EXPECT_EQ(st.canceled_total, 1) << hop->name();
    EXPECT_EQ(st.finished_total(), 1) << hop->name();
  }
  ::testing::Test::RecordProperty(
      "cancel_to_backend_idle_us",
      static_cast<int>(absl::ToInt64Microseconds(to_backend)));
}

TEST_F(EchoE2ETest, StreamingRelaysAndCancelStopsEveryHop) {
  auto [ctx, cancel] = WithCancel(Background());
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  std::unique_ptr<grpc::ClientReader<EchoResponse>> reader =
      stub_->EchoStream(cc.get(), Request("tick", 20));
  EchoResponse r;
  for (int n = 1; n <= 3; ++n) {
    ASSERT_TRUE(reader->Read(&r)) << n;
    EXPECT_EQ(r.message(), "tick #" + std::to_string(n));
    ASSERT_EQ(r.hops_size(), 3);
    EXPECT_EQ(r.hops(0).service(), "frontend");
    EXPECT_EQ(r.hops(2).service(), "backend");
    EXPECT_EQ(r.hops(2).trace_id(), r.trace_id());
  }
  absl::Time canceled_at = absl::Now();
  cancel();
  int drained = 0;  // Messages already in flight may still arrive.
  while (reader->Read(&r)) ASSERT_LT(++drained, 1000);
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
  ASSERT_TRUE(chain_.backend().stats().WaitUntil(testing::IsIdle, kWaitBound));
  EXPECT_LT(absl::Now() - canceled_at, kPromptBound);
  ASSERT_TRUE(chain_.WaitAllIdle());
  for (echo::EchoServer* hop : Hops()) {
    EXPECT_EQ(hop->stats().Get().canceled_total, 1) << hop->name();
  }
}

TEST_F(EchoE2ETest, StreamingEndsAtDeadline) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(300));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  auto reader = stub_->EchoStream(cc.get(), Request("tick", 20));
  EchoResponse r;
  int received = 0;
  while (reader->Read(&r)) ASSERT_LT(++received, 1000);
  EXPECT_GT(received, 0);
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(chain_.WaitAllIdle());
  EXPECT_EQ(chain_.backend().stats().Get().deadline_exceeded_total, 1);
}

TEST(EchoE2EConcurrencyTest, HundredConcurrentCallsAndCountersReturnToZero) {
  constexpr int kCalls = 100;
  testing::WorkGate gate(kWaitBound);
  // The frontend holds every call until all 100 are in it, so they overlap
  // for certain; its concurrency limit is above 100 (the default, 64, would
  // queue 36 of them).
  EchoChain chain(kWorkers, [&](echo::EchoServerOptions& o) {
    o.before_work = gate.Hook();
    o.server_policy.defaults.max_concurrency = kCalls;
  });
  ASSERT_TRUE(chain.status().ok()) << chain.status();
  auto stub = testing::NewStub(chain.frontend());
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(60));
  struct Slot {
    std::unique_ptr<grpc::ClientContext> cc;
    EchoRequest request;
    EchoResponse response;
    grpc::Status status;
  };
  std::vector<Slot> slots(kCalls);
  std::mutex mu;
  std::condition_variable all_done;
  int done = 0;
  for (int i = 0; i < kCalls; ++i) {
    Slot& slot = slots[i];
    slot.cc = NewClientContext(ctx);
    slot.request = Request("c" + std::to_string(i), 10);
    stub->async()->Echo(slot.cc.get(), &slot.request, &slot.response,
                        [&, i](grpc::Status s) {
                          std::lock_guard<std::mutex> lock(mu);
                          slots[i].status = std::move(s);
                          if (++done == kCalls) all_done.notify_all();
                        });
  }
  // All 100 are in the frontend at the same time (held by the gate).
  EXPECT_TRUE(chain.frontend().stats().WaitUntil(
      [](const EchoStats::Snapshot& s) { return s.active_requests == kCalls; },
      kWaitBound));
  gate.Open();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(all_done.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                                  [&] { return done == kCalls; }));
  }
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_TRUE(slots[i].status.ok()) << i << ": " << slots[i].status.error_message();
    EXPECT_EQ(slots[i].response.message(), "c" + std::to_string(i));
    EXPECT_EQ(slots[i].response.hops_size(), 3);
  }
  ASSERT_TRUE(chain.WaitAllIdle());
  for (echo::EchoServer* hop :
       {&chain.frontend(), &chain.middle(), &chain.backend()}) {
    EchoStats::Snapshot st = hop->stats().Get();
    EXPECT_EQ(st.active_requests, 0) << hop->name();
    EXPECT_EQ(st.active_workers, 0) << hop->name();
    EXPECT_EQ(st.completed_total, kCalls) << hop->name();
  }
}

TEST_F(EchoE2ETest, CallOnDoneContextFailsAtOnceAndNeverReachesServer) {
  auto [canceled, cancel] = WithCancel(Background());
  cancel();
  auto [expired, unused] = WithTimeout(Background(), -absl::Seconds(1));
  int64_t before = chain_.frontend().stats().Get().finished_total();

  EchoResponse response;
  absl::Time start = absl::Now();
  grpc::Status s = Call(canceled, Request("no", 0), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(s.error_message(), "context canceled");
  s = Call(expired, Request("no", 0), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(s.error_message(), "context deadline exceeded");

  // Streaming too.
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(canceled);
  auto reader = stub_->EchoStream(cc.get(), Request("no", 10));
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));

  // No network: a target where nothing listens fails with the Context's
  // error, not UNAVAILABLE.
  int closed_port;
  {
    auto idle = echo::EchoServer::Start({});
    ASSERT_TRUE(idle.ok());
    closed_port = (*idle)->port();
  }
  auto nowhere = ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel("127.0.0.1:" + std::to_string(closed_port),
                    grpc::InsecureChannelCredentials()));
  std::unique_ptr<grpc::ClientContext> cc2 = NewClientContext(expired);
  EXPECT_EQ(nowhere->Echo(cc2.get(), Request("no", 0), &response).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);

  EchoStats::Snapshot after = chain_.frontend().stats().Get();
  EXPECT_EQ(after.finished_total(), before);
  EXPECT_EQ(after.active_requests, 0);
  EXPECT_EQ(debug::PendingClientBindingCount(), 0u);
}

TEST(EchoServerTest, ShutdownCancelsInFlightCalls) {
  auto server = echo::EchoServer::Start(
      {.name = "solo", .port = 0, .next = "", .workers = kWorkers});
  ASSERT_TRUE(server.ok());
  auto stub = testing::NewStub(**server);
  grpc::Status status;
  std::thread caller([&] {
    auto cc = NewClientContext(Background());
    EchoResponse response;
    status = stub->Echo(cc.get(), Request("long", 60000), &response);
  });
  ASSERT_TRUE((*server)->stats().WaitUntil(
      [](const EchoStats::Snapshot& s) { return s.active_workers == kWorkers; },
      kWaitBound));
  absl::Time start = absl::Now();
  (*server)->Shutdown();  // Returns once every handler has returned.
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  caller.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "server shutting down");
  // The ledger it returns says why: the server's shutdown (its glue shares
  // the drain's signal), not a client cancel or no cause.
  absl::StatusOr<Ledger> l = LedgerFromStatus(status);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->root.host, "solo");
  EXPECT_EQ(l->root.cause, CauseKind::kServerShutdown);
  EchoStats::Snapshot st = (*server)->stats().Get();
  EXPECT_TRUE(testing::IsIdle(st));
  EXPECT_EQ(st.canceled_total, 1);
}

}  // namespace
}  // namespace reqctx
