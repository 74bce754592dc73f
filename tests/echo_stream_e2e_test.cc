// End-to-end: the client-streaming (Collect) and bidirectional (Chat)
// methods of the echo service relayed by a frontend -> middle -> backend
// chain on loopback (issue 22, section 2). A client cancel or the deadline
// mid-stream ends the call at every hop and stops its workers; a next hop
// that fails mid-Chat ends the caller's call even while the caller is
// silent; every hop's counts return to zero. Every wait is bounded
// (kWaitBound) and on an event (EchoStats::WaitUntil, a call's end).
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "tests/echo_chain.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using echo::EchoStats;
using testing::EchoChain;
using testing::kPromptBound;
using testing::kWaitBound;

constexpr int kWorkers = 2;
constexpr int64_t kLongWorkMs = 60 * 1000;  // Ends only by cancel.

EchoRequest Request(const std::string& message, int64_t work_ms) {
  EchoRequest r;
  r.set_message(message);
  r.set_work_ms(work_ms);
  return r;
}

bool AllHopsAt(const EchoStats::Snapshot& s, int64_t active) {
  return s.active_requests == active;
}

class EchoStreamE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(chain_.status().ok()) << chain_.status();
    stub_ = testing::NewStub(chain_.frontend());
  }

  std::vector<echo::EchoServer*> Hops() {
    return {&chain_.frontend(), &chain_.middle(), &chain_.backend()};
  }

  // Waits until every hop serves exactly one call (the stream is relayed
  // end to end).
  void WaitStreamOpenAtEveryHop() {
    for (echo::EchoServer* hop : Hops()) {
      ASSERT_TRUE(hop->stats().WaitUntil(
          [](const EchoStats::Snapshot& s) { return AllHopsAt(s, 1); },
          kWaitBound))
          << hop->name();
    }
  }

  // Waits until the frontend's workers for one request all run.
  void WaitFrontendWorking() {
    ASSERT_TRUE(chain_.frontend().stats().WaitUntil(
        [](const EchoStats::Snapshot& s) {
          return s.active_workers >= kWorkers;
        },
        kWaitBound));
  }

  // After a stream's end: every hop idle, each counted the call once, in
  // `counter` (a member of EchoStats::Snapshot).
  void ExpectEveryHopEnded(int64_t EchoStats::Snapshot::*counter) {
    ASSERT_TRUE(chain_.WaitAllIdle());
    for (echo::EchoServer* hop : Hops()) {
      const EchoStats::Snapshot s = hop->stats().Get();
      EXPECT_EQ(s.*counter, 1) << hop->name();
      EXPECT_EQ(s.started_total, 1) << hop->name();
      EXPECT_EQ(s.finished_total(), 1) << hop->name();
    }
  }

  EchoChain chain_{kWorkers};
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
};

TEST_F(EchoStreamE2ETest, CollectRelaysEveryRequestThroughThreeHops) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  EchoResponse response;
  auto writer = stub_->Collect(cc.get(), &response);
  constexpr int kCount = 5;
  for (int n = 1; n <= kCount; ++n) {
    ASSERT_TRUE(writer->Write(Request("part " + std::to_string(n), 1))) << n;
  }
  ASSERT_TRUE(writer->WritesDone());
  grpc::Status s = writer->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.message(), "part 5");
  ASSERT_EQ(response.hops_size(), 3);
  EXPECT_EQ(response.hops(0).service(), "frontend");
  EXPECT_EQ(response.hops(1).service(), "middle");
  EXPECT_EQ(response.hops(2).service(), "backend");
  for (const ::echo::v1::Hop& hop : response.hops()) {
    EXPECT_EQ(hop.messages_received(), kCount) << hop.service();
    EXPECT_EQ(hop.trace_id(), response.trace_id()) << hop.service();
  }
  ExpectEveryHopEnded(&EchoStats::Snapshot::completed_total);
}

