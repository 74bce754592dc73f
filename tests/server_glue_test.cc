// The server glue beyond the echo service: the callback API, Current() in
// sync handlers, release at call end, and hostile trace headers.
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "context/current.h"
#include "context/debug.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "tests/echo_chain.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using testing::kPromptBound;
using testing::kWaitBound;

// What a handler saw: that it started, and when its Context was done.
class HandlerProbe {
 public:
  void Started() {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
    changed_.notify_all();
  }
  // Waits (bounded) for `ctx` to be done and records when, and its error.
  void AwaitDone(const Context& ctx) {
    ctx.Done().WaitFor(kWaitBound);
    std::lock_guard<std::mutex> lock(mu_);
    done_at_ = absl::Now();
    err_ = ctx.Err();
    changed_.notify_all();
  }
  bool WaitStarted() {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                             [this] { return started_; });
  }
  // When the handler's Context was seen done, and its error.
  std::optional<std::pair<absl::Time, absl::Status>> WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                           [this] { return done_at_.has_value(); })) {
      return std::nullopt;
    }
    return std::make_pair(*done_at_, err_);
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool started_ = false;
  std::optional<absl::Time> done_at_;
  absl::Status err_;
};

// Callback API: the handler hands the call's Context to a thread that waits
// for it to be done, then finishes the call with the Context's error.
class CallbackEcho final : public ::echo::v1::Echo::CallbackService {
 public:
  ~CallbackEcho() override {
    for (std::thread& t : threads_) t.join();
  }

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* sc,
                                 const EchoRequest*, EchoResponse*) override {
    Context ctx = FromServerContext(sc);
    grpc::ServerUnaryReactor* reactor = sc->DefaultReactor();
    std::lock_guard<std::mutex> lock(mu_);
    probe_.Started();
    threads_.emplace_back([this, ctx, reactor] {
      probe_.AwaitDone(ctx);
      reactor->Finish(ToGrpcStatus(ctx.Err()));
    });
    return reactor;
  }

  HandlerProbe& probe() { return probe_; }

 private:
  HandlerProbe probe_;
  std::mutex mu_;
  std::vector<std::thread> threads_;  // Guarded by mu_.
};

// Sync API: a handler that never calls FromServerContext and waits on
// Current() alone, as code that cannot take a Context parameter does.
class CurrentOnlyEcho final : public ::echo::v1::Echo::Service {
 public:
  grpc::Status Echo(grpc::ServerContext*, const EchoRequest*,
                    EchoResponse*) override {
    Context current = Current();
    probe_.Started();
    probe_.AwaitDone(current);
    return ToGrpcStatus(current.Err());
  }
  HandlerProbe& probe() { return probe_; }

 private:
  HandlerProbe probe_;
};

// Sync API: reports whether Current() is the call's Context, and keeps the
// call's Context to check that it is released when the call ends.
class SyncProbe final : public ::echo::v1::Echo::Service {
 public:
  grpc::Status Echo(grpc::ServerContext* sc, const EchoRequest*,
                    EchoResponse* response) override {
    Context ctx = FromServerContext(sc);
    std::optional<TraceContext> mine = GetTraceContext(ctx);
    std::optional<TraceContext> current = GetTraceContext(Current());
    bool same = mine && current && mine->span_id == current->span_id &&
                ctx.Deadline() == Current().Deadline();
    response->set_message(same ? "current is the call's context" : "different");
    response->set_trace_id(mine ? mine->trace_id.str() : "");
    std::lock_guard<std::mutex> lock(mu_);
    last_ = ctx;
    return grpc::Status::OK;
  }
  Context last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }

 private:
  std::mutex mu_;
  Context last_;
};

template <typename Service>
std::unique_ptr<grpc::Server> Serve(Service* service, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           port);
  builder.RegisterService(service);
  InstallServerInterceptors(builder);
  return builder.BuildAndStart();
}

std::string Target(int port) { return "127.0.0.1:" + std::to_string(port); }

// A callback-API server with the reqctx interceptor, and a stub through a
// reqctx channel.
// A server with `Service` on a free loopback port and a stub for it.
template <typename Service>
class ServedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = Serve(&service_, &port_);
    ASSERT_NE(server_, nullptr);
    stub_ = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
        Target(port_), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  // A client cancel reaches the handler's Context within the prompt bound,
  // as CANCELLED on both sides.
  void ExpectClientCancelReachesHandler() {
    auto [ctx, cancel] = WithCancel(Background());
    grpc::Status status;
    std::thread caller([&, ctx = ctx] {
      auto cc = NewClientContext(ctx);
      EchoResponse response;
      status = stub_->Echo(cc.get(), EchoRequest(), &response);
    });
    ASSERT_TRUE(service_.probe().WaitStarted());
    const absl::Time canceled_at = absl::Now();
    cancel();
    auto done = service_.probe().WaitDone();
    caller.join();
    ASSERT_TRUE(done.has_value());
    EXPECT_LT(done->first - canceled_at, kPromptBound);
    EXPECT_EQ(done->second.code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  }

  // A server shutdown cancels the handler's Context; the client sees an
  // error.
  void ExpectShutdownCancelsHandler() {
    grpc::Status status;
    std::thread caller([&] {
      auto cc = NewClientContext(Background());
      EchoResponse response;
      status = stub_->Echo(cc.get(), EchoRequest(), &response);
    });
    ASSERT_TRUE(service_.probe().WaitStarted());
    const absl::Time shutdown_at = absl::Now();
    // Shutdown waits for sync handlers to return: from another thread.
    std::thread stopper(
        [this] { server_->Shutdown(std::chrono::system_clock::now()); });
    auto done = service_.probe().WaitDone();
    stopper.join();
    caller.join();
    ASSERT_TRUE(done.has_value());
    EXPECT_EQ(done->second.code(), absl::StatusCode::kCancelled);
    EXPECT_LT(done->first - shutdown_at, kPromptBound);
    EXPECT_FALSE(status.ok());
  }

  Service service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
};

