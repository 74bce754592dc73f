// MetricsServer over real HTTP on loopback: scrapes, the format's content
// type, and hostile clients (malformed and oversized requests, stalled
// connections, many scrapes at once) that must neither crash it nor stop it
// serving.
#include "metrics/metrics_server.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/metrics.h"
#include "tests/http_client.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::HttpGet;
using testing::RawHttp;
using testing::StalledClient;

constexpr absl::Duration kSlack =
    reqctx::testing::PlainOrSanitized(absl::Seconds(3), absl::Seconds(10));

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    (*registry_.AddCounter("test_requests_total", "Requests.", {"code"}))
        ->WithLabels({"OK"})
        .Increment(42);
  }
  std::unique_ptr<MetricsServer> Start(MetricsServerOptions options = {}) {
    options.registry = &registry_;
    absl::StatusOr<std::unique_ptr<MetricsServer>> s =
        MetricsServer::Start(options);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  void ExpectServes(int port) {
    absl::StatusOr<testing::HttpResponse> r = HttpGet(port, "/metrics", kSlack);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, registry_.Expose());
  }
  metrics::Registry registry_;
};

TEST_F(MetricsServerTest, ServesTheRegistryInTheTextFormat) {
  std::unique_ptr<MetricsServer> server = Start();
  ASSERT_NE(server, nullptr);
  EXPECT_GT(server->port(), 0);
  absl::StatusOr<testing::HttpResponse> r = HttpGet(server->port(), "/metrics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->headers,
              HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
  EXPECT_EQ(r->body,
            "# HELP test_requests_total Requests.\n"
            "# TYPE test_requests_total counter\n"
            "test_requests_total{code=\"OK\"} 42\n");

  r = RawHttp(server->port(), "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", kSlack);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");
}

TEST_F(MetricsServerTest, OtherPathsAndMethodsAreRefused) {
  std::unique_ptr<MetricsServer> server = Start();
  ASSERT_NE(server, nullptr);
  absl::StatusOr<testing::HttpResponse> r = HttpGet(server->port(), "/");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  r = HttpGet(server->port(), "/metrics/../etc/passwd");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  r = HttpGet(server->port(), "/metricsX");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  r = RawHttp(server->port(),
              "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
              kSlack);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
}

TEST_F(MetricsServerTest, MalformedAndOversizedRequestsLeaveItServing) {
  std::unique_ptr<MetricsServer> server = Start();
  ASSERT_NE(server, nullptr);
  const std::vector<std::string> hostile = {
      "GARBAGE\r\n\r\n",
      std::string("GET /metrics HTTP/1.1\r\n\0\0\0\r\n\r\n", 29),
      "GET /metrics HTTP/9.9\r\n\r\n",
      "GET " + std::string(100000, 'a') + " HTTP/1.1\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nX: " + std::string(100000, 'b') + "\r\n\r\n",
      "\xff\xfe\xfd\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (const std::string& req : hostile) {
    absl::StatusOr<testing::HttpResponse> r =
        RawHttp(server->port(), req, kSlack);
    // Answered with an error or closed; never a hang or a crash.
    ASSERT_TRUE(r.ok()) << r.status() << " for " << req.substr(0, 40);
    EXPECT_TRUE(r->status == 0 || r->status >= 400 || r->status == 200)
        << r->status;
    ExpectServes(server->port());
  }
}

TEST_F(MetricsServerTest, StalledClientsAreCutOffAndDoNotStopScrapes) {
  MetricsServerOptions options;
  options.threads = 2;
  options.request_timeout = absl::Milliseconds(300);
  std::unique_ptr<MetricsServer> server = Start(options);
  ASSERT_NE(server, nullptr);
  // More stalled connections than serving threads.
  std::vector<std::unique_ptr<StalledClient>> stalled;
  for (int i = 0; i < 6; ++i) {
    stalled.push_back(std::make_unique<StalledClient>(
        server->port(), i % 2 == 0 ? "GET /metr" : ""));
    ASSERT_GE(stalled.back()->fd(), 0);
  }
  // A normal scrape completes once the stalled ones are timed out.
  ExpectServes(server->port());
  for (auto& s : stalled) EXPECT_TRUE(s->ClosedByServer(kSlack));
}

TEST_F(MetricsServerTest, ManyConcurrentScrapesAllSucceed) {
  std::unique_ptr<MetricsServer> server = Start();
  ASSERT_NE(server, nullptr);
  constexpr int kScrapers = 32;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < kScrapers; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<testing::HttpResponse> r =
          HttpGet(server->port(), "/metrics", 4 * kSlack);
      if (r.ok() && r->status == 200) ok.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kScrapers);
}

TEST_F(MetricsServerTest, StartErrors) {
  std::unique_ptr<MetricsServer> first = Start();
  ASSERT_NE(first, nullptr);
  MetricsServerOptions taken;
  taken.port = first->port();
  absl::StatusOr<std::unique_ptr<MetricsServer>> s = MetricsServer::Start(taken);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  MetricsServerOptions bad;
  bad.port = 70000;
  EXPECT_EQ(MetricsServer::Start(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.address = "127.0.0.1,0.0.0.0";
  EXPECT_EQ(MetricsServer::Start(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.threads = 0;
  EXPECT_EQ(MetricsServer::Start(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(MetricsServerTest, Ipv6LoopbackServedOrRefusedClearly) {
  MetricsServerOptions options;
  options.address = "[::1]";
  absl::StatusOr<std::unique_ptr<MetricsServer>> s = MetricsServer::Start(options);
  if (MetricsServer::SupportsIpv6()) {
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_GT((*s)->port(), 0);
  } else {
    EXPECT_EQ(s.status().code(), absl::StatusCode::kUnimplemented) << s.status();
  }
}

}  // namespace
}  // namespace reqctx
