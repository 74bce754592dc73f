// //async:grpc_stream: a bidi stream driven by a coroutine (BidiStream)
// against a callback server on 127.0.0.1 (reqctx's interceptors; the server
// handler is a //streams bound reactor): end to end, a cancel while a Read
// is awaited, the message-wait timeout while a Read is awaited, the
// deadline mid-stream, and destroying a suspended coroutine; after each, no
// guard or server call is left. Every wait is bounded.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "async/coro.h"
#include "async/stream.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/interceptors.h"
#include "streams/callback.h"
#include "streams/stream_guard.h"
#include "tests/process_probe.h"
#include "tests/stream_test.grpc.pb.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using ::reqctx::streamtest::Msg;
using ::reqctx::streamtest::StreamTest;
using ::reqctx::testing::PlainOrSanitized;
using Stream = BidiStream<Msg, Msg>;

const absl::Duration kWait = PlainOrSanitized(absl::Milliseconds(200),
                                              absl::Milliseconds(600));
const absl::Duration kDeadline = PlainOrSanitized(absl::Milliseconds(600),
                                                  absl::Milliseconds(1800));
constexpr absl::Duration kBound = absl::Seconds(30);
constexpr char kMethod[] = "/reqctx.streamtest.StreamTest/Bidi";

// Echoes each message (count = messages read so far) except payload
// "silent", which it reads without answering. Its fields are under mu_:
// gRPC hands the reactor to its threads through gRPC core, which TSan does
// not see.
class EchoBidi : public streams::ServerBidiReactor<Msg, Msg> {
 public:
  explicit EchoBidi(grpc::CallbackServerContext* sc)
      : streams::ServerBidiReactor<Msg, Msg>(sc, streams::StreamOptions{},
                                            kMethod) {
    { std::lock_guard<std::mutex> publish(mu_); }  // The fields, to TSan.
    StartRead(&in_);
  }

 private:
  void OnStreamReadDone(bool ok) override {
    if (!ok) { Finish(grpc::Status::OK); return; }
    bool silent;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++read_;
      silent = in_.payload() == "silent";
      if (!silent) {
        out_ = in_;
        out_.set_count(read_);
      }
    }
    if (silent) {
      StartRead(&in_);
    } else {
      StartWrite(&out_);
    }
  }
  void OnStreamWriteDone(bool ok) override {
    if (!ok) { Finish(grpc::Status::OK); return; }
    StartRead(&in_);
  }
  void OnStreamDone() override { delete this; }

  std::mutex mu_;
  Msg in_, out_;
  int read_ = 0;
};

class Service : public StreamTest::CallbackService {
  grpc::ServerBidiReactor<Msg, Msg>* Bidi(
      grpc::CallbackServerContext* sc) override {
    return new EchoBidi(sc);
  }
};

// One server for the suite (as streams_test): gRPC 1.51 is not exercised
// with a server started and shut down per test here.
class CoroStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    service_ = new Service();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_);
    InstallServerInterceptors(builder);
    server_ = builder.BuildAndStart().release();
    stub_ = StreamTest::NewStub(reqctx::CreateChannel(
                                    "127.0.0.1:" + std::to_string(port),
                                    grpc::InsecureChannelCredentials()))
                .release();
  }
  static void TearDownTestSuite() {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
    delete stub_;
    delete server_;
    delete service_;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }
  void TearDown() override {
    // No guard or server call is left.
    EXPECT_TRUE(testing::Eventually(
        [] {
          return streams::StreamGuard::LiveForTesting() == 0 &&
                 debug::LiveServerCallCount() == 0;
        },
        kBound))
        << "guards " << streams::StreamGuard::LiveForTesting()
        << ", server calls " << debug::LiveServerCallCount();
  }

  static Service* service_;
  static grpc::Server* server_;
  static StreamTest::Stub* stub_;
};
Service* CoroStreamTest::service_ = nullptr;
grpc::Server* CoroStreamTest::server_ = nullptr;
StreamTest::Stub* CoroStreamTest::stub_ = nullptr;

