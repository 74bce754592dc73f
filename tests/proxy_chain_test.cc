// Real proxies between hops (issue 24, section 1): Debian's nginx 1.22
// (grpc_pass) and HAProxy 2.6 (mode http, h2 to the server), started by this
// test on 127.0.0.1 with their own config, pid, log and temp files in the
// test's temp dir, and stopped by their pids (SIGTERM, then SIGKILL) even
// when a check fails. The chain:
//
//   client -> nginx -> reqctx echo hop -> HAProxy -> reqctx echo backend
//
// The echo servers run in this process (EchoServer, as the server binary
// runs them), so the backend's Context and workers are observed directly.
// Checked: the deadline arrives shrunk by the time spent in the proxies and
// is never extended (beyond gRPC's timeout rounding and loopback transit);
// a client cancel crosses both proxies and ends the backend's Context and
// workers within kCancelBound; the trace id and the baggage survive; the
// trailers of a status (grpc-status-details-bin, grpc-retry-pushback-ms)
// come back through both proxies; a proxy's own timeout shorter than the
// deadline is reported as what it is: both answer HTTP 504, which gRPC
// clients read as UNAVAILABLE (not DEADLINE_EXCEEDED), and the work behind
// the proxy is canceled. It also measures and prints what each proxy adds to
// the cancel latency and to the per-call budget ("proxy_chain:" lines).
//
// Without /usr/sbin/nginx or /usr/sbin/haproxy (tools/setup.sh installs
// them) every test is skipped with one line saying so.
#include <arpa/inet.h>
#include <grp.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/internal/incoming_deadline.h"
#include "interceptors/policy/pushback.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "tests/child_process.h"
#include "tests/echo_chain.h"
#include "tests/test_timing.h"
#include "w3c/baggage_context.h"
#include "w3c/trace_context.h"

namespace reqctx::testing {
namespace {

constexpr char kNginx[] = "/usr/sbin/nginx";
constexpr char kHaproxy[] = "/usr/sbin/haproxy";

// How soon a client cancel must end the backend's Context, across nginx, the
// hop (a sync server: its watcher polls every 5 ms) and HAProxy. Measured
// plain on a loaded 2-core machine: ~10 ms (see the printed figures).
constexpr int64_t kCancelBoundMs = PlainOrSanitized(500, 3000);
constexpr absl::Duration kCancelBound = absl::Milliseconds(kCancelBoundMs);
// The proxies' own short timeouts (nginx grpc_read_timeout, HAProxy timeout
// server) in the proxy-timeout checks.
constexpr int kProxyTimeoutS = 1;
// The work each echo server does in those checks: longer than the proxy's
// timeout plus the cancel bound, so only the proxy's timeout can end it.
constexpr int64_t kProxyWorkMs =
    1000 * kProxyTimeoutS + 2 * kCancelBoundMs;
// The work each echo server does per call in the cancel checks: the hop
// works this long, then calls the backend, which starts as long a work with
// its workers; the cancel comes as soon as the backend has the call, so a
// backend that ended by itself would take this long, twice the bound.
constexpr int64_t kCancelWorkMs = 2 * kCancelBoundMs;
// How many calls each measurement takes.
constexpr int kSamples = PlainOrSanitized(10, 3);

// What the backend saw of one call, recorded before its work starts.
struct Arrival {
  Context ctx;
  absl::Time at;
};

// Calls arriving at the backend (its before_work hook), for the test thread
// to wait on.
class Arrivals {
 public:
  void Add(const Context& ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    arrivals_.push_back({ctx, absl::Now()});
    cv_.notify_all();
  }
  // The oldest arrival not taken yet, waiting up to `bound`.
  std::optional<Arrival> Take(absl::Duration bound) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(bound),
                      [&] { return !arrivals_.empty(); })) {
      return std::nullopt;
    }
    Arrival a = arrivals_.front();
    arrivals_.pop_front();
    return a;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    arrivals_.clear();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Arrival> arrivals_;
};

// The trailers the trailer server sends with its status.
const std::string& DetailsBytes() {
  static const std::string* const bytes =
      new std::string("\x00\x01status-details\xff\x80\n", 19);
  return *bytes;
}
constexpr char kPushbackMs[] = "250";

