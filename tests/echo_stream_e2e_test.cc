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
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "streams/stream_guard.h"
#include "tests/echo_chain.h"
#include "tests/test_timing.h"

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

// A stream cut by a timeout: its status names it. The code documented by
// streams/stream_guard.h is DEADLINE_EXCEEDED; streams/ at 47707f1 cancels
// the gRPC call with CANCELLED (its Context's Err(), not the cause's code),
// so CANCELLED is accepted here until it does (reported to the lead).
void ExpectCutBy(const grpc::Status& s, const std::string& timeout) {
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  EXPECT_NE(s.error_message().find("reqctx stream " + timeout + " timeout"),
            std::string::npos)
      << s.error_message();
}

// Stream timeouts, set on the frontend (EchoServerOptions::streams).
class EchoStreamTimeoutTest : public ::testing::Test {
 protected:
  static constexpr absl::Duration kWait =
      testing::PlainOrSanitized(absl::Milliseconds(300), absl::Seconds(1));
  // How late past its timeout a cut may come on a loaded machine.
  static constexpr absl::Duration kLate =
      testing::PlainOrSanitized(absl::Seconds(2), absl::Seconds(8));

  void Start(absl::Duration message_wait, absl::Duration idle) {
    streams::StreamOptions o;
    o.message_wait = message_wait;
    o.idle = idle;
    chain_ = std::make_unique<EchoChain>(kWorkers, [o](echo::EchoServerOptions&
                                                           options) {
      options.streams = streams::MethodStreamOptions(o);
    });
    ASSERT_TRUE(chain_->status().ok()) << chain_->status();
    stub_ = testing::NewStub(chain_->frontend());
  }

  // Every hop idle, each counted the call once; the frontend's as
  // deadline-exceeded (the hops behind it were canceled by it).
  void ExpectCutAtFrontend() {
    ASSERT_TRUE(chain_->WaitAllIdle());
    for (echo::EchoServer* hop :
         {&chain_->frontend(), &chain_->middle(), &chain_->backend()}) {
      const EchoStats::Snapshot s = hop->stats().Get();
      EXPECT_EQ(s.started_total, 1) << hop->name();
      EXPECT_EQ(s.finished_total(), 1) << hop->name();
    }
    EXPECT_EQ(chain_->frontend().stats().Get().deadline_exceeded_total, 1);
  }

  std::unique_ptr<EchoChain> chain_;
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
};

TEST_F(EchoStreamTimeoutTest, CollectStalledClientCutAtMessageWait) {
  Start(kWait, absl::InfiniteDuration());
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  EchoResponse response;
  auto writer = stub_->Collect(cc.get(), &response);
  ASSERT_TRUE(writer->Write(Request("first", 0)));
  ASSERT_TRUE(writer->Write(Request("second", 0)));
  const absl::Time stalled_at = absl::Now();
  // Then silence, with no deadline: only the message-wait timeout ends it.
  grpc::Status s = writer->Finish();
  const absl::Duration took = absl::Now() - stalled_at;
  ExpectCutBy(s, "message-wait");
  EXPECT_NE(s.error_message().find("after 2 messages received"),
            std::string::npos)
      << s.error_message();
  EXPECT_GE(took, kWait);
  EXPECT_LT(took, kWait + kLate);
  ExpectCutAtFrontend();
}

TEST_F(EchoStreamTimeoutTest, ChatStalledClientCutAtMessageWait) {
  Start(kWait, absl::InfiniteDuration());
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  ASSERT_TRUE(stream->Write(Request("first", 0)));
  // The frontend waits for the next request from when it read this one.
  const absl::Time stalled_at = absl::Now();
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  const absl::Duration took = absl::Now() - stalled_at;
  ExpectCutBy(s, "message-wait");
  EXPECT_GE(took, kWait);
  EXPECT_LT(took, kWait + kLate);
  ExpectCutAtFrontend();
}

// Writes large Chat requests and never reads: every hop's Write ends up
// blocked on flow control, and the frontend's idle timeout (or, with
// `deadline`, the deadline) ends the call. Returns its status.
grpc::Status ChatWithoutReading(::echo::v1::Echo::Stub& stub,
                                const Context& ctx, int* written) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  auto stream = stub.Chat(cc.get());
  const EchoRequest big = Request(std::string(256 * 1024, 'x'), 0);
  // Bounded: flow control stops the writes long before (a few MB per hop).
  constexpr int kMaxWrites = 4000;
  for (*written = 0; *written < kMaxWrites && stream->Write(big);) {
    ++*written;
  }
  // The call has ended: gRPC gives its status only once what arrived before
  // it was read.
  EchoResponse r;
  for (int n = 0; n <= kMaxWrites && stream->Read(&r); ++n) {
  }
  return stream->Finish();
}

