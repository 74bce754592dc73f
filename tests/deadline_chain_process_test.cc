// Issue 19, A3: a deadline never grows hop by hop. gRPC rounds grpc-timeout
// up when it encodes it, its HPACK encoder may re-send an earlier timeout up
// to 3% longer, and every hop re-encodes its remaining time; before the fix
// a 1 s deadline reached the 5th process as 1,029-1,048 ms and a
// self-pointing --next made thousands of hops, for seconds, from one 1 s
// call (internal/grpc_timeout.h has the compensation). Real
// processes (the //services/echo:server binary) on loopback, so each hop's
// deadline really crosses the wire as grpc-timeout.
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"
#include "tests/server_process.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using testing::ServerProcess;

std::unique_ptr<::echo::v1::Echo::Stub> StubFor(const ServerProcess& p) {
  return ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
      p.address(), grpc::InsecureChannelCredentials()));
}

// One Echo on `stub` under a `deadline` Context.
grpc::Status CallWithDeadline(::echo::v1::Echo::Stub& stub,
                              absl::Duration deadline, EchoResponse* r) {
  auto [ctx, cancel] = WithTimeout(Background(), deadline);
  auto cc = NewClientContext(ctx);
  EchoRequest request;
  request.set_message("deadline");
  return stub.Echo(cc.get(), request, r);
}

TEST(DeadlineChainProcessTest, RemainingTimeNeverIncreasesAlongFiveProcesses) {
  constexpr int kHops = 5;
  // Started from the last hop, each pointing at the one after it.
  std::vector<std::unique_ptr<ServerProcess>> hops(kHops);
  for (int i = kHops - 1; i >= 0; --i) {
    hops[i] = std::make_unique<ServerProcess>();
    std::vector<std::string> args = {absl::StrCat("--name=hop", i + 1)};
    if (i + 1 < kHops) args.push_back("--next=" + hops[i + 1]->address());
    ASSERT_TRUE(hops[i]->Start(args)) << hops[i]->output();
  }
  auto stub = StubFor(*hops[0]);
  for (const absl::Duration deadline :
       {absl::Seconds(1), absl::Seconds(5), absl::Seconds(50)}) {
    // Several calls: the rounding depends on where in a unit each hop is.
    for (int round = 0; round < 5; ++round) {
      EchoResponse r;
      const grpc::Status s = CallWithDeadline(*stub, deadline, &r);
      ASSERT_TRUE(s.ok()) << s.error_message();
      ASSERT_EQ(r.hops_size(), kHops);
      std::vector<int64_t> remaining;
      for (const auto& hop : r.hops()) {
        remaining.push_back(hop.deadline_remaining_ms());
      }
      SCOPED_TRACE(absl::StrCat(absl::FormatDuration(deadline),
                                " deadline, remaining ms per hop: ",
                                absl::StrJoin(remaining, ", ")));
      EXPECT_LE(remaining[0], absl::ToInt64Milliseconds(deadline));
      for (int i = 1; i < kHops; ++i) {
        EXPECT_LE(remaining[i], remaining[i - 1]) << "hop " << i + 1;
      }
      if (round == 0) {
        std::printf("%s: remaining ms per hop: %s\n",
                    absl::FormatDuration(deadline).c_str(),
                    absl::StrJoin(remaining, ", ").c_str());
      }
    }
  }
  for (auto& hop : hops) EXPECT_NE(hop->Terminate(), -1);
}

TEST(DeadlineChainProcessTest, ASelfPointingNextEndsByTheCallersDeadline) {
  const int port = testing::UnusedLoopbackPort();
  ASSERT_GT(port, 0);
  ServerProcess loop;
  // The later --port wins over the helper's --port=0.
  ASSERT_TRUE(loop.Start({absl::StrCat("--port=", port),
                          absl::StrCat("--next=127.0.0.1:", port)}))
      << loop.output();
  auto stub = StubFor(loop);
  constexpr absl::Duration kDeadline = absl::Seconds(1);
  // Each hop ends by its own deadline, none later than its caller's: the
  // whole loop is over at the first caller's deadline, plus the time for
  // the last handlers to return.
  const absl::Duration kSlack =
      testing::PlainOrSanitized(absl::Milliseconds(500), absl::Seconds(3));
  const absl::Time start = absl::Now();
  EchoResponse r;
  const grpc::Status s = CallWithDeadline(*stub, kDeadline, &r);
  EXPECT_FALSE(s.ok());
  EXPECT_LE(absl::Now() - start, kDeadline + kSlack);
  ::echo::v1::StatsResponse stats;
  const bool idle = testing::Eventually(
      [&] {
        grpc::ClientContext cc;
        return stub->Stats(&cc, ::echo::v1::StatsRequest(), &stats).ok() &&
               stats.active_requests() == 0;
      },
      testing::kWaitBound);
  const absl::Duration ended = absl::Now() - start;
  const int64_t calls = stats.completed_total() + stats.canceled_total() +
                        stats.deadline_exceeded_total();
  std::printf("self-pointing --next, 1 s deadline: %lld hops, idle after %s\n",
              static_cast<long long>(calls), absl::FormatDuration(ended).c_str());
  EXPECT_TRUE(idle) << "still " << stats.active_requests() << " hops active";
  EXPECT_LE(ended, kDeadline + kSlack) << calls << " hops";
  EXPECT_NE(loop.Terminate(), -1);
}

}  // namespace
}  // namespace reqctx