// A server whose Echo fails RESOURCE_EXHAUSTED with binary status details and
// a pushback trailer, as a shedding reqctx server's refusal carries.
class TrailerService final : public ::echo::v1::Echo::Service {
  grpc::Status Echo(grpc::ServerContext* sc, const ::echo::v1::EchoRequest*,
                    ::echo::v1::EchoResponse*) override {
    sc->AddTrailingMetadata(policy::kRetryPushbackHeader, kPushbackMs);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "overloaded",
                        DetailsBytes());
  }
};

// True once something accepts TCP connections on 127.0.0.1:`port`
// (bounded by kWaitBound; rechecks every 20 ms while `child` runs).
bool WaitListening(int port, ChildProcess& child) {
  const absl::Time end = absl::Now() + kWaitBound;
  while (absl::Now() < end && child.Running()) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok =
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (ok) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

std::string Loopback(int port) { return absl::StrCat("127.0.0.1:", port); }

// One nginx server block: HTTP/2 cleartext on `port`, grpc_pass to
// `upstream`, with the given read/send timeout.
std::string NginxServer(int port, const std::string& upstream,
                        int timeout_s) {
  return absl::StrFormat(
      "  server {\n"
      "    listen 127.0.0.1:%d http2;\n"
      "    location / {\n"
      "      grpc_pass grpc://%s;\n"
      "      grpc_read_timeout %ds;\n"
      "      grpc_send_timeout %ds;\n"
      "    }\n"
      "  }\n",
      port, upstream, timeout_s, timeout_s);
}

// One HAProxy frontend/backend pair: h2 cleartext on `port` to `server`,
// with the given server timeout.
std::string HaproxyPair(const std::string& name, int port,
                        const std::string& server, int timeout_server_s) {
  return absl::StrFormat(
      "frontend fe_%s\n"
      "  bind 127.0.0.1:%d proto h2\n"
      "  default_backend be_%s\n"
      "backend be_%s\n"
      "  timeout server %ds\n"
      "  server s1 %s proto h2\n",
      name, port, name, name, timeout_server_s, server);
}

// Long timeouts: far above every deadline used here (the README's rule:
// a proxy's timeouts must exceed the longest deadline).
constexpr int kLongTimeoutS = 3600;

class ProxyChainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (access(kNginx, X_OK) != 0 || access(kHaproxy, X_OK) != 0) {
      skip_ = new std::string(absl::StrCat(
          "proxy_chain: SKIP: needs ", kNginx, " and ", kHaproxy,
          " (Debian's nginx and haproxy; tools/setup.sh installs them)"));
      std::printf("%s\n", skip_->c_str());
      return;
    }
    env_ = new Env();
    env_->status = env_->Start();
  }
  static void TearDownTestSuite() {
    delete env_;  // Stops the proxies by pid, then the servers.
    env_ = nullptr;
  }
  void SetUp() override {
    if (skip_ != nullptr) GTEST_SKIP() << *skip_;
    ASSERT_TRUE(env_->status.ok()) << env_->status;
    env_->arrivals.Clear();
  }

  struct Env {
    absl::Status status;
    std::string dir;
    Arrivals arrivals;
    std::unique_ptr<echo::EchoServer> backend;
    // The hop straight to the backend, through HAProxy (long timeouts), and
    // through HAProxy's short-timeout frontend.
    std::unique_ptr<echo::EchoServer> hop_direct, hop_haproxy, hop_short;
    std::unique_ptr<TrailerService> trailer_service;
    std::unique_ptr<grpc::Server> trailer_server;
    int trailer_port = 0;
    // HAProxy frontends: to the backend (long), to the backend with a short
    // `timeout server`, to the trailer server.
    int h_long = 0, h_short = 0, h_trailer = 0;
    // nginx servers: to hop_haproxy, to hop_direct, to hop_haproxy with a
    // short grpc_read_timeout, to hop_short, to HAProxy's trailer frontend.
    int n_haproxy = 0, n_direct = 0, n_short = 0, n_hop_short = 0,
        n_trailer = 0;
    ChildProcess nginx, haproxy;

    ~Env() { Stop(); }

    // Stops what runs: the proxies by pid only (SIGTERM, SIGKILL after
    // 10 s: ChildProcess::Stop), then the servers.
    void Stop() {
      nginx.Stop(absl::Seconds(10));
      haproxy.Stop(absl::Seconds(10));
      for (auto* s : {&hop_direct, &hop_haproxy, &hop_short, &backend}) {
        if (*s) (*s)->Shutdown();
        s->reset();
      }
      if (trailer_server) trailer_server->Shutdown();
      trailer_server.reset();
      trailer_service.reset();
    }

    // StartOnce, up to 3 times: a proxy's port, free when picked, may be
    // taken by another test before the proxy binds it.
    absl::Status Start() {
      absl::Status s;
      for (int attempt = 0; attempt < 3; ++attempt) {
        s = StartOnce();
        if (s.ok()) return s;
        Stop();
      }
      return s;
    }

    absl::StatusOr<std::unique_ptr<echo::EchoServer>> StartEcho(
        const std::string& name, const std::string& next) {
      echo::EchoServerOptions o;
      o.name = name;
      o.next = next;
      if (name == "backend") {
        o.before_work = [this](const Context& ctx) { arrivals.Add(ctx); };
      }
      return echo::EchoServer::Start(o);
    }

    absl::Status StartOnce() {
      dir = MakeTempDir("proxy_chain");
      if (dir.empty()) return absl::InternalError("no temp dir");
      for (int* p : {&h_long, &h_short, &h_trailer, &n_haproxy, &n_direct,
                     &n_short, &n_hop_short, &n_trailer}) {
        *p = FreeLoopbackPort();
        if (*p == 0) return absl::InternalError("no free port");
      }
      auto b = StartEcho("backend", "");
      if (!b.ok()) return b.status();
      backend = *std::move(b);
      auto hd = StartEcho("hop", backend->address());
      if (!hd.ok()) return hd.status();
      hop_direct = *std::move(hd);
      auto hh = StartEcho("hop", Loopback(h_long));
      if (!hh.ok()) return hh.status();
      hop_haproxy = *std::move(hh);
      auto hs = StartEcho("hop", Loopback(h_short));
      if (!hs.ok()) return hs.status();
      hop_short = *std::move(hs);
      grpc::ServerBuilder builder;
      builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                               &trailer_port);
      trailer_service = std::make_unique<TrailerService>();
      builder.RegisterService(trailer_service.get());
      trailer_server = builder.BuildAndStart();
      if (!trailer_server || trailer_port == 0) {
        return absl::InternalError("trailer server did not start");
      }

      // HAProxy: foreground (-db), its config only; no pid file, no
      // socket, no chroot.
      const std::string haproxy_cfg = absl::StrCat(
          "global\n"
          "  maxconn 512\n"
          "defaults\n"
          "  mode http\n"
          "  timeout connect 5s\n"
          "  timeout client ", kLongTimeoutS, "s\n"
          "  timeout server ", kLongTimeoutS, "s\n"
          "  timeout tunnel ", kLongTimeoutS, "s\n",
          HaproxyPair("long", h_long, backend->address(), kLongTimeoutS),
          HaproxyPair("short", h_short, backend->address(), kProxyTimeoutS),
          HaproxyPair("trailer", h_trailer, Loopback(trailer_port),
                      kLongTimeoutS));
      if (!WriteFile(dir + "/haproxy.cfg", haproxy_cfg)) {
        return absl::InternalError("cannot write haproxy.cfg");
      }
      if (!haproxy.Start({kHaproxy, "-db", "-f", dir + "/haproxy.cfg"},
                         dir + "/haproxy.log")) {
        return absl::InternalError("cannot start haproxy");
      }
      for (int port : {h_long, h_short, h_trailer}) {
        if (!WaitListening(port, haproxy)) {
          return absl::InternalError(
              absl::StrCat("haproxy did not listen on ", port, ": ",
                           haproxy.Output()));
        }
      }

      // nginx: one process (master_process off, so the pid this test
      // started is the only one to stop), in the foreground (daemon off),
      // every path under the temp dir (-p, -e, pid, logs, temp paths).
      for (const char* sub : {"/logs", "/tmp"}) {
        if (mkdir((dir + sub).c_str(), 0700) != 0) {
          return absl::InternalError("cannot make nginx dirs");
        }
      }
      // As root nginx would switch to (and chown its temp dirs for) the
      // user "nobody"; stay the user that runs the test.
      std::string user;
      if (geteuid() == 0) {
        const passwd* pw = getpwuid(geteuid());
        const group* gr = getgrgid(getegid());
        if (pw == nullptr || gr == nullptr) {
          return absl::InternalError("no user/group name for nginx");
        }
        user = absl::StrCat("user ", pw->pw_name, " ", gr->gr_name, ";\n");
      }
      std::string nginx_conf = absl::StrCat(
          user,
          "daemon off;\n"
          "master_process off;\n"
          "pid ", dir, "/nginx.pid;\n"
          "error_log ", dir, "/logs/error.log info;\n"
          "events { worker_connections 512; }\n"
          "http {\n"
          "  access_log ", dir, "/logs/access.log;\n"
          "  client_body_temp_path ", dir, "/tmp/body;\n"
          "  proxy_temp_path ", dir, "/tmp/proxy;\n"
          "  fastcgi_temp_path ", dir, "/tmp/fastcgi;\n"
          "  uwsgi_temp_path ", dir, "/tmp/uwsgi;\n"
          "  scgi_temp_path ", dir, "/tmp/scgi;\n",
          NginxServer(n_haproxy, hop_haproxy->address(), kLongTimeoutS),
          NginxServer(n_direct, hop_direct->address(), kLongTimeoutS),
          NginxServer(n_short, hop_haproxy->address(), kProxyTimeoutS),
          NginxServer(n_hop_short, hop_short->address(), kLongTimeoutS),
          NginxServer(n_trailer, Loopback(h_trailer), kLongTimeoutS),
          "}\n");
      if (!WriteFile(dir + "/nginx.conf", nginx_conf)) {
        return absl::InternalError("cannot write nginx.conf");
      }
      if (!nginx.Start({kNginx, "-p", dir + "/", "-e", dir + "/logs/error.log",
                        "-c", dir + "/nginx.conf"},
                       dir + "/nginx.out")) {
        return absl::InternalError("cannot start nginx");
      }
      for (int port : {n_haproxy, n_direct, n_short, n_hop_short, n_trailer}) {
        if (!WaitListening(port, nginx)) {
          return absl::InternalError(
              absl::StrCat("nginx did not listen on ", port, ": ",
                           nginx.Output()));
        }
      }
      return absl::OkStatus();
    }
  };

  static Env* env_;
  static std::string* skip_;
};

