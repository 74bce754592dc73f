// MetricsServer over real HTTP on loopback: scrapes, the format's content
// type, and hostile clients (malformed and oversized requests, stalled
// connections, many scrapes at once) that must neither crash it nor stop it
// serving.
#include "metrics/metrics_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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

// Sends one more byte of "GET /metrics HTTP/1.1\r\n" a second on each of
// `clients` (sends fail once the server closed them), from its own thread,
// until destroyed or the line is out (bounded either way).
class Trickler {
 public:
  explicit Trickler(const std::vector<std::unique_ptr<StalledClient>>& clients)
      : thread_([this, &clients] {
          static constexpr std::string_view kLine = "GET /metrics HTTP/1.1\r\n";
          for (size_t i = 1; i < kLine.size(); ++i) {
            {
              std::unique_lock<std::mutex> lock(mu_);
              if (cv_.wait_for(lock, std::chrono::seconds(1),
                               [&] { return stop_; })) {
                return;
              }
            }
            for (const auto& c : clients) {
              (void)send(c->fd(), &kLine[i], 1, MSG_NOSIGNAL);
            }
          }
        }) {}
  ~Trickler() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // Guarded by mu_.
  std::thread thread_;  // Last: starts after the members it uses.
};

// The defaults against 50 hostile connections opened before a scrape (the
// kernel hands connections to civetweb in arrival order, so they are all
// ahead of it): 25 idle, 25 trickling their request line a byte per second.
// The scrape is answered at once, and every hostile connection is closed by
// the server once request_timeout ran out. (With 2 threads and a 5 s
// timeout, 4 idle connections delayed a scrape 9 s.)
TEST_F(MetricsServerTest, ScrapesAnsweredBehindFiftyIdleAndTricklingConnections) {
  const MetricsServerOptions defaults;
  std::unique_ptr<MetricsServer> server = Start();
  ASSERT_NE(server, nullptr);
  constexpr int kIdle = 25, kTrickling = 25;
  std::vector<std::unique_ptr<StalledClient>> idle, trickling;
  const absl::Time opened = absl::Now();  // No thread took one before.
  for (int i = 0; i < kIdle; ++i) {
    idle.push_back(std::make_unique<StalledClient>(server->port(), ""));
    ASSERT_GE(idle.back()->fd(), 0);
  }
  for (int i = 0; i < kTrickling; ++i) {
    trickling.push_back(std::make_unique<StalledClient>(server->port(), "G"));
    ASSERT_GE(trickling.back()->fd(), 0);
  }
  Trickler trickler(trickling);
  constexpr absl::Duration kScrapeBound =
      reqctx::testing::PlainOrSanitized(absl::Seconds(1), absl::Seconds(3));
  const absl::Time start = absl::Now();
  absl::StatusOr<testing::HttpResponse> r =
      HttpGet(server->port(), "/metrics", kScrapeBound);
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(r.ok()) << r.status() << " after " << took;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, registry_.Expose());
  EXPECT_LT(took, kScrapeBound);
  std::printf("scrape behind %d idle + %d trickling connections: %s\n", kIdle,
              kTrickling, absl::FormatDuration(took).c_str());

  // Every hostile connection is closed by the server after request_timeout.
  const absl::Time close_by = opened + defaults.request_timeout + kSlack;
  for (auto* list : {&idle, &trickling}) {
    for (auto& c : *list) {
      EXPECT_TRUE(c->ClosedByServer(
          std::max(absl::ZeroDuration(), close_by - absl::Now())));
    }
  }
  const absl::Duration all_closed = absl::Now() - opened;
  EXPECT_GE(all_closed, defaults.request_timeout - absl::Milliseconds(50));
  std::printf("all %d closed by the server %s after opening\n",
              kIdle + kTrickling, absl::FormatDuration(all_closed).c_str());
}

// A large page to a client that reads slower than the server writes (a
// small receive buffer): the server's last writes are still queued in its
// socket when it closes, and an ordinary close delivers them (a zero
// linger reset the connection and dropped them).
TEST_F(MetricsServerTest, ALargePageReachesASlowReaderWhole) {
  const std::string label(100, 'v');
  for (int f = 0; f < 12; ++f) {
    metrics::CounterFamily* family = *registry_.AddCounter(
        absl::StrCat("test_big_", f, "_total"), "Big.", {"i"});
    for (int i = 0; i < 2000; ++i) {
      family->WithLabels({absl::StrCat(label, i)}).Increment();
    }
  }
  const std::string page = registry_.Expose();
  ASSERT_GT(page.size(), 2u << 20);
  std::unique_ptr<MetricsServer> server = Start();
  ASSERT_NE(server, nullptr);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  const int rcvbuf = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(server->port()));
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string in;
  char buf[4096];
  const absl::Time give_up = absl::Now() + 4 * kSlack;
  bool eof = false;
  while (!eof && absl::Now() < give_up) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      eof = true;
      EXPECT_EQ(n, 0) << "connection reset after " << in.size() << " bytes";
    } else {
      in.append(buf, n);
    }
  }
  close(fd);
  EXPECT_TRUE(eof);
  const size_t body = in.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  EXPECT_EQ(in.size() - body - 4, page.size());
}

// A socket connected to 127.0.0.1:`port` from 127.0.0.2 (all of 127/8 is
// loopback), or -1.
int ConnectFrom127002(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000002);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// Peers not in allowed_peers are closed at accept and take no serving
// thread: with 2 threads and a 5 s request timeout (where 4 idle
// connections delayed a scrape 9 s), 50 idle connections from 127.0.0.2
// leave a scrape from 127.0.0.1 unaffected.
TEST_F(MetricsServerTest, PeersNotAllowedAreClosedAtAccept) {
  MetricsServerOptions options;
  options.threads = 2;
  options.request_timeout = absl::Seconds(5);
  options.allowed_peers = {"127.0.0.1", "10.0.0.0/8"};
  std::unique_ptr<MetricsServer> server = Start(options);
  ASSERT_NE(server, nullptr);
  std::vector<int> hostile;
  for (int i = 0; i < 50; ++i) {
    const int fd = ConnectFrom127002(server->port());
    ASSERT_GE(fd, 0);
    hostile.push_back(fd);
  }
  constexpr absl::Duration kScrapeBound =
      reqctx::testing::PlainOrSanitized(absl::Seconds(1), absl::Seconds(3));
  absl::StatusOr<testing::HttpResponse> r =
      HttpGet(server->port(), "/metrics", kScrapeBound);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  for (int fd : hostile) {  // Closed without an answer.
    pollfd p{fd, POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, absl::ToInt64Milliseconds(kSlack)), 1);
    char c;
    EXPECT_LE(recv(fd, &c, 1, 0), 0);
    close(fd);
  }
  // Not listed: refused.
  options.allowed_peers = {"10.9.9.9"};
  std::unique_ptr<MetricsServer> closed = Start(options);
  ASSERT_NE(closed, nullptr);
  r = HttpGet(closed->port(), "/metrics", kSlack);
  EXPECT_TRUE(!r.ok() || r->status == 0) << r->status;
  // Bad entries are refused, naming the field.
  for (const char* bad : {"bogus", "10.0.0.0/33", "10.0.0.1/", "::1", ""}) {
    MetricsServerOptions o;
    o.allowed_peers = {bad};
    absl::StatusOr<std::unique_ptr<MetricsServer>> s = MetricsServer::Start(o);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("allowed_peers"));
  }
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
