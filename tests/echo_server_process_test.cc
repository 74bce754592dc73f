// The echo server binary (//services/echo:server) as a subprocess: its
// --max_work_ms cap, its --shutdown_grace_ms drain on SIGTERM, a second
// SIGTERM during a shutdown that hangs exiting at once, and --bind_address
// (with the BindHost rules behind it).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "tests/echo_chain.h"
#include "tests/http_client.h"
#include "tests/process_probe.h"
#include "tests/server_process.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using testing::Eventually;
using testing::kPromptBound;
using testing::kWaitBound;
using testing::ServerProcess;

EchoRequest Request(int64_t work_ms) {
  EchoRequest r;
  r.set_message("p");
  r.set_work_ms(work_ms);
  return r;
}

std::unique_ptr<::echo::v1::Echo::Stub> StubFor(const ServerProcess& p) {
  return ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
      p.address(), grpc::InsecureChannelCredentials()));
}

// Waits (bounded) until the process reports `n` active requests over its
// Stats RPC (another process has no event to wait on).
bool WaitActive(::echo::v1::Echo::Stub& stub, int n) {
  return Eventually([&] {
    grpc::ClientContext cc;
    ::echo::v1::StatsResponse stats;
    return stub.Stats(&cc, ::echo::v1::StatsRequest(), &stats).ok() &&
           stats.active_requests() == n;
  });
}

TEST(EchoServerProcessTest, WorkOverMaxWorkMsFailsWithAClearStatus) {
  ServerProcess process;
  ASSERT_TRUE(process.Start({"--max_work_ms=50"})) << process.output();
  auto stub = StubFor(process);
  EchoResponse response;
  auto cc = NewClientContext(Background());
  grpc::Status s = stub->Echo(cc.get(), Request(51), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("max_work_ms"), std::string::npos)
      << s.error_message();
  EXPECT_NE(s.error_message().find("50"), std::string::npos);
  auto cc2 = NewClientContext(Background());
  EXPECT_TRUE(stub->Echo(cc2.get(), Request(50), &response).ok());
  const int status = process.Terminate();
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(EchoServerProcessTest, ShutdownGraceLetsInFlightCallsFinish) {
  ServerProcess process;
  ASSERT_TRUE(process.Start({"--shutdown_grace_ms=20000"})) << process.output();
  auto stub = StubFor(process);
  grpc::Status status;
  std::thread caller([&] {
    auto cc = NewClientContext(Background());
    EchoResponse response;
    status = stub->Echo(cc.get(), Request(300), &response);
  });
  EXPECT_TRUE(WaitActive(*stub, 1));
  const int wait_status = process.Terminate();
  caller.join();
  ASSERT_NE(wait_status, -1) << process.output();
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(process.output().find("completed 1, canceled 0"), std::string::npos)
      << process.output();
}

TEST(EchoServerProcessTest, SecondSigtermDuringAHangingShutdownExitsAtOnce) {
  ServerProcess process;
  // A call of 60 s under a 60 s grace: the first SIGTERM's shutdown waits.
  ASSERT_TRUE(process.Start({"--shutdown_grace_ms=60000"})) << process.output();
  auto stub = StubFor(process);
  std::thread caller([&] {
    auto cc = NewClientContext(Background());
    EchoResponse response;
    stub->Echo(cc.get(), Request(60000), &response);
  });
  EXPECT_TRUE(WaitActive(*stub, 1));
  ASSERT_TRUE(process.Signal(SIGTERM));
  ASSERT_TRUE(process.WaitForOutput("shutting down", kWaitBound))
      << process.output();
  EXPECT_TRUE(process.Running()) << "the shutdown did not wait";
  const absl::Time second_at = absl::Now();
  ASSERT_TRUE(process.Signal(SIGTERM));
  const int wait_status = process.WaitExit(kWaitBound);
  const absl::Duration took = absl::Now() - second_at;
  caller.join();  // Its server is gone: the call fails.
  ASSERT_NE(wait_status, -1) << "still running; " << process.output();
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 1)
      << wait_status;
  EXPECT_NE(process.output().find("second signal"), std::string::npos)
      << process.output();
  EXPECT_LT(took, 10 * kPromptBound);
}