ProxyChainTest::Env* ProxyChainTest::env_ = nullptr;
std::string* ProxyChainTest::skip_ = nullptr;

constexpr char kTraceId[] = "4bf92f3577b34da6a3ce929d0e0e4736";

// The client's Context: a trace and baggage, as a real caller's.
Context ClientContext() {
  Context ctx = WithTraceContext(
      Background(), TraceContext{kTraceId, "00f067aa0ba902b7", true});
  ctx = WithBaggage(ctx, "tenant", "acme corp");
  return WithBaggage(ctx, "request-class", "interactive");
}

struct Reply {
  grpc::Status status;
  ::echo::v1::EchoResponse response;
  absl::Time sent;
  absl::Duration took;
};

// An Echo call to `address` under `cc` (from NewClientContext: the trace,
// baggage and deadline of its Context).
Reply Call(const std::string& address, int64_t work_ms,
           grpc::ClientContext* cc) {
  auto stub = ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel(address, grpc::InsecureChannelCredentials()));
  ::echo::v1::EchoRequest request;
  request.set_message("through proxies");
  request.set_work_ms(work_ms);
  Reply r;
  r.sent = absl::Now();
  r.status = stub->Echo(cc, request, &r.response);
  r.took = absl::Now() - r.sent;
  return r;
}

