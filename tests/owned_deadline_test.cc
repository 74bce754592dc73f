// A server call's deadline on the callback and sync APIs is owned, not armed
// (interceptors/internal/server_call.h): no reqctx timer is queued per call,
// yet the handler's Context reports the incoming deadline and ends with
// DEADLINE_EXCEEDED when it passes, even when the client never cancels (a
// raw HTTP/2 call that just keeps its stream open: gRPC's own deadline is
// what reports it).
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "context/internal/owned_deadline.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "tests/raw_h2_call.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;

constexpr absl::Duration kTimeout = absl::Milliseconds(300);
constexpr absl::Duration kWaitBound = absl::Seconds(10);
// How late the end may be: the sync API polls every 5 ms; sanitizers and a
// loaded machine add scheduling delay.
constexpr absl::Duration kLateBound = absl::Seconds(1);

// What the handler saw of its Context.
struct Seen {
  std::optional<absl::Time> deadline;
  bool armed_at_start = true;
  absl::Time done_at;
  absl::StatusCode code = absl::StatusCode::kOk;
};

class Recorder {
 public:
  // Records the start, waits (bounded) for the Context to be done.
  void Observe(const Context& ctx) {
    Seen s;
    s.deadline = ctx.Deadline();
    s.armed_at_start = internal::HasArmedDeadlineForTesting(ctx);
    ctx.Done().WaitFor(kWaitBound);
    s.done_at = absl::Now();
    s.code = ctx.Err().code();
    std::lock_guard<std::mutex> lock(mu_);
    seen_ = s;
    changed_.notify_all();
  }
  std::optional<Seen> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                      [this] { return seen_.has_value(); });
    return seen_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::optional<Seen> seen_;
};

class SyncEcho final : public ::echo::v1::Echo::Service {
 public:
  explicit SyncEcho(Recorder* r) : r_(r) {}
  grpc::Status Echo(grpc::ServerContext* sc, const EchoRequest*,
                    EchoResponse*) override {
    Context ctx = FromServerContext(sc);
    r_->Observe(ctx);
    return ToGrpcStatus(ctx.Err());
  }

 private:
  Recorder* const r_;
};

class CallbackEcho final : public ::echo::v1::Echo::CallbackService {
 public:
  explicit CallbackEcho(Recorder* r) : r_(r) {}
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* sc,
                                 const EchoRequest*, EchoResponse*) override {
    Context ctx = FromServerContext(sc);
    grpc::ServerUnaryReactor* reactor = sc->DefaultReactor();
    // Observe off gRPC's callback thread (it blocks until done).
    std::thread([this, ctx, reactor] {
      r_->Observe(ctx);
      reactor->Finish(ToGrpcStatus(ctx.Err()));
    }).detach();
    return reactor;
  }

 private:
  Recorder* const r_;
};

void ExpectOwnedDeadline(grpc::Service* service, Recorder& recorder) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(service);
  InstallServerInterceptors(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  std::string bytes;
  EchoRequest().SerializeToString(&bytes);
  const absl::Time sent = absl::Now();
  testing::RawCallResult r = testing::RawUnaryCall(
      port, "/echo.v1.Echo/Echo", bytes,
      {{"grpc-timeout", std::to_string(absl::ToInt64Milliseconds(kTimeout)) + "m"}},
      kWaitBound);
  std::optional<Seen> seen = recorder.Wait();
  ASSERT_TRUE(seen.has_value());
  EXPECT_FALSE(seen->armed_at_start) << "a timer was armed for the call";
  ASSERT_TRUE(seen->deadline.has_value());
  EXPECT_GE(*seen->deadline, sent);
  EXPECT_LE(*seen->deadline, sent + kTimeout + absl::Milliseconds(50));
  EXPECT_EQ(seen->code, absl::StatusCode::kDeadlineExceeded);
  // Ended by the deadline: not before it (1 ms for clock reads), promptly.
  EXPECT_GE(seen->done_at, *seen->deadline - absl::Milliseconds(1));
  EXPECT_LE(seen->done_at, *seen->deadline + kLateBound);
  EXPECT_TRUE(r.connected);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

TEST(OwnedDeadlineTest, SyncCallReportsAndEndsAtItsDeadlineWithNoTimerArmed) {
  Recorder recorder;
  SyncEcho service(&recorder);
  ExpectOwnedDeadline(&service, recorder);
}

TEST(OwnedDeadlineTest, CallbackCallReportsAndEndsAtItsDeadlineWithNoTimerArmed) {
  Recorder recorder;
  CallbackEcho service(&recorder);
  ExpectOwnedDeadline(&service, recorder);
}

// The core hook alone: an owned deadline ends only when armed, then at its
// deadline; arming after the deadline ends it at once.
TEST(OwnedDeadlineTest, OwnedTimeoutEndsOnlyOnceArmed) {
  auto [ctx, cancel] = internal::WithOwnedTimeout(Background(), absl::Milliseconds(20));
  ASSERT_TRUE(ctx.Deadline().has_value());
  EXPECT_FALSE(internal::HasArmedDeadlineForTesting(ctx));
  EXPECT_FALSE(ctx.Done().WaitFor(absl::Milliseconds(60)));  // Past it: live.
  internal::ArmOwnedDeadline(cancel);
  EXPECT_TRUE(ctx.IsDone());
  EXPECT_EQ(ctx.Err().code(), absl::StatusCode::kDeadlineExceeded);

  auto [later, cancel_later] =
      internal::WithOwnedTimeout(Background(), absl::Milliseconds(50));
  const absl::Time armed_at = absl::Now();
  internal::ArmOwnedDeadline(cancel_later);
  EXPECT_TRUE(internal::HasArmedDeadlineForTesting(later));
  ASSERT_TRUE(later.Done().WaitFor(kWaitBound));
  EXPECT_EQ(later.Err().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now(), *later.Deadline() - absl::Milliseconds(1));
  EXPECT_LT(absl::Now() - armed_at, kWaitBound);
}

}  // namespace
}  // namespace reqctx
