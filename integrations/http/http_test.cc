// //integrations/http against a loopback HTTP/1.1 server run by the test,
// which answers normally, stalls (never answers) or trickles a body.
#include "integrations/http/http.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "tests/test_timing.h"
#include "w3c/trace_propagation.h"
#include "w3c/trace_context.h"

namespace reqctx::http {
namespace {

constexpr int kScale = testing::PlainOrSanitized(1, 4);
constexpr absl::Duration kSlack = testing::PlainOrSanitized(
    absl::Milliseconds(50), absl::Milliseconds(250));
constexpr absl::Duration kBound = absl::Seconds(10);

// A minimal HTTP/1.1 server on 127.0.0.1 (one thread per connection, all
// joined by the destructor; every wait also ends on stop).
class TestServer {
 public:
  struct Seen {
    std::string method, path, body;
    std::map<std::string, std::string> headers;  // Lowercase names.
  };

  TestServer() {
    stop_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    listen_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        listen(listen_, 64) != 0 ||
        getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1";
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~TestServer() {
    const uint64_t one = 1;
    (void)!write(stop_, &one, sizeof one);
    acceptor_.join();
    for (auto& t : conns_) t.join();
    close(listen_);
    close(stop_);
  }

  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  // Waits until `n` requests arrived / `n` connections were closed by the
  // client; false after kBound.
  bool AwaitRequests(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                        [&] { return static_cast<int>(seen_.size()) >= n; });
  }
  bool AwaitClientCloses(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                        [&] { return client_closes_ >= n; });
  }
  Seen LastSeen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.empty() ? Seen() : seen_.back();
  }
  int Requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(seen_.size());
  }
  int64_t LastCloseNs() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_close_ns_;
  }

 private:
  void AcceptLoop() {
    for (;;) {
      pollfd p[2] = {{listen_, POLLIN, 0}, {stop_, POLLIN, 0}};
      if (poll(p, 2, -1) < 0) continue;
      if (p[1].revents != 0) return;
      const int c = accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      conns_.emplace_back([this, c] {
        Serve(c);
        close(c);
      });
    }
  }

  // Waits for input on `c` (or stop) up to `ms`; -1 stop, 0 timeout, 1 ready.
  int WaitInput(int c, int ms) {
    pollfd p[2] = {{c, POLLIN, 0}, {stop_, POLLIN, 0}};
    const int n = poll(p, 2, ms);
    if (n <= 0) return 0;
    if (p[1].revents != 0) return -1;
    return 1;
  }

  void ClientClosed() {
    std::lock_guard<std::mutex> lock(mu_);
    ++client_closes_;
    last_close_ns_ = absl::GetCurrentTimeNanos();
    cv_.notify_all();
  }

  // Waits until the client closes the connection (or stop).
  void AwaitEof(int c) {
    char buf[512];
    for (;;) {
      if (WaitInput(c, -1) < 0) return;
      const ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) {
        ClientClosed();
        return;
      }
    }
  }

  void Serve(int c) {
    std::string in;
    char buf[4096];
    size_t header_end;
    while ((header_end = in.find("\r\n\r\n")) == std::string::npos) {
      if (WaitInput(c, -1) < 0) return;
      const ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, n);
    }
    Seen s;
    std::vector<std::string> lines =
        absl::StrSplit(in.substr(0, header_end), "\r\n");
    std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
    if (first.size() >= 2) {
      s.method = first[0];
      s.path = first[1];
    }
    size_t length = 0;
    for (size_t i = 1; i < lines.size(); ++i) {
      const size_t colon = lines[i].find(':');
      if (colon == std::string::npos) continue;
      std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
      std::string value(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
      if (name == "content-length") (void)absl::SimpleAtoi(value, &length);
      s.headers[name] = value;
    }
    s.body = in.substr(header_end + 4);
    while (s.body.size() < length) {
      if (WaitInput(c, -1) < 0) return;
      const ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      s.body.append(buf, n);
    }
    const std::string path = s.path;
    const std::string s_method = s.method;
    const std::string reply_body = s.method == "POST" ? s.body : "hello";
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back(std::move(s));
      cv_.notify_all();
    }
    if (path == "/ok" || path == "/status/503" || path == "/big") {
      const std::string body =
          path == "/big" ? std::string(1 << 20, 'x') : reply_body;
      Send(c, absl::StrCat("HTTP/1.1 ", path == "/status/503" ? "503 Busy" : "200 OK",
                           "\r\nContent-Length: ", body.size(),
                           "\r\nX-Test: yes\r\nConnection: close\r\n\r\n", body));
      return;
    }
    if (path == "/head") {  // Headers announcing a body HEAD never gets.
      Send(c, absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n",
                           "X-Test: yes\r\n\r\n",
                           s_method == "HEAD" ? "" : std::string(1000, 'x')));
      AwaitEof(c);  // Keeps the connection open, as a keep-alive server does.
      return;
    }
    if (path == "/stall") {  // Never answers.
      AwaitEof(c);
      return;
    }
    if (path == "/trickle") {  // 1 of 1000 bytes every 10 ms.
      Send(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
      for (int i = 0; i < 1000; ++i) {
        const int r = WaitInput(c, 10);  // Pacing, and the client's close.
        if (r < 0) return;
        if (r > 0) {
          AwaitEof(c);
          return;
        }
        if (send(c, "x", 1, MSG_NOSIGNAL) != 1) {
          ClientClosed();
          return;
        }
      }
    }
  }

  static void Send(int c, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = send(c, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += n;
    }
  }

  int listen_ = -1;
  int stop_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  std::vector<std::thread> conns_;  // Only the acceptor and ~TestServer.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Seen> seen_;   // Guarded by mu_.
  int client_closes_ = 0;    // Guarded by mu_.
  int64_t last_close_ns_ = 0;  // Guarded by mu_.
};

