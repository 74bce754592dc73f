// Many calls leave nothing behind: no listener on the caller's Context, no
// server-side call state, no pending binding, no extra timer.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "context/debug.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;

// Waits (bounded) until `f()` returns `want`.
template <typename F>
bool Eventually(F f, size_t want) {
  return testing::Eventually([&f, want] { return f() == want; },
                             testing::kWaitBound);
}

void CallMany(echo::EchoServer& server, const Context& parent, int calls,
              int threads) {
  auto stub = testing::NewStub(server);
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      EchoRequest request;
      request.set_message("m");
      for (int i = t; i < calls; i += threads) {
        std::unique_ptr<grpc::ClientContext> cc = NewClientContext(parent);
        EchoResponse response;
        if (!stub->Echo(cc.get(), request, &response).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : pool) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(InterceptorsLeakTest, TenThousandCallsLeaveNoRegistrations) {
  auto server = echo::EchoServer::Start(
      {.name = "leak", .port = 0, .next = "", .workers = 1});
  ASSERT_TRUE(server.ok());
  // A parent with a deadline: every call registers a cancel on it and every
  // server call arms a deadline timer; all must be gone afterwards.
  auto [parent, cancel] = WithTimeout(Background(), absl::Minutes(10));
  const size_t listeners = debug::ListenerCount(parent);
  const size_t timers = debug::PendingTimerCount();

  CallMany(**server, parent, 10000, 4);

  EXPECT_EQ(debug::ListenerCount(parent), listeners);
  EXPECT_EQ(debug::PendingClientBindingCount(), 0u);
  EXPECT_TRUE(Eventually(debug::LiveServerCallCount, 0));
  EXPECT_TRUE(Eventually(debug::WatchedServerCallCount, 0));
  EXPECT_TRUE(Eventually(debug::PendingTimerCount, timers));
  EXPECT_EQ((*server)->stats().Get().completed_total, 10000);
}

TEST(InterceptorsLeakTest, ThreeHopCallsLeaveNoRegistrations) {
  testing::EchoChain chain(1);
  ASSERT_TRUE(chain.status().ok());
  auto [parent, cancel] = WithTimeout(Background(), absl::Minutes(10));
  const size_t listeners = debug::ListenerCount(parent);
  const size_t timers = debug::PendingTimerCount();

  CallMany(chain.frontend(), parent, 1000, 4);

  EXPECT_EQ(debug::ListenerCount(parent), listeners);
  EXPECT_EQ(debug::PendingClientBindingCount(), 0u);
  EXPECT_TRUE(Eventually(debug::LiveServerCallCount, 0));
  EXPECT_TRUE(Eventually(debug::WatchedServerCallCount, 0));
  EXPECT_TRUE(Eventually(debug::PendingTimerCount, timers));
  EXPECT_EQ(chain.backend().stats().Get().completed_total, 1000);
}

}  // namespace
}  // namespace reqctx