using CallbackApiTest = ServedTest<CallbackEcho>;

TEST_F(CallbackApiTest, ClientCancelReachesHandlerContextWithinPromptBound) {
  ExpectClientCancelReachesHandler();
}

TEST_F(CallbackApiTest, IncomingDeadlineEndsHandlerContext) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(200));
  auto cc = NewClientContext(ctx);
  EchoResponse response;
  grpc::Status status = stub_->Echo(cc.get(), EchoRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  auto done = service_.probe().WaitDone();
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->second.code(), absl::StatusCode::kDeadlineExceeded);
}

// Deadlines fire by the monotonic clock end to end: with the wall clock
// stepped back an hour (test hook), the client's outbound deadline and the
// handler's Context still end after ~200 ms, not an hour later.
TEST_F(CallbackApiTest, DeadlinesIgnoreAWallClockStep) {
  struct Restore {
    ~Restore() { debug::SetWallClockOffsetForTesting(absl::ZeroDuration()); }
  } restore;
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(200));
  debug::SetWallClockOffsetForTesting(-absl::Hours(1));
  const absl::Time start = absl::Now();
  auto cc = NewClientContext(ctx);
  EchoResponse response;
  grpc::Status status = stub_->Echo(cc.get(), EchoRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  auto done = service_.probe().WaitDone();
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->second.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(done->first - start, absl::Seconds(30));
}

TEST_F(CallbackApiTest, ServerShutdownCancelsHandlerContext) {
  ExpectShutdownCancelsHandler();
}

class SyncProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = Serve(&service_, &port_);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now()); }

  SyncProbe service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(SyncProbeTest, CurrentIsTheCallsContextAndItIsReleasedAtCallEnd) {
  auto stub = ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel(Target(port_), grpc::InsecureChannelCredentials()));
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  auto cc = NewClientContext(ctx);
  EchoResponse response;
  ASSERT_TRUE(stub->Echo(cc.get(), EchoRequest(), &response).ok());
  EXPECT_EQ(response.message(), "current is the call's context");
  // The status is sent after the release, so the client sees it released.
  EXPECT_EQ(service_.last().Err().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(debug::LiveServerCallCount(), 0u);
}

TEST_F(SyncProbeTest, HostileTraceHeadersNeverFailTheCall) {
  // A plain channel and ClientContext, so the headers go out as written.
  auto stub = ::echo::v1::Echo::NewStub(grpc::CreateChannel(
      Target(port_), grpc::InsecureChannelCredentials()));
  const std::string valid =
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"junk"},
      {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"},
      {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
      {"00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
      {valid + std::string(2000, 'a')},  // (gRPC itself caps metadata at 8 KiB)
      {valid, valid},
      {valid},
  };
  for (const auto& headers : cases) {
    grpc::ClientContext cc;
    for (const std::string& h : headers) cc.AddMetadata("traceparent", h);
    cc.AddMetadata("tracestate", std::string(2000, 'x'));
    EchoResponse response;
    grpc::Status s = stub->Echo(&cc, EchoRequest(), &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    bool continues = headers.size() == 1 && headers[0] == valid;
    EXPECT_EQ(response.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736",
              continues);
    EXPECT_TRUE(ParseTraceparent(FormatTraceparent(
        {response.trace_id(), "00f067aa0ba902b7", true})));
  }
}

using CurrentOnlyTest = ServedTest<CurrentOnlyEcho>;

// Current() alone sees a client cancel within the same bound as
// FromServerContext(sc).Done() (the watcher polls every sync call).
TEST_F(CurrentOnlyTest, ClientCancelReachesCurrentWithinPromptBound) {
  ExpectClientCancelReachesHandler();
}

TEST_F(CurrentOnlyTest, ServerShutdownReachesCurrentWithinPromptBound) {
  ExpectShutdownCancelsHandler();
}

TEST(FromServerContextTest, UnknownCallGetsCanceledContext) {
  grpc::ServerContext sc;
  EXPECT_EQ(FromServerContext(&sc).Err().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace reqctx