// Issue 19, A5: with default flags, 1,000 concurrent slow calls (before
// the default limits: 300 took the server from 11 to 911 threads, 1,000 to
// ~1,700) keep the server's threads bounded; the calls past the limit and
// its queue are refused at once with RESOURCE_EXHAUSTED and a pushback; the
// server answers during the flood (Stats, which the limit exempts, and a
// fresh Echo, refused promptly) and serves a fresh call afterwards.
TEST(EchoServerProcessTest, DefaultFlagsBoundThreadsUnderAFloodOfSlowCalls) {
  constexpr int kCalls = testing::PlainOrSanitized(1000, 600);
  constexpr int kHeld = echo::kDefaultMaxConcurrency + echo::kDefaultMaxQueue;
  // gRPC's server threads (its quota) + 2 workers per running call + the
  // fixed few (main, timers, cancel watcher, ...).
  constexpr int kThreadBound = echo::kDefaultMaxThreads +
                               2 * echo::kDefaultMaxConcurrency + 40;
  ServerProcess process;
  ASSERT_TRUE(process.Start()) << process.output();  // Default flags.
  const int idle_threads = testing::ThreadCountOf(process.pid());
  ASSERT_GT(idle_threads, 0);

  // Samples the server's thread count until told to stop (no event to wait
  // on: /proc).
  std::atomic<bool> sampling{true};
  std::atomic<int> peak_threads{idle_threads};
  std::thread sampler([&] {
    const absl::Time end = absl::Now() + 4 * kWaitBound;
    while (sampling.load() && absl::Now() < end) {
      const int n = testing::ThreadCountOf(process.pid());
      int seen = peak_threads.load();
      while (n > seen && !peak_threads.compare_exchange_weak(seen, n)) {
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
  });

  auto stub = StubFor(process);
  struct Slot {
    grpc::ClientContext cc;
    EchoResponse response;
    grpc::Status status;   // Guarded by mu until every call is done.
    std::string pushback;  // Read once every call is done.
  };
  std::vector<std::unique_ptr<Slot>> slots;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;  // Guarded by mu.
  const EchoRequest slow = Request(60 * 1000);
  for (int i = 0; i < kCalls; ++i) {
    slots.push_back(std::make_unique<Slot>());
    Slot* slot = slots.back().get();
    slot->cc.set_deadline(absl::ToChronoTime(absl::Now() + 4 * kWaitBound));
    stub->async()->Echo(&slot->cc, &slow, &slot->response,
                        [&, slot](grpc::Status st) {
                          std::lock_guard<std::mutex> lock(mu);
                          slot->status = std::move(st);
                          ++done;
                          cv.notify_all();
                        });
  }
  // Every call past the limit and the queue is answered at once.
  bool refused_all;
  {
    std::unique_lock<std::mutex> lock(mu);
    refused_all = cv.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                              [&] { return done >= kCalls - kHeld; });
  }
  EXPECT_TRUE(refused_all);
  EXPECT_TRUE(WaitActive(*stub, echo::kDefaultMaxConcurrency));
  const int flood_threads = testing::ThreadCountOf(process.pid());

  // During: monitoring answers; a fresh call gets a prompt, definite answer.
  {
    grpc::ClientContext cc;
    cc.set_deadline(absl::ToChronoTime(absl::Now() + kWaitBound));
    ::echo::v1::StatsResponse stats;
    grpc::Status st = stub->Stats(&cc, ::echo::v1::StatsRequest(), &stats);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(stats.active_requests(), echo::kDefaultMaxConcurrency);
    grpc::ClientContext fresh;
    fresh.set_deadline(absl::ToChronoTime(absl::Now() + kWaitBound));
    EchoResponse response;
    const absl::Time start = absl::Now();
    st = stub->Echo(&fresh, Request(0), &response);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << st.error_message();
    EXPECT_EQ(fresh.GetServerTrailingMetadata().count(
                  "grpc-retry-pushback-ms"),
              1u);
    EXPECT_LT(absl::Now() - start, kPromptBound);
  }

  // End the held calls: cancel every one (refused ones are over already).
  for (auto& slot : slots) slot->cc.TryCancel();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                            [&] { return done == kCalls; }));
  }
  sampling = false;
  sampler.join();
  int refused = 0, refused_with_pushback = 0, by_grpc_quota = 0;
  int canceled = 0, other = 0;
  for (auto& slot : slots) {
    // Every call is over (done == kCalls, read under mu): its trailers are
    // final.
    const auto& t = slot->cc.GetServerTrailingMetadata();
    if (auto it = t.find("grpc-retry-pushback-ms"); it != t.end()) {
      slot->pushback.assign(it->second.data(), it->second.size());
    }
    switch (slot->status.error_code()) {
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
        ++refused;
        if (!slot->pushback.empty()) ++refused_with_pushback;
        if (slot->status.error_message() == "Server Threadpool Exhausted") {
          ++by_grpc_quota;
        }
        break;
      case grpc::StatusCode::CANCELLED:
        ++canceled;
        break;
      default:
        ++other;
        ADD_FAILURE() << slot->status.error_code() << ": "
                      << slot->status.error_message();
    }
  }
  EXPECT_EQ(other, 0);
  EXPECT_EQ(canceled, kHeld);  // The running calls and the queued ones.
  EXPECT_EQ(refused, kCalls - kHeld);
  // Every refusal carries a pushback: the concurrency limit's, and the one
  // the policy adds to gRPC's own "Server Threadpool Exhausted" (its thread
  // quota, reached first when a burst arrives faster than refusals finish).
  EXPECT_EQ(refused_with_pushback, refused);
  EXPECT_LT(peak_threads.load(), kThreadBound);
  std::printf(
      "threads: idle %d, flood %d, peak %d (bound %d) for %d calls; "
      "refused %d (%d by gRPC's thread quota)\n",
      idle_threads, flood_threads, peak_threads.load(), kThreadBound, kCalls,
      refused, by_grpc_quota);

  // After: the server serves a fresh call.
  EXPECT_TRUE(WaitActive(*stub, 0));
  grpc::ClientContext after;
  after.set_deadline(absl::ToChronoTime(absl::Now() + kWaitBound));
  EchoResponse response;
  grpc::Status st = stub->Echo(&after, Request(10), &response);
  EXPECT_TRUE(st.ok()) << st.error_message();
  const int status = process.Terminate();
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(BindHostTest, AcceptsAddressesRefusesTheRest) {
  EXPECT_EQ(echo::BindHost("127.0.0.1").value_or("?"), "127.0.0.1");
  EXPECT_EQ(echo::BindHost("0.0.0.0").value_or("?"), "0.0.0.0");
  EXPECT_EQ(echo::BindHost("10.231.1.1").value_or("?"), "10.231.1.1");
  EXPECT_EQ(echo::BindHost("[::1]").value_or("?"), "[::1]");
  EXPECT_EQ(echo::BindHost("::1").value_or("?"), "[::1]");
  EXPECT_EQ(echo::BindHost("[::]").value_or("?"), "[::]");
  EXPECT_EQ(echo::BindHost("[fe80::1]").value_or("?"), "[fe80::1]");
  for (std::string_view bad :
       {std::string_view(""), std::string_view("localhost"),
        std::string_view("127.0.0.1:80"), std::string_view("[::1]:80"),
        std::string_view("256.0.0.1"), std::string_view("1.2.3"),
        std::string_view("[127.0.0.1]"), std::string_view("[]"),
        std::string_view("["), std::string_view("::1]"),
        std::string_view(" 127.0.0.1"), std::string_view("127.0.0.1\0x", 11),
        std::string_view("[::1\0]", 6)}) {
    absl::StatusOr<std::string> h = echo::BindHost(bad);
    EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument)
        << "'" << bad << "' gave " << h.value_or("");
  }
  EXPECT_NE(echo::BindHost("localhost").status().message().find("localhost"),
            std::string::npos);
}