Reply CallWithTimeout(const std::string& address, absl::Duration timeout,
                      int64_t work_ms) {
  auto [ctx, cancel] = WithTimeout(ClientContext(), timeout);
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  Reply r = Call(address, work_ms, cc.get());
  cancel();
  return r;
}

int64_t Median(std::vector<int64_t> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST_F(ProxyChainTest, DeadlineArrivesShrunkAndIsNeverExtended) {
  const absl::Duration timeout = absl::Seconds(5);
  constexpr int64_t kWorkMs = 50;
  auto [ctx, cancel] = WithTimeout(ClientContext(), timeout);
  const absl::Time client_deadline = *ctx.Deadline();
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  Reply r = Call(Loopback(env_->n_haproxy), kWorkMs, cc.get());
  cancel();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.response.hops_size(), 2);
  const int64_t hop_ms = r.response.hops(0).deadline_remaining_ms();
  const int64_t backend_ms = r.response.hops(1).deadline_remaining_ms();
  // Shrunk at each hop: the hop's work and the time through HAProxy come
  // off the backend's budget.
  EXPECT_LE(hop_ms, absl::ToInt64Milliseconds(timeout));
  EXPECT_GT(hop_ms, 0);
  EXPECT_LE(backend_ms, hop_ms - kWorkMs);
  EXPECT_GT(backend_ms, 0);
  // Never extended: the backend's absolute deadline is the client's, plus
  // at most gRPC's rounding up of grpc-timeout at each of the two reqctx
  // hops and the loopback transit the relative header cannot carry
  // (internal/incoming_deadline.h's kTransitSlack per hop).
  std::optional<Arrival> a = env_->arrivals.Take(kWaitBound);
  ASSERT_TRUE(a.has_value());
  const absl::Time backend_deadline = *a->ctx.Deadline();
  const absl::Duration allowed =
      2 * (internal::GrpcTimeoutRoundUp(timeout) + internal::kTransitSlack);
  EXPECT_LE(backend_deadline - client_deadline, allowed)
      << "backend deadline later than the client's by "
      << (backend_deadline - client_deadline);
  // And it arrived shrunk by at least the hop's work.
  EXPECT_LE(backend_deadline - a->at,
            client_deadline - r.sent - absl::Milliseconds(kWorkMs) + allowed);
  std::printf(
      "proxy_chain: deadline 5000 ms through nginx and HAProxy: the hop saw "
      "%lld ms, the backend %lld ms; backend deadline - client deadline = "
      "%s\n",
      static_cast<long long>(hop_ms), static_cast<long long>(backend_ms),
      absl::FormatDuration(backend_deadline - client_deadline).c_str());
}