struct Outcome {
  int replies = 0;
  bool last_read = true;
  grpc::Status status;
  streams::StreamStats stats;
};

// Sends `n` messages, reading each reply, then `tail` (if not empty) and a
// Read (setting *at_tail, if given, just before it); then half-closes and
// finishes.
Task<Outcome> Drive(Context ctx, StreamTest::Stub* stub,
                    streams::StreamOptions options, int n, std::string tail,
                    bool* at_tail = nullptr) {
  Outcome out;
  Stream stream(ctx, stub, &StreamTest::Stub::async::Bidi, options, kMethod);
  for (int i = 0; i < n; ++i) {
    if (!co_await stream.Write(Msg())) break;
    Msg reply;
    if (!co_await stream.Read(&reply)) { out.last_read = false; break; }
    EXPECT_EQ(reply.count(), i + 1);
    ++out.replies;
  }
  if (!tail.empty()) {
    Msg m;
    m.set_payload(tail);
    (void)co_await stream.Write(m);
    Msg reply;
    if (at_tail != nullptr) *at_tail = true;
    out.last_read = co_await stream.Read(&reply);
  }
  (void)co_await stream.WritesDone();
  Msg after;
  if (out.last_read) out.last_read = co_await stream.Read(&after);  // End.
  out.status = co_await stream.Finish();
  // After Finish: at once, false; the same status.
  EXPECT_FALSE(co_await stream.Read(&after));
  EXPECT_EQ((co_await stream.Finish()).error_code(), out.status.error_code());
  out.stats = stream.stats();
  co_return out;
}

TEST_F(CoroStreamTest, BidiEndToEnd) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(20));
  Outcome o = RunSync(Drive(ctx, stub_, {}, 50, ""));
  EXPECT_EQ(o.replies, 50);
  EXPECT_FALSE(o.last_read);  // The server ended the stream.
  EXPECT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.stats.messages_in, 50u);
  EXPECT_EQ(o.stats.messages_out, 50u);
  EXPECT_EQ(o.stats.timer_ops, 0u);
}

TEST_F(CoroStreamTest, MessageWaitTimeoutWhileAwaitingRead) {
  streams::StreamOptions options;
  options.message_wait = kWait;
  const absl::Time start = absl::Now();
  Outcome o = RunSync(Drive(Background(), stub_, options, 3, "silent"));
  EXPECT_GE(absl::Now() - start, kWait);
  EXPECT_EQ(o.replies, 3);
  EXPECT_FALSE(o.last_read);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(absl::StrContains(o.status.error_message(), "message-wait"))
      << o.status.error_message();
  EXPECT_EQ(o.stats.timeout, streams::StreamTimeout::kMessageWait);
}

TEST_F(CoroStreamTest, IdleTimeoutWhileAwaitingRead) {
  streams::StreamOptions options;
  options.idle = kWait;
  Outcome o = RunSync(Drive(Background(), stub_, options, 2, "silent"));
  EXPECT_EQ(o.replies, 2);
  EXPECT_FALSE(o.last_read);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(absl::StrContains(o.status.error_message(), "idle"))
      << o.status.error_message();
  EXPECT_EQ(o.stats.timeout, streams::StreamTimeout::kIdle);
}

// Runs `loop` until *flag (set by its task) or kBound; the task is then
// suspended in the co_await that follows setting the flag.
bool RunUntilFlag(Loop& loop, const bool* flag) {
  const absl::Time end = absl::Now() + kBound;
  while (!*flag && absl::Now() < end) {
    if (loop.RunFor(absl::Milliseconds(5))) return false;  // Task ended.
  }
  return *flag;
}

TEST_F(CoroStreamTest, DeadlineMidStream) {
  auto [ctx, cancel] = WithTimeout(Background(), kDeadline);
  Outcome o = RunSync(Drive(ctx, stub_, {}, 2, "silent"));
  EXPECT_EQ(o.replies, 2);
  EXPECT_FALSE(o.last_read);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << o.status.error_message();
}