TEST_F(EchoStreamE2ETest, CollectWithNoRequestAnswersOk) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  EchoResponse response;
  auto writer = stub_->Collect(cc.get(), &response);
  ASSERT_TRUE(writer->WritesDone());
  grpc::Status s = writer->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.hops_size(), 3);
  for (const ::echo::v1::Hop& hop : response.hops()) {
    EXPECT_EQ(hop.messages_received(), 0) << hop.service();
  }
  ExpectEveryHopEnded(&EchoStats::Snapshot::completed_total);
}

TEST_F(EchoStreamE2ETest, ChatAnswersEachRequestThroughThreeHops) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  for (int n = 1; n <= 5; ++n) {
    const std::string message = "line " + std::to_string(n);
    ASSERT_TRUE(stream->Write(Request(message, 1))) << n;
    ASSERT_TRUE(stream->Read(&r)) << n;
    EXPECT_EQ(r.message(), message);
    ASSERT_EQ(r.hops_size(), 3);
    EXPECT_EQ(r.hops(0).service(), "frontend");
    EXPECT_EQ(r.hops(2).service(), "backend");
    EXPECT_EQ(r.hops(2).trace_id(), r.trace_id());
  }
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectEveryHopEnded(&EchoStats::Snapshot::completed_total);
}

// Many requests written before any response is read: the relay's two
// directions run at once and keep the order.
TEST_F(EchoStreamE2ETest, ChatPipelinesInOrder) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  auto stream = stub_->Chat(cc.get());
  constexpr int kCount = 200;
  for (int n = 0; n < kCount; ++n) {
    ASSERT_TRUE(stream->Write(Request(std::to_string(n), 0))) << n;
  }
  ASSERT_TRUE(stream->WritesDone());
  EchoResponse r;
  for (int n = 0; n < kCount; ++n) {
    ASSERT_TRUE(stream->Read(&r)) << n;
    EXPECT_EQ(r.message(), std::to_string(n));
  }
  EXPECT_FALSE(stream->Read(&r));
  EXPECT_TRUE(stream->Finish().ok());
  ExpectEveryHopEnded(&EchoStats::Snapshot::completed_total);
}

TEST_F(EchoStreamE2ETest, CollectClientCancelMidStreamStopsEveryHop) {
  auto [ctx, cancel] = WithCancel(Background());
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  EchoResponse response;
  auto writer = stub_->Collect(cc.get(), &response);
  ASSERT_TRUE(writer->Write(Request("first", 0)));
  WaitStreamOpenAtEveryHop();
  ASSERT_TRUE(writer->Write(Request("long", kLongWorkMs)));
  WaitFrontendWorking();
  const absl::Time canceled_at = absl::Now();
  cancel();
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
  ASSERT_TRUE(chain_.frontend().stats().WaitUntil(testing::IsIdle, kWaitBound));
  EXPECT_LT(absl::Now() - canceled_at, kPromptBound);
  ExpectEveryHopEnded(&EchoStats::Snapshot::canceled_total);
}

TEST_F(EchoStreamE2ETest, ChatClientCancelMidStreamStopsEveryHop) {
  auto [ctx, cancel] = WithCancel(Background());
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  ASSERT_TRUE(stream->Write(Request("first", 0)));
  ASSERT_TRUE(stream->Read(&r));
  WaitStreamOpenAtEveryHop();
  ASSERT_TRUE(stream->Write(Request("long", kLongWorkMs)));
  WaitFrontendWorking();
  const absl::Time canceled_at = absl::Now();
  cancel();
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
  ASSERT_TRUE(chain_.frontend().stats().WaitUntil(testing::IsIdle, kWaitBound));
  EXPECT_LT(absl::Now() - canceled_at, kPromptBound);
  ExpectEveryHopEnded(&EchoStats::Snapshot::canceled_total);
}