TEST_F(ProxyChainTest, TraceIdAndBaggageSurviveBothProxies) {
  Reply r = CallWithTimeout(Loopback(env_->n_haproxy), absl::Seconds(10), 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.response.trace_id(), kTraceId);
  ASSERT_EQ(r.response.hops_size(), 2);
  for (const auto& hop : r.response.hops()) {
    EXPECT_EQ(hop.trace_id(), kTraceId) << hop.service();
  }
  // Each hop has its own span.
  EXPECT_NE(r.response.hops(0).span_id(), r.response.hops(1).span_id());
  std::optional<Arrival> a = env_->arrivals.Take(kWaitBound);
  ASSERT_TRUE(a.has_value());
  Baggage baggage(a->ctx);
  EXPECT_EQ(baggage.Get("tenant"), "acme corp");
  EXPECT_EQ(baggage.Get("request-class"), "interactive");
}

TEST_F(ProxyChainTest, StatusDetailsAndPushbackComeBackThroughBoth) {
  // client -> nginx -> HAProxy -> a server failing with trailers.
  auto stub = ::echo::v1::Echo::NewStub(grpc::CreateChannel(
      Loopback(env_->n_trailer), grpc::InsecureChannelCredentials()));
  grpc::ClientContext cc;
  cc.set_deadline(absl::ToChronoTime(absl::Now() + kWaitBound));
  ::echo::v1::EchoResponse response;
  grpc::Status s = stub->Echo(&cc, ::echo::v1::EchoRequest(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(s.error_message(), "overloaded");
  EXPECT_EQ(s.error_details(), DetailsBytes());
  const auto& trailers = cc.GetServerTrailingMetadata();
  auto it = trailers.find(policy::kRetryPushbackHeader);
  ASSERT_NE(it, trailers.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), kPushbackMs);
}

// One client cancel through `address`: starts a long call, waits until the
// backend has it, cancels it, and returns how long the backend's Context
// took to end (nullopt, with a test failure, if it did not in the bound).
std::optional<absl::Duration> CancelOnce(const std::string& address,
                                         Arrivals& arrivals,
                                         echo::EchoServer& backend) {
  arrivals.Clear();
  auto [ctx, cancel] = WithTimeout(ClientContext(), absl::Seconds(60));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  Reply reply;
  std::thread caller([&] { reply = Call(address, kCancelWorkMs, cc.get()); });
  std::optional<Arrival> a = arrivals.Take(kWaitBound);
  std::optional<absl::Duration> took;
  if (a.has_value()) {
    const absl::Time canceled = absl::Now();
    cc->TryCancel();
    if (a->ctx.Done().WaitFor(kCancelBound)) took = absl::Now() - canceled;
    // Canceled, not ended by its own deadline or its work.
    if (took.has_value()) {
      EXPECT_TRUE(absl::IsCancelled(a->ctx.Err())) << a->ctx.Err();
    }
  }
  if (!took.has_value()) cc->TryCancel();  // Never leave the call running.
  caller.join();
  cancel();
  EXPECT_TRUE(a.has_value()) << "the call did not reach the backend";
  EXPECT_TRUE(took.has_value())
      << "the backend's Context did not end within " << kCancelBound;
  EXPECT_EQ(reply.status.error_code(), grpc::StatusCode::CANCELLED)
      << reply.status.error_message();
  // The backend's workers stop too, well before their work would end.
  EXPECT_TRUE(backend.stats().WaitUntil(IsIdle, kCancelBound));
  return took;
}

TEST_F(ProxyChainTest, ClientCancelCrossesBothProxiesAndStopsTheBackend) {
  std::optional<absl::Duration> took =
      CancelOnce(Loopback(env_->n_haproxy), env_->arrivals, *env_->backend);
  ASSERT_TRUE(took.has_value());
  EXPECT_LE(*took, kCancelBound);
  EXPECT_TRUE(env_->hop_haproxy->stats().WaitUntil(IsIdle, kWaitBound));
}

TEST_F(ProxyChainTest, NginxReadTimeoutIsReportedAsUnavailable) {
  // nginx's grpc_read_timeout (1 s) is shorter than the 20 s deadline: nginx
  // answers HTTP 504, which gRPC reads as UNAVAILABLE, and closes its
  // upstream connection, which cancels the hop's call (the hop is still at
  // its work: nginx counts from the last read from its upstream).
  Reply r = CallWithTimeout(Loopback(env_->n_short), absl::Seconds(20),
                            kProxyWorkMs);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("504"), std::string::npos)
      << r.status.error_message();
  EXPECT_GE(r.took, absl::Seconds(kProxyTimeoutS) - absl::Milliseconds(50));
  EXPECT_LT(r.took, absl::Seconds(kProxyTimeoutS) + kCancelBound);
  // The hop's work is canceled, long before it would end.
  EXPECT_TRUE(env_->hop_haproxy->stats().WaitUntil(IsIdle, kCancelBound));
  std::printf("proxy_chain: nginx grpc_read_timeout %d s under a 20 s "
              "deadline: %s \"%s\" after %s\n",
              kProxyTimeoutS, "UNAVAILABLE", r.status.error_message().c_str(),
              absl::FormatDuration(r.took).c_str());
}

