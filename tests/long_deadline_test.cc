// Long deadlines: a deadline of 15 s or more that runs out in the last of
// three hops is DEADLINE_EXCEEDED at every hop. gRPC C++ rounds grpc-timeout
// up (to 100 ms units between 10 and 100 s), so each hop's deadline lies up
// to ~100 ms after its caller's, and the caller's deadline reaches the hop
// first, as a cancel; the glue must still call it the deadline. The calls
// run concurrently (one deadline's wait for all of them) with deadlines
// spread over one 100 ms rounding unit, so the rounding takes many values.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "services/echo/echo_stats.h"
#include "tests/echo_chain.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using echo::EchoStats;

constexpr int kCalls = 8;
constexpr absl::Duration kDeadline = absl::Seconds(15);
// kCalls offsets spread over one 100 ms grpc-timeout unit.
const absl::Duration kSpread = absl::Milliseconds(100 / kCalls);

// The last hop: waits for its call's Context and counts how it ended.
class WaitingBackend final : public ::echo::v1::Echo::Service {
 public:
  grpc::Status Echo(grpc::ServerContext* sc, const EchoRequest*,
                    EchoResponse*) override {
    Context ctx = FromServerContext(sc);
    stats_.RequestStarted();
    ctx.Done().WaitFor(kDeadline + testing::kWaitBound);
    stats_.RequestFinished(ctx, ctx.Err());
    return ToGrpcStatus(ctx.Err());
  }
  const EchoStats& stats() const { return stats_; }

 private:
  EchoStats stats_;
};

TEST(LongDeadlineTest, ExpiringInTheLastHopIsDeadlineExceededAtEveryHop) {
  WaitingBackend backend;
  grpc::ServerBuilder builder;
  int backend_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &backend_port);
  builder.RegisterService(&backend);
  InstallServerInterceptors(builder);
  std::unique_ptr<grpc::Server> backend_server = builder.BuildAndStart();
  ASSERT_NE(backend_server, nullptr);
  auto middle = echo::EchoServer::Start(
      {.name = "middle",
       .next = "127.0.0.1:" + std::to_string(backend_port),
       .workers = 1});
  ASSERT_TRUE(middle.ok()) << middle.status();
  auto frontend =
      echo::EchoServer::Start(
          {.name = "frontend", .port = 0, .next = (*middle)->address(), .workers = 1});
  ASSERT_TRUE(frontend.ok()) << frontend.status();
  auto stub = testing::NewStub(**frontend);

  // Each hop's deadline is set when its request arrives, so the requests go
  // out one at a time, each once the previous one reached the backend: a
  // hop's deadline then lies after its caller's by the rounding and a quiet
  // loopback transit, not by the queueing of eight set-ups at once on a
  // loaded machine (the glue allows kTransitSlack for transit).
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::thread> callers;
  for (int i = 0; i < kCalls; ++i) {
    callers.emplace_back([&, i] {
      auto [ctx, cancel] = WithTimeout(Background(), kDeadline + i * kSpread);
      auto cc = NewClientContext(ctx);
      EchoRequest request;
      request.set_message("long");
      EchoResponse response;
      statuses[i] = stub->Echo(cc.get(), request, &response);
    });
    EXPECT_TRUE(backend.stats().WaitUntil(
        [i](const EchoStats::Snapshot& s) { return s.started_total == i + 1; },
        testing::kWaitBound));
  }
  for (std::thread& t : callers) t.join();
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << i << ": " << statuses[i].error_message();
  }
  const std::vector<std::pair<std::string, const EchoStats*>> hops = {
      {"frontend", &(*frontend)->stats()},
      {"middle", &(*middle)->stats()},
      {"backend", &backend.stats()}};
  for (const auto& [name, stats] : hops) {
    ASSERT_TRUE(stats->WaitUntil(
        [](const EchoStats::Snapshot& s) { return s.finished_total() == kCalls; },
        testing::kWaitBound))
        << name;
    EchoStats::Snapshot s = stats->Get();
    EXPECT_EQ(s.deadline_exceeded_total, kCalls) << name;
    EXPECT_EQ(s.canceled_total, 0) << name;
    EXPECT_EQ(s.completed_total, 0) << name;
  }
  (*frontend)->Shutdown();
  (*middle)->Shutdown();
  backend_server->Shutdown(std::chrono::system_clock::now());
}

}  // namespace
}  // namespace reqctx