TEST_F(EchoStreamTimeoutTest, ChatClientThatNeverReadsCutAtIdle) {
  Start(absl::InfiniteDuration(), kWait);
  int written = 0;
  grpc::Status s = ChatWithoutReading(*stub_, Background(), &written);
  ExpectCutBy(s, "idle");
  EXPECT_GT(written, 0);
  EXPECT_LT(written, 4000);
  ExpectCutAtFrontend();
}

TEST_F(EchoStreamTimeoutTest, ChatClientThatNeverReadsEndsAtDeadline) {
  Start(absl::InfiniteDuration(), absl::InfiniteDuration());
  auto [ctx, cancel] = WithTimeout(Background(), 2 * kWait);
  int written = 0;
  grpc::Status s = ChatWithoutReading(*stub_, ctx, &written);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  EXPECT_LT(written, 4000);
  ASSERT_TRUE(chain_->WaitAllIdle());
  for (echo::EchoServer* hop :
       {&chain_->frontend(), &chain_->middle(), &chain_->backend()}) {
    EXPECT_EQ(hop->stats().Get().finished_total(), 1) << hop->name();
  }
}

// Within its timeouts a stream runs as long as it likes.
TEST_F(EchoStreamTimeoutTest, ActiveStreamOutlivesItsTimeouts) {
  Start(kWait, kWait);
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(Background());
  auto stream = stub_->Chat(cc.get());
  EchoResponse r;
  const absl::Time start = absl::Now();
  int n = 0;
  // Each exchange well within the timeouts, for longer than 2 of them.
  while (absl::Now() - start < 2 * kWait) {
    ASSERT_TRUE(stream->Write(Request("tick", 10))) << n;
    ASSERT_TRUE(stream->Read(&r)) << n;
    ASSERT_LT(++n, 100000);
  }
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(chain_->WaitAllIdle());
  EXPECT_EQ(chain_->frontend().stats().Get().completed_total, 1);
}

TEST(StreamTimeoutFlagsTest, DefaultsAndPerMethod) {
  auto o = echo::StreamTimeoutFlags(0, 0, "");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->For("/echo.v1.Echo/Chat").message_wait,
            absl::InfiniteDuration());
  o = echo::StreamTimeoutFlags(100, 2000, "Chat=500/0, Collect=0/7");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->For("/echo.v1.Echo/EchoStream").message_wait,
            absl::Milliseconds(100));
  EXPECT_EQ(o->For("/echo.v1.Echo/EchoStream").idle, absl::Seconds(2));
  EXPECT_EQ(o->For("/echo.v1.Echo/Chat").message_wait,
            absl::Milliseconds(500));
  EXPECT_EQ(o->For("/echo.v1.Echo/Chat").idle, absl::InfiniteDuration());
  EXPECT_EQ(o->For("/echo.v1.Echo/Collect").message_wait,
            absl::InfiniteDuration());
  EXPECT_EQ(o->For("/echo.v1.Echo/Collect").idle, absl::Milliseconds(7));
}

TEST(StreamTimeoutFlagsTest, RefusesBadValuesNamingThem) {
  auto message = [](int64_t wait, int64_t idle, std::string_view per) {
    auto o = echo::StreamTimeoutFlags(wait, idle, per);
    EXPECT_FALSE(o.ok());
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(o.status().message());
  };
  EXPECT_NE(message(-1, 0, "").find("--stream_message_wait_ms"),
            std::string::npos);
  EXPECT_NE(message(0, -5, "").find("--stream_idle_ms"), std::string::npos);
  for (const char* bad : {"Echo=1/1", "Chat", "Chat=1", "Chat=1/x",
                          "Chat=-1/0", "Chat=1/1,Chat=2/2", ",", "Chat=1/2/3"}) {
    EXPECT_NE(message(0, 0, bad).find("--stream_timeouts"), std::string::npos)
        << bad;
  }
}

}  // namespace
}  // namespace reqctx