TEST_F(ProxyChainTest, HaproxyServerTimeoutIsReportedAsUnavailable) {
  // HAProxy's `timeout server` (1 s) is shorter than the deadline: HAProxy
  // answers the hop HTTP 504 (UNAVAILABLE to the hop's gRPC client), the hop
  // returns that status through nginx, and HAProxy resets the backend's
  // stream, which cancels its work.
  // The hop works kProxyWorkMs first, then calls through HAProxy, whose
  // timer starts then.
  Reply r = CallWithTimeout(Loopback(env_->n_hop_short), absl::Seconds(20),
                            kProxyWorkMs);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("504"), std::string::npos)
      << r.status.error_message();
  const absl::Duration expected =
      absl::Milliseconds(kProxyWorkMs) + absl::Seconds(kProxyTimeoutS);
  EXPECT_GE(r.took, expected - absl::Milliseconds(50));
  EXPECT_LT(r.took, expected + kCancelBound);
  // The backend got the call and its work was canceled by HAProxy's reset,
  // long before the work would end.
  std::optional<Arrival> a = env_->arrivals.Take(kWaitBound);
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->ctx.Done().WaitFor(kWaitBound));
  EXPECT_LT(absl::Now() - a->at, absl::Milliseconds(kProxyWorkMs));
  EXPECT_TRUE(env_->backend->stats().WaitUntil(IsIdle, kCancelBound));
  EXPECT_TRUE(env_->hop_short->stats().WaitUntil(IsIdle, kCancelBound));
  std::printf("proxy_chain: HAProxy timeout server %d s under a 20 s "
              "deadline: %s \"%s\" after %s\n",
              kProxyTimeoutS, "UNAVAILABLE", r.status.error_message().c_str(),
              absl::FormatDuration(r.took).c_str());
}