// The flag reaches the listening socket: the server says where it listens,
// and answers there.
TEST(EchoServerProcessTest, BindAddressFlagChoosesTheInterface) {
  ServerProcess v4;
  ASSERT_TRUE(v4.Start({"--bind_address=127.0.0.1"})) << v4.output();
  EXPECT_EQ(v4.address().rfind("127.0.0.1:", 0), 0u) << v4.address();
  EchoResponse response;
  auto cc = NewClientContext(Background());
  EXPECT_TRUE(StubFor(v4)->Echo(cc.get(), Request(0), &response).ok());
  // IPv6 loopback, where this machine has it.
  echo::EchoServerOptions probe;
  probe.bind_address = "::1";
  if (!echo::EchoServer::Start(probe).ok()) {
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  ServerProcess v6;
  ASSERT_TRUE(v6.Start({"--bind_address=[::1]"})) << v6.output();
  EXPECT_EQ(v6.address().rfind("[::1]:", 0), 0u) << v6.address();
  auto cc6 = NewClientContext(Background());
  EXPECT_TRUE(StubFor(v6)->Echo(cc6.get(), Request(0), &response).ok());
}

// The server policy's own families are in the process Registry: the echo
// server's --metrics_port shows a minimum-budget refusal per method.
TEST(EchoServerProcessTest, MetricsPortShowsThePolicyFamilies) {
  ServerProcess process;
  ASSERT_TRUE(process.Start({"--metrics_port=0", "--min_budget_ms=2000"}))
      << process.output();
  const std::string marker = "metrics on 127.0.0.1:";
  const size_t at = process.output().find(marker);
  ASSERT_NE(at, std::string::npos) << process.output();
  const int metrics_port =
      std::atoi(process.output().c_str() + at + marker.size());
  ASSERT_GT(metrics_port, 0);
  auto stub = StubFor(process);
  for (int i = 0; i < 2; ++i) {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(500));
    auto cc = NewClientContext(ctx);
    EchoResponse response;
    EXPECT_EQ(stub->Echo(cc.get(), Request(0), &response).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  absl::StatusOr<testing::HttpResponse> page =
      testing::HttpGet(metrics_port, "/metrics", kWaitBound);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(testing::ExpositionSample(
                page->body,
                "reqctx_policy_rejected_total{method=\"/echo.v1.Echo/Echo\","
                "reason=\"min_budget\",criticality=\"default\"}"),
            2)
      << page->body;
  EXPECT_NE(page->body.find("# TYPE reqctx_policy_queue_wait_seconds histogram"),
            std::string::npos);
  const int status = process.Terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(EchoServerProcessTest, BadBindAddressExitsWithAnError) {
  ServerProcess process;
  EXPECT_FALSE(process.Start({"--bind_address=localhost"}));
  const int status = process.WaitExit(kWaitBound);
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_EQ(process.output().find("listening on"), std::string::npos);
}

TEST(EchoServerProcessTest, BadHedgingFlagsExitWithAnError) {
  for (const std::vector<std::string>& flags :
       std::vector<std::vector<std::string>>{
           {"--hedging_learned_quantile=1.5"},
           {"--hedging_learned_quantile=-0.5"},
           {"--hedging_learned_quantile=0.95", "--hedging_learned_warmup=0"},
           {"--hedging_min_delay_ms=-1"}}) {
    ServerProcess process;
    EXPECT_FALSE(process.Start(flags)) << flags[0];
    const int status = process.WaitExit(kWaitBound);
    ASSERT_NE(status, -1);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << flags[0];
    EXPECT_EQ(process.output().find("listening on"), std::string::npos);
  }
}

TEST(EchoServerProcessTest, LearnedHedgingFlagsStartTheServer) {
  ServerProcess process;
  ASSERT_TRUE(process.Start({"--retry_max_attempts=2",
                             "--hedging_learned_quantile=0.95",
                             "--hedging_learned_warmup=10"}))
      << process.output();
}

// Issue 23's flags: an adaptive limit shows in the metrics with its
// algorithm; SIGUSR2 is the kill switch (enforce <-> off) at run time; a
// bad value exits 1 naming the flag or the option field.
TEST(EchoServerProcessTest, LimitFlagsAndTheKillSwitchSignal) {
  {
    ServerProcess adaptive;
    ASSERT_TRUE(adaptive.Start({"--metrics_port=0", "--limit=vegas"}))
        << adaptive.output();
    const std::string marker = "metrics on 127.0.0.1:";
    const size_t at = adaptive.output().find(marker);
    ASSERT_NE(at, std::string::npos) << adaptive.output();
    const int metrics_port =
        std::atoi(adaptive.output().c_str() + at + marker.size());
    absl::StatusOr<testing::HttpResponse> page =
        testing::HttpGet(metrics_port, "/metrics", kWaitBound);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(testing::ExpositionSample(
                  page->body,
                  "reqctx_policy_limit{method=\"/echo.v1.Echo/Echo\","
                  "algorithm=\"vegas\"}"),
              20)
        << page->body;
  }
  ServerProcess process;
  ASSERT_TRUE(process.Start({"--max_concurrency=1", "--max_queue=0"}))
      << process.output();
  auto stub = StubFor(process);
  grpc::Status busy_status;
  std::thread busy([&] {
    auto cc = NewClientContext(Background());
    EchoResponse response;
    busy_status = stub->Echo(cc.get(), Request(3000), &response);
  });
  ASSERT_TRUE(WaitActive(*stub, 1));
  auto call = [&] {
    auto [ctx, cancel] = WithTimeout(Background(), kWaitBound);
    auto cc = NewClientContext(ctx);
    EchoResponse response;
    return stub->Echo(cc.get(), Request(0), &response).error_code();
  };
  EXPECT_EQ(call(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(process.Signal(SIGUSR2));
  ASSERT_TRUE(process.WaitForOutput("shed mode: off", kWaitBound))
      << process.output();
  EXPECT_EQ(call(), grpc::StatusCode::OK);  // the limit is not enforced
  ASSERT_TRUE(process.Signal(SIGUSR2));
  ASSERT_TRUE(process.WaitForOutput("shed mode: enforce", kWaitBound))
      << process.output();
  EXPECT_EQ(call(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  busy.join();
  EXPECT_TRUE(busy_status.ok()) << busy_status.error_message();
  const int status = process.Terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  for (const std::vector<std::string>& flags :
       std::vector<std::vector<std::string>>{
           {"--limit=bogus"},
           {"--limit=gradient", "--gradient_smoothing=0"},
           {"--shed_mode=maybe"},
           {"--shares=0.5,0,0.6"},
           {"--shed_mode_file=/nonexistent/reqctx-mode"}}) {
    ServerProcess bad;
    EXPECT_FALSE(bad.Start(flags)) << flags.back();
    const int exit_status = bad.WaitExit(kWaitBound);
    ASSERT_NE(exit_status, -1);
    EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 1)
        << flags.back();
    EXPECT_EQ(bad.output().find("listening on"), std::string::npos);
  }
}

}  // namespace
}  // namespace reqctx