// The caller is silent (it waits for a response) when the client cancels:
// every hop is blocked reading its caller, and each one's Read ends.
TEST_F(EchoStreamE2ETest, ChatClientCancelWhileEveryHopWaitsToRead) {
  auto [ctx, cancel] = WithCancel(Background());
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  ASSERT_TRUE(stream->Write(Request("first", 0)));
  ASSERT_TRUE(stream->Read(&r));
  WaitStreamOpenAtEveryHop();
  cancel();
  EXPECT_FALSE(stream->Read(&r));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectEveryHopEnded(&EchoStats::Snapshot::canceled_total);
}

TEST_F(EchoStreamE2ETest, CollectDeadlineMidStreamEndsEveryHop) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(300));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  EchoResponse response;
  auto writer = stub_->Collect(cc.get(), &response);
  ASSERT_TRUE(writer->Write(Request("first", 0)));
  ASSERT_TRUE(writer->Write(Request("second", 0)));
  // Then silence: the deadline ends the stream at every hop.
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  ExpectEveryHopEnded(&EchoStats::Snapshot::deadline_exceeded_total);
}

TEST_F(EchoStreamE2ETest, ChatDeadlineMidRequestEndsEveryHop) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(300));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  ASSERT_TRUE(stream->Write(Request("first", 0)));
  ASSERT_TRUE(stream->Read(&r));
  // A request whose work outlasts the deadline.
  ASSERT_TRUE(stream->Write(Request("long", kLongWorkMs)));
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  ExpectEveryHopEnded(&EchoStats::Snapshot::deadline_exceeded_total);
}

// The backend goes away mid-Chat while the client waits for a response and
// sends nothing: the relays end the call (a sync handler cannot answer while
// it reads), so the client sees an error instead of waiting forever.
TEST_F(EchoStreamE2ETest, ChatNextHopFailureWhileCallerSilentEndsCall) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  ASSERT_TRUE(stream->Write(Request("first", 0)));
  ASSERT_TRUE(stream->Read(&r));
  WaitStreamOpenAtEveryHop();
  chain_.backend().Shutdown();  // Cancels the backend's call at once.
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  EXPECT_FALSE(s.ok());
  ASSERT_TRUE(chain_.WaitAllIdle());
  for (echo::EchoServer* hop : Hops()) {
    const EchoStats::Snapshot st = hop->stats().Get();
    EXPECT_EQ(st.started_total, 1) << hop->name();
    EXPECT_EQ(st.finished_total(), 1) << hop->name();
  }
}

// A bad request mid-stream fails the call with the frontend's own status;
// the hops behind it are canceled, never half-closed (they must not answer
// a stream that did not end).
TEST_F(EchoStreamE2ETest, CollectBadRequestMidStreamCancelsNextHops) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  EchoResponse response;
  auto writer = stub_->Collect(cc.get(), &response);
  ASSERT_TRUE(writer->Write(Request("first", 0)));
  WaitStreamOpenAtEveryHop();
  writer->Write(Request("bad", -1));  // May fail once the call has ended.
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << s.error_message();
  ASSERT_TRUE(chain_.WaitAllIdle());
  EXPECT_EQ(chain_.frontend().stats().Get().completed_total, 1);
  for (echo::EchoServer* hop : {&chain_.middle(), &chain_.backend()}) {
    EXPECT_EQ(hop->stats().Get().canceled_total, 1) << hop->name();
  }
}

TEST_F(EchoStreamE2ETest, ChatBadRequestMidStreamCancelsNextHops) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  ASSERT_TRUE(stream->Write(Request("first", 0)));
  ASSERT_TRUE(stream->Read(&r));
  WaitStreamOpenAtEveryHop();
  stream->Write(Request("bad", -1));  // May fail once the call has ended.
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << s.error_message();
  ASSERT_TRUE(chain_.WaitAllIdle());
  EXPECT_EQ(chain_.frontend().stats().Get().completed_total, 1);
  for (echo::EchoServer* hop : {&chain_.middle(), &chain_.backend()}) {
    EXPECT_EQ(hop->stats().Get().canceled_total, 1) << hop->name();
  }
}

}  // namespace
}  // namespace reqctx