// What each proxy adds, printed: the cancel latency (client cancel -> the
// backend's Context done), the time a call takes to reach the backend, and
// the per-call budget it costs (the client's timeout minus what the backend
// has left when the call arrives: reqctx's client glue keeps up to ~3% of
// the deadline per reqctx hop against gRPC's rounding, which no proxy
// changes: the proxies forward grpc-timeout as it is), median of kSamples,
// without proxies, with nginx, with HAProxy, with both; then each path's
// difference from the one without proxies.
TEST_F(ProxyChainTest, MeasureWhatEachProxyAdds) {
  struct Path {
    const char* name;
    std::string address;
    int64_t cancel_us = 0, reach_us = 0, budget_us = 0;
  };
  std::vector<Path> paths = {
      {"no proxy", env_->hop_direct->address()},
      {"nginx", Loopback(env_->n_direct)},
      {"HAProxy", env_->hop_haproxy->address()},
      {"nginx + HAProxy", Loopback(env_->n_haproxy)},
  };
  const absl::Duration timeout = absl::Seconds(10);
  for (Path& p : paths) {
    std::vector<int64_t> cancel_us, reach_us, budget_us;
    for (int i = 0; i < kSamples; ++i) {
      std::optional<absl::Duration> took =
          CancelOnce(p.address, env_->arrivals, *env_->backend);
      if (took.has_value()) cancel_us.push_back(absl::ToInt64Microseconds(*took));
      env_->arrivals.Clear();
      Reply r = CallWithTimeout(p.address, timeout, 0);
      ASSERT_TRUE(r.status.ok()) << p.name << ": " << r.status.error_message();
      std::optional<Arrival> a = env_->arrivals.Take(kWaitBound);
      ASSERT_TRUE(a.has_value());
      reach_us.push_back(absl::ToInt64Microseconds(a->at - r.sent));
      budget_us.push_back(absl::ToInt64Microseconds(
          timeout - (*a->ctx.Deadline() - a->at)));
    }
    p.cancel_us = Median(cancel_us);
    p.reach_us = Median(reach_us);
    p.budget_us = Median(budget_us);
    std::printf(
        "proxy_chain: %-16s cancel -> backend done %6.2f ms (max %6.2f); "
        "client -> backend %6.2f ms; budget used %7.2f ms of 10 s "
        "(medians, n=%d)\n",
        p.name, p.cancel_us / 1000.0,
        cancel_us.empty() ? -1.0
                          : *std::max_element(cancel_us.begin(),
                                              cancel_us.end()) / 1000.0,
        p.reach_us / 1000.0, p.budget_us / 1000.0, kSamples);
  }
  for (size_t i = 1; i < paths.size(); ++i) {
    std::printf(
        "proxy_chain: %-16s adds %+6.2f ms to the cancel latency, %+6.2f ms "
        "to the way to the backend, %+6.2f ms to the budget used\n",
        paths[i].name, (paths[i].cancel_us - paths[0].cancel_us) / 1000.0,
        (paths[i].reach_us - paths[0].reach_us) / 1000.0,
        (paths[i].budget_us - paths[0].budget_us) / 1000.0);
  }
}

}  // namespace
}  // namespace reqctx::testing