TEST_F(CoroStreamTest, CancelWhileAwaitingRead) {
  auto [ctx, cancel] = WithCancel(Background());
  Loop loop;
  std::optional<Outcome> result;
  bool at_tail = false;
  loop.Spawn([](Context c, StreamTest::Stub* stub, std::optional<Outcome>* out,
                bool* at) -> Task<void> {
    *out = co_await Drive(c, stub, {}, 1, "silent", at);
  }(ctx, stub_, &result, &at_tail));
  // Suspended in the Read after "silent" (it never ends by itself).
  ASSERT_TRUE(RunUntilFlag(loop, &at_tail));
  EXPECT_FALSE(loop.RunFor(absl::Milliseconds(20)));
  EXPECT_FALSE(result.has_value());
  std::thread canceller([c = cancel] { c(); });
  EXPECT_TRUE(loop.RunFor(kBound));
  canceller.join();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->replies, 1);
  EXPECT_FALSE(result->last_read);
  EXPECT_EQ(result->status.error_code(), grpc::StatusCode::CANCELLED)
      << result->status.error_message();
}

TEST_F(CoroStreamTest, AlreadyDoneContextFailsAtOnce) {
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  Outcome o = RunSync(Drive(ctx, stub_, {}, 3, ""));
  EXPECT_EQ(o.replies, 0);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(CoroStreamTest, DestroyingASuspendedCoroutineCancelsTheCall) {
  auto loop = std::make_unique<Loop>();
  bool at_tail = false;
  loop->Spawn([](StreamTest::Stub* stub, bool* at) -> Task<void> {
    (void)co_await Drive(Background(), stub, {}, 1, "silent", at);
  }(stub_, &at_tail));
  ASSERT_TRUE(RunUntilFlag(*loop, &at_tail));
  EXPECT_EQ(streams::StreamGuard::LiveForTesting(), 2);  // Client + server.
  loop.reset();  // Destroys the suspended task: the call is cancelled.
  // TearDown: no guard or server call left.
}

// A Read and a Write pending together (WhenAll), and destroying a task
// suspended in Finish.
TEST_F(CoroStreamTest, ReadAndWritePendingTogether) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(20));
  auto body = [](Context c, StreamTest::Stub* stub) -> Task<int> {
    Stream stream(c, stub, &StreamTest::Stub::async::Bidi, {}, kMethod);
    int got = 0;
    for (int i = 0; i < 20; ++i) {
      Msg reply;
      auto read = [](Stream* s, Msg* m) -> Task<bool> {
        co_return co_await s->Read(m);
      }(&stream, &reply);
      auto write = [](Stream* s) -> Task<bool> {
        co_return co_await s->Write(Msg());
      }(&stream);
      std::vector<Task<bool>> both;
      both.push_back(std::move(read));
      both.push_back(std::move(write));
      std::vector<bool> ok = co_await WhenAll(std::move(both));
      if (!ok[0] || !ok[1]) break;
      EXPECT_EQ(reply.count(), i + 1);
      ++got;
    }
    (void)co_await stream.WritesDone();
    grpc::Status s = co_await stream.Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    co_return got;
  };
  EXPECT_EQ(RunSync(body(ctx, stub_)), 20);
}

TEST_F(CoroStreamTest, DestroyingATaskSuspendedInFinish) {
  auto loop = std::make_unique<Loop>();
  bool at_finish = false;
  loop->Spawn([](StreamTest::Stub* stub, bool* at) -> Task<void> {
    Stream stream(Background(), stub, &StreamTest::Stub::async::Bidi, {},
                  kMethod);
    (void)co_await stream.Write(Msg());
    *at = true;
    (void)co_await stream.Finish();  // No WritesDone: the server waits.
    ADD_FAILURE() << "resumed";
  }(stub_, &at_finish));
  ASSERT_TRUE(RunUntilFlag(*loop, &at_finish));
  EXPECT_FALSE(loop->RunFor(absl::Milliseconds(20)));
  loop.reset();
}

}  // namespace
}  // namespace reqctx