TEST(HttpTest, GetAndPostAnswerNormally) {
  TestServer server;
  absl::StatusOr<Response> r = Get(Background(), server.Url("/ok"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  bool found = false;
  for (const auto& [k, v] : r->headers) found |= (k == "X-Test" && v == "yes");
  EXPECT_TRUE(found);
  EXPECT_EQ(server.LastSeen().method, "GET");

  auto [ctx, cancel] = WithTimeout(Background(), kBound);
  r = Post(ctx, server.Url("/ok"), R"({"a":1})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->body, R"({"a":1})");
  TestServer::Seen seen = server.LastSeen();
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.headers["content-type"], "application/json");

  r = Get(ctx, server.Url("/status/503"));  // An HTTP status is not an error.
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 503);
}

TEST(HttpTest, SendsTheContextsTraceHeaders) {
  TestServer server;
  const TraceContext tc{"0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331",
                        true};
  Context ctx = internal::WithTracestate(WithTraceContext(Background(), tc),
                                         "congo=t61rcWkgMzE");
  ASSERT_TRUE(Get(ctx, server.Url("/ok")).ok());
  TestServer::Seen seen = server.LastSeen();
  EXPECT_EQ(seen.headers["traceparent"], FormatTraceparent(tc));
  EXPECT_EQ(seen.headers["tracestate"], "congo=t61rcWkgMzE");
  // A caller's own traceparent is replaced by the Context's.
  Request req;
  req.url = server.Url("/ok");
  req.headers = {{"traceparent", "00-bogus"}, {"X-Mine", "1"}};
  ASSERT_TRUE(Do(ctx, req).ok());
  seen = server.LastSeen();
  EXPECT_EQ(seen.headers["traceparent"], FormatTraceparent(tc));
  EXPECT_EQ(seen.headers["x-mine"], "1");
  // No trace in the Context: a new valid one, no tracestate.
  ASSERT_TRUE(Get(Background(), server.Url("/ok")).ok());
  seen = server.LastSeen();
  EXPECT_TRUE(ParseTraceparent(seen.headers["traceparent"]).has_value());
  EXPECT_EQ(seen.headers.count("tracestate"), 0u);
}

TEST(HttpTest, CancelAbortsAStalledCallAtOnce) {
  TestServer server;
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<Response> r;
  std::atomic<int64_t> returned_ns{0};
  std::thread t([&, c = ctx] {
    r = Get(c, server.Url("/stall"));
    returned_ns = absl::GetCurrentTimeNanos();
  });
  ASSERT_TRUE(server.AwaitRequests(1));  // The request is on the server.
  const int64_t cancel_ns = absl::GetCurrentTimeNanos();
  cancel();
  t.join();
  ASSERT_TRUE(server.AwaitClientCloses(1));  // The connection is gone.
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  const absl::Duration to_return = absl::Nanoseconds(returned_ns - cancel_ns);
  const absl::Duration to_closed =
      absl::Nanoseconds(server.LastCloseNs() - cancel_ns);
  EXPECT_LT(to_return, kSlack);
  EXPECT_LT(to_closed, kSlack);
  std::printf("cancel -> Get returned %s, server saw the close %s\n",
              absl::FormatDuration(to_return).c_str(),
              absl::FormatDuration(to_closed).c_str());
}

TEST(HttpTest, DeadlineEndsStalledAndTricklingCalls) {
  TestServer server;
  for (const char* path : {"/stall", "/trickle"}) {
    const absl::Time start = absl::Now();
    auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(150));
    absl::StatusOr<Response> r = Get(ctx, server.Url(path));
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
        << path << ": " << r.status();
    EXPECT_GE(took, absl::Milliseconds(145)) << path;
    EXPECT_LT(took, absl::Milliseconds(150) + kSlack) << path;
    std::printf("150 ms deadline on %s: returned after %s\n", path,
                absl::FormatDuration(took).c_str());
  }
  EXPECT_TRUE(server.AwaitClientCloses(2));
}

