// Issue 22, attacked from a raw HTTP/2 client (tests/raw_h2_call.h): the
// echo service's client-streaming (Collect) and bidirectional (Chat) methods,
// relayed through a frontend -> middle -> backend chain, against streams that
// a gRPC client library would never send:
//   * half a message (its length prefix announces more), then silence, on
//     many streams of one connection: the frontend's message-wait timeout
//     cuts each one (a partial message is no message), every hop's call and
//     workers end;
//   * half a message, then RST_STREAM(CANCEL): every hop ends at once;
//   * each beside a real caller, who is served throughout.
// After each: every hop idle, no server call, watched call or client binding
// left, the timers back to where they were. Every wait is bounded.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "context/debug.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "streams/stream_guard.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"
#include "tests/raw_h2_call.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using echo::EchoStats;
using testing::EchoChain;
using testing::Eventually;
using testing::kWaitBound;
using testing::RawStreamEnd;

constexpr int kWorkers = 2;
constexpr int kStreams = testing::PlainOrSanitized(16, 8);
// The frontend's message-wait timeout, and how late past it a cut may come
// on a loaded machine.
constexpr absl::Duration kWait =
    testing::PlainOrSanitized(absl::Milliseconds(300), absl::Seconds(1));
constexpr absl::Duration kLate =
    testing::PlainOrSanitized(absl::Seconds(2), absl::Seconds(8));

std::string SerializedRequest() {
  EchoRequest r;
  r.set_message(std::string(200, 'm'));
  return r.SerializeAsString();
}

struct Method {
  const char* name;
  const char* path;
};
void PrintTo(const Method& m, std::ostream* os) { *os << m.name; }

class StreamAttackTest : public ::testing::TestWithParam<Method> {
 protected:
  void SetUp() override {
    streams::StreamOptions o;
    o.message_wait = kWait;
    chain_ = std::make_unique<EchoChain>(
        kWorkers, [o](echo::EchoServerOptions& options) {
          options.streams = streams::MethodStreamOptions(o);
        });
    ASSERT_TRUE(chain_->status().ok()) << chain_->status();
    stub_ = testing::NewStub(chain_->frontend());
    timers_before_ = debug::PendingTimerCount();
  }

  // A real caller's unary call through the chain: OK.
  void ExpectServed() {
    auto [ctx, cancel] = WithTimeout(Background(), kWaitBound);
    std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
    EchoRequest req;
    req.set_message("real");
    EchoResponse resp;
    const grpc::Status s = stub_->Echo(cc.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    EXPECT_EQ(resp.message(), "real");
  }

  // Every hop idle and balanced, nothing of the glue left.
  void ExpectNothingLeft() {
    ASSERT_TRUE(chain_->WaitAllIdle());
    for (echo::EchoServer* hop :
         {&chain_->frontend(), &chain_->middle(), &chain_->backend()}) {
      const EchoStats::Snapshot s = hop->stats().Get();
      EXPECT_EQ(s.active_requests, 0) << hop->name();
      EXPECT_EQ(s.active_workers, 0) << hop->name();
      EXPECT_EQ(s.finished_total(), s.started_total) << hop->name();
    }
    EXPECT_TRUE(Eventually([] { return debug::LiveServerCallCount() == 0; }));
    EXPECT_TRUE(
        Eventually([] { return debug::WatchedServerCallCount() == 0; }));
    EXPECT_TRUE(
        Eventually([] { return debug::PendingClientBindingCount() == 0; }));
    EXPECT_TRUE(Eventually(
        [&] { return debug::PendingTimerCount() <= timers_before_; }));
  }

  std::unique_ptr<EchoChain> chain_;
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
  size_t timers_before_ = 0;
};

TEST_P(StreamAttackTest, HalfAMessageThenSilenceIsCutAtTheMessageWait) {
  const absl::Time start = absl::Now();
  const testing::RawFloodResult r = testing::RawStreamFlood(
      chain_->frontend().port(), GetParam().path, SerializedRequest(), {},
      kStreams, RawStreamEnd::kStallMidMessage, absl::ZeroDuration(),
      kWait + kLate);
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(r.connected);
  EXPECT_FALSE(r.goaway);
  // The server ended every stream, by the timeout: not before it, and
  // without the attacker closing anything.
  EXPECT_EQ(r.answered, kStreams);
  EXPECT_GE(took, kWait);
  EXPECT_LT(took, kWait + kLate);
  ExpectNothingLeft();
  // Each stream reached the handler (a partial message does not hold it
  // back) and was ended as a timeout (counted once the hop is idle: a hop
  // counts a call's end after its status is sent).
  const EchoStats::Snapshot front = chain_->frontend().stats().Get();
  EXPECT_EQ(front.started_total, kStreams);
  EXPECT_EQ(front.deadline_exceeded_total, kStreams);
  ExpectServed();
  std::printf("%s: %d streams stalled mid-message, all cut after %s "
              "(message-wait %s)\n",
              GetParam().name, kStreams, absl::FormatDuration(took).c_str(),
              absl::FormatDuration(kWait).c_str());
}

TEST_P(StreamAttackTest, HalfAMessageThenResetEndsEveryHop) {
  const testing::RawFloodResult r = testing::RawStreamFlood(
      chain_->frontend().port(), GetParam().path, SerializedRequest(), {},
      kStreams, RawStreamEnd::kResetMidMessage, absl::Milliseconds(50),
      kWaitBound);
  ASSERT_TRUE(r.connected);
  EXPECT_FALSE(r.goaway);
  ExpectServed();
  ExpectNothingLeft();
  // None of them ran into the message-wait timeout: the reset ended them.
  EXPECT_EQ(chain_->frontend().stats().Get().deadline_exceeded_total, 0);
}

// A real caller beside an attacker who keeps stalling streams mid-message:
// served every time, and the attacker's streams are all cut.
TEST_P(StreamAttackTest, RealCallerServedBesideStalledStreams) {
  constexpr int kRounds = 3;
  int answered = 0;
  std::thread attacker([&] {
    for (int i = 0; i < kRounds; ++i) {
      answered += testing::RawStreamFlood(
                      chain_->frontend().port(), GetParam().path,
                      SerializedRequest(), {}, kStreams,
                      RawStreamEnd::kStallMidMessage, absl::ZeroDuration(),
                      kWait + kLate)
                      .answered;
    }
  });
  // Until the attacker's streams have surely started (the first round's
  // are cut after kWait, so the frontend serves some at this point).
  EXPECT_TRUE(chain_->frontend().stats().WaitUntil(
      [](const EchoStats::Snapshot& s) { return s.active_requests > 0; },
      kWaitBound));
  for (int i = 0; i < 5; ++i) ExpectServed();
  attacker.join();
  EXPECT_EQ(answered, kRounds * kStreams);
  ExpectNothingLeft();
}

INSTANTIATE_TEST_SUITE_P(
    Methods, StreamAttackTest,
    ::testing::Values(Method{"Collect", "/echo.v1.Echo/Collect"},
                      Method{"Chat", "/echo.v1.Echo/Chat"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace reqctx