TEST(HttpTest, CancelMidBody) {
  TestServer server;
  auto [ctx, cancel] = WithCancel(Background());
  // Cancel from another thread once ~50 ms of the trickle went by.
  auto [timer, stop] = WithTimeout(Background(), absl::Milliseconds(50));
  AfterFuncHandle h = AfterFunc(timer, [c = cancel] { c(); });
  absl::StatusOr<Response> r = Get(ctx, server.Url("/trickle"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_TRUE(server.AwaitClientCloses(1));
}

TEST(HttpTest, TransportErrorsMapToStatus) {
  TestServer server;
  auto [done, cancel] = WithCancel(Background());
  cancel();
  EXPECT_EQ(Get(done, server.Url("/ok")).status().code(),
            absl::StatusCode::kCancelled);
  auto [expired, c2] = WithTimeout(Background(), -absl::Seconds(1));
  EXPECT_EQ(Get(expired, server.Url("/ok")).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(server.Requests(), 0);  // Nothing was sent for either.
  // A port nobody listens on (bound, never listening).
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(getsockname(s, reinterpret_cast<sockaddr*>(&a), &len), 0);
  EXPECT_EQ(Get(Background(), absl::StrCat("http://127.0.0.1:",
                                           ntohs(a.sin_port), "/"))
                .status().code(),
            absl::StatusCode::kUnavailable);
  close(s);
  EXPECT_EQ(Get(Background(), "not a url").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Get(Background(), "ftp://127.0.0.1/x").status().code(),
            absl::StatusCode::kInvalidArgument);
  Request bad;
  bad.url = server.Url("/ok");
  bad.headers = {{"X-Evil", "a\r\nInjected: 1"}};
  EXPECT_EQ(Do(Background(), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  Request big;
  big.url = server.Url("/big");
  big.max_body_bytes = 1000;
  EXPECT_EQ(Do(Background(), big).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(HttpTest, HeadReturnsTheHeadersAtOnce) {
  TestServer server;
  Request head;
  head.method = "HEAD";
  head.url = server.Url("/head");
  // With a deadline, and without one (a cancel, only as a bound for the test:
  // without NOBODY the call waited for a body until its Context was done).
  auto [with_deadline, c1] = WithTimeout(Background(), kBound);
  auto [no_deadline, c2] = WithCancel(Background());
  auto [watchdog, c3] = WithTimeout(Background(), kBound);
  AfterFuncHandle h = AfterFunc(watchdog, [c = c2] { c(); });
  for (const Context& ctx : {with_deadline, no_deadline}) {
    const absl::Time start = absl::Now();
    absl::StatusOr<Response> r = Do(ctx, head);
    const absl::Duration took = absl::Now() - start;
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "");
    bool found = false;
    for (const auto& [k, v] : r->headers) {
      found |= (k == "Content-Length" && v == "1000");
    }
    EXPECT_TRUE(found);
    EXPECT_EQ(server.LastSeen().method, "HEAD");
    EXPECT_LT(took, 4 * kSlack);
  }
  // GET on the same path still reads the body.
  absl::StatusOr<Response> r = Get(with_deadline, server.Url("/head"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->body.size(), 1000u);
}

// A loopback listener that never accepts, its accept queue full: a new
// connection's SYN is dropped, so connecting to it times out (no external
// address needed). The queue (listen backlog 0: one connection) is filled
// by a connection of its own, and checked full through TCP_INFO, which
// gives a listener's queue length (tcpi_unacked) and its limit
// (tcpi_sacked).
class FullBacklogListener {
 public:
  FullBacklogListener() {
    listen_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        listen(listen_, 0) != 0 ||
        getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1";
      return;
    }
    port_ = ntohs(a.sin_port);
    const absl::Time give_up = absl::Now() + kBound;
    while (!Full() && absl::Now() < give_up) {
      if (fill_.size() < 4) {
        const int f = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        (void)connect(f, reinterpret_cast<sockaddr*>(&a), sizeof a);
        fill_.push_back(f);
      }
      absl::SleepFor(absl::Milliseconds(1));  // Polling TCP_INFO: no event.
    }
    EXPECT_TRUE(Full()) << "the accept queue did not fill";
  }
  ~FullBacklogListener() {
    for (int f : fill_) close(f);
    close(listen_);
  }
  std::string Url() const { return absl::StrCat("http://127.0.0.1:", port_, "/"); }

 private:
  bool Full() const {
    tcp_info info{};
    socklen_t len = sizeof info;
    return getsockopt(listen_, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
           info.tcpi_unacked > info.tcpi_sacked;
  }
  int listen_ = -1;
  int port_ = 0;
  std::vector<int> fill_;
};

TEST(HttpTest, ConnectTimeoutIsUnavailableUnlessTheDeadlineFired) {
  FullBacklogListener blackhole;
  Request req;
  req.url = blackhole.Url();
  req.connect_timeout = absl::Milliseconds(200);
  // connect_timeout first, with and without a deadline: cannot connect.
  auto [with_deadline, c1] = WithTimeout(Background(), kBound);
  for (const Context& ctx : {with_deadline, Background()}) {
    const absl::Time start = absl::Now();
    absl::StatusOr<Response> r = Do(ctx, req);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
    EXPECT_GE(took, absl::Milliseconds(195));
    EXPECT_LT(took, absl::Milliseconds(200) + 4 * kSlack);
    std::printf("connect_timeout 200 ms: %s after %s\n",
                r.status().ToString().c_str(),
                absl::FormatDuration(took).c_str());
  }
  // The Context's deadline first: its error.
  req.connect_timeout = absl::Seconds(30);
  auto [short_deadline, c2] = WithTimeout(Background(), absl::Milliseconds(200));
  EXPECT_EQ(Do(short_deadline, req).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

// Many calls at once, each canceled or timed out at a random moment or left
// to finish: each ends with its own outcome, and the server sees every
// aborted connection closed.
TEST(HttpTest, ConcurrentRandomCancels) {
  TestServer server;
  const int kCalls = 200 / kScale;
  std::atomic<int> ok{0}, stopped{0}, other{0};
  std::vector<std::thread> threads;
  std::atomic<int> next{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      absl::BitGen rng;
      while (next.fetch_add(1) < kCalls) {
        const char* path = absl::Bernoulli(rng, 0.5) ? "/ok" : "/stall";
        auto [ctx, cancel] = WithTimeout(
            Background(), absl::Milliseconds(absl::Uniform(rng, 1, 30)));
        absl::StatusOr<Response> r = Get(ctx, server.Url(path));
        if (r.ok()) {
          ++ok;
        } else if (r.status().code() == absl::StatusCode::kDeadlineExceeded) {
          ++stopped;
        } else {
          ++other;
          ADD_FAILURE() << r.status();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ok.load() + stopped.load(), kCalls);
  EXPECT_GT(stopped.load(), 0);
}

}  // namespace
}  // namespace reqctx::http
