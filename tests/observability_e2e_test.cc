// Observability end to end, in process, on 127.0.0.1: known traffic (OK,
// deadline exceeded, canceled, rejected) through real gRPC servers with
// reqctx's interceptors, then a scrape over HTTP with exact counts and
// histogram bucket totals; the orphan detector's one report for a handler
// that ignores its Context; W3C baggage across two hops and hostile baggage
// on the wire; stalled scrapers never holding up RPCs.
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/context.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/observability.h"
#include "ledger/causes.h"
#include "metrics/metrics_server.h"
#include "proto/echo.grpc.pb.h"
#include "tests/http_client.h"
#include "tests/raw_h2_call.h"
#include "w3c/baggage_context.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using ::testing::HasSubstr;

constexpr absl::Duration kBound =
    reqctx::testing::PlainOrSanitized(absl::Seconds(20), absl::Seconds(60));
constexpr char kMethod[] = "/echo.v1.Echo/Echo";

// A sync-API Echo service whose behaviour the request's message picks:
//   "ok"     answers at once with the Context's baggage header (or, with a
//            next hop, forwards with baggage hop=<name> and relays);
//   "sleep"  sleeps work_ms on its Context, then answers with its error;
//   "reject" INVALID_ARGUMENT at once;
//   "ignore" waits for Release() whatever its Context says (an orphan).
class TestService final : public ::echo::v1::Echo::Service {
 public:
  explicit TestService(std::string name) : name_(std::move(name)) {}
  // Under mu_: the handler threads may have been started before this call,
  // and gRPC's own ordering of the later call is invisible to TSan.
  void SetNext(std::shared_ptr<grpc::Channel> next) {
    std::lock_guard<std::mutex> lock(mu_);
    next_ = ::echo::v1::Echo::NewStub(next);
  }

  grpc::Status Echo(grpc::ServerContext* sc, const EchoRequest* req,
                    EchoResponse* resp) override {
    Context ctx = FromServerContext(sc);
    CountArrival();
    const std::string& what = req->message();
    if (what == "reject") {
      return grpc::Status(grpc::INVALID_ARGUMENT, "rejected by the test");
    }
    if (what == "sleep") {
      (void)SleepFor(ctx, absl::Milliseconds(req->work_ms()));
      return ToGrpcStatus(ctx.Err());
    }
    if (what == "ignore") {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                   [this] { return released_; });
      return grpc::Status::OK;
    }
    ::echo::v1::Echo::Stub* next = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      next = next_.get();
    }
    if (next != nullptr) {
      std::unique_ptr<grpc::ClientContext> cc =
          NewClientContext(WithBaggage(ctx, "hop", name_));
      return next->Echo(cc.get(), *req, resp);
    }
    resp->set_message(BaggageHeaderFor(ctx));
    return grpc::Status::OK;
  }

  // Waits (bounded) until `n` calls have reached a handler, in all.
  bool WaitArrivals(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                        [&] { return arrivals_ >= n; });
  }
  int arrivals() {
    std::lock_guard<std::mutex> lock(mu_);
    return arrivals_;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  void CountArrival() {
    std::lock_guard<std::mutex> lock(mu_);
    ++arrivals_;
    cv_.notify_all();
  }

  const std::string name_;
  std::unique_ptr<::echo::v1::Echo::Stub> next_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrivals_ = 0;       // Guarded by mu_.
  bool released_ = false;  // Guarded by mu_.
};

struct TestServer {
  explicit TestServer(std::string name) : service(std::move(name)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service);
    InstallServerInterceptors(builder);
    server = builder.BuildAndStart();
  }
  ~TestServer() {
    service.Release();
    if (server) server->Shutdown(std::chrono::system_clock::now());
  }
  std::shared_ptr<grpc::Channel> Channel() const {
    return reqctx::CreateChannel(absl::StrCat("127.0.0.1:", port),
                         grpc::InsecureChannelCredentials());
  }
  TestService service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

double Sample(const std::string& page, const std::string& series) {
  return testing::ExpositionSample(page, series);
}

std::string M(const std::string& name, const std::string& extra = "") {
  return absl::StrCat(name, "{method=\"", kMethod, "\"", extra, "}");
}

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EnableRpcMetrics();
    MetricsServerOptions options;
    options.request_timeout = absl::Milliseconds(300);
    absl::StatusOr<std::unique_ptr<MetricsServer>> s =
        MetricsServer::Start(options);
    ASSERT_TRUE(s.ok()) << s.status();
    metrics_ = std::move(*s);
  }
  std::string Scrape() {
    absl::StatusOr<testing::HttpResponse> r =
        testing::HttpGet(metrics_->port(), "/metrics", kBound);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    EXPECT_EQ(r->status, 200);
    return r->body;
  }
  std::unique_ptr<MetricsServer> metrics_;
};

grpc::StatusCode Call(::echo::v1::Echo::Stub& stub, const std::string& what,
                      std::optional<absl::Duration> deadline,
                      int64_t work_ms = 0) {
  grpc::ClientContext cc;
  if (deadline) cc.set_deadline(absl::ToChronoTime(absl::Now() + *deadline));
  EchoRequest req;
  req.set_message(what);
  req.set_work_ms(work_ms);
  EchoResponse resp;
  return stub.Echo(&cc, req, &resp).error_code();
}

TEST_F(ObservabilityTest, KnownTrafficGivesExactCountsAndBuckets) {
  TestServer server("backend");
  ASSERT_NE(server.server, nullptr);
  auto stub = ::echo::v1::Echo::NewStub(server.Channel());
  // Scrapers that stall on the metrics endpoint while RPCs are served.
  std::vector<std::unique_ptr<testing::StalledClient>> stalled;
  for (int i = 0; i < 4; ++i) {
    stalled.push_back(
        std::make_unique<testing::StalledClient>(metrics_->port(), "GET /met"));
  }
  const std::string before = Scrape();

  // Deadlines away from bucket bounds (grpc-timeout rounds up).
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Call(*stub, "ok", absl::Seconds(8)), grpc::OK);
  }
  for (int i = 0; i < 2; ++i) EXPECT_EQ(Call(*stub, "ok", std::nullopt), grpc::OK);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Call(*stub, "sleep", absl::Milliseconds(400), 60000),
              grpc::DEADLINE_EXCEEDED);
  }
  EXPECT_EQ(Call(*stub, "reject", absl::Seconds(8)), grpc::INVALID_ARGUMENT);
  // Two calls canceled by their caller's Context while the handler runs.
  for (int i = 0; i < 2; ++i) {
    const int arrived = server.service.arrivals();
    auto [ctx, cancel] = WithCancel(Background());
    std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
    EchoRequest req;
    req.set_message("sleep");
    req.set_work_ms(60000);
    grpc::Status status;
    std::thread caller([&] {
      EchoResponse resp;
      status = stub->Echo(cc.get(), req, &resp);
    });
    EXPECT_TRUE(server.service.WaitArrivals(arrived + 1));
    cancel();
    caller.join();
    EXPECT_EQ(status.error_code(), grpc::CANCELLED);
  }
  // Handlers have returned; the server may still be finishing the calls.
  const absl::Time end = absl::Now() + kBound;
  std::string after = Scrape();
  while (Sample(after, M("reqctx_server_active_calls")) != 0 &&
         absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(10));
    after = Scrape();
  }
  auto delta = [&](const std::string& series) {
    return Sample(after, series) - Sample(before, series);
  };
  auto code = [](const char* c) { return absl::StrCat(",code=\"", c, "\""); };
  EXPECT_EQ(delta(M("reqctx_server_started_total")), 13);
  // The server's series say why each call's Context ended (its `cause`).
  auto ended = [&](const char* c, const char* cause) {
    return absl::StrCat(code(c), ",cause=\"", cause, "\"");
  };
  EXPECT_EQ(delta(M("reqctx_server_handled_total", ended("OK", "NONE"))), 7);
  EXPECT_EQ(delta(M("reqctx_server_handled_total",
                    ended("DEADLINE_EXCEEDED", "CALLER_DEADLINE"))), 3);
  EXPECT_EQ(delta(M("reqctx_server_handled_total",
                    ended("CANCELLED", "CLIENT_CANCEL"))), 2);
  EXPECT_EQ(delta(M("reqctx_server_handled_total",
                    ended("INVALID_ARGUMENT", "NONE"))), 1);
  EXPECT_EQ(Sample(after, M("reqctx_server_active_calls")), 0);
  // Deadlines at arrival: 3 x 400 ms and 6 x 8 s; 4 calls had none. (400 ms,
  // not less: under TSan on 2 loaded cores a 40 ms call once expired before
  // it reached the server, which then never counted it.)
  EXPECT_EQ(delta(M("reqctx_server_no_deadline_total")), 4);
  EXPECT_EQ(delta(M("reqctx_server_deadline_at_arrival_seconds_count")), 9);
  EXPECT_EQ(delta(M("reqctx_server_deadline_at_arrival_seconds_bucket",
                    ",le=\"0.5\"")), 3);
  EXPECT_EQ(delta(M("reqctx_server_deadline_at_arrival_seconds_bucket",
                    ",le=\"5\"")), 3);
  EXPECT_EQ(delta(M("reqctx_server_deadline_at_arrival_seconds_bucket",
                    ",le=\"10\"")), 9);
  EXPECT_EQ(delta(M("reqctx_server_handling_seconds_count")), 13);
  EXPECT_EQ(delta(M("reqctx_server_handling_seconds_bucket", ",le=\"+Inf\"")), 13);
  // Handlers that returned after their Context was done: the 5 sleepers.
  EXPECT_EQ(delta(M("reqctx_server_orphaned_seconds_count")), 5);
  // Client side: the same calls, and two cancels sent by the glue.
  EXPECT_EQ(delta(M("reqctx_client_started_total")), 13);
  EXPECT_EQ(delta(M("reqctx_client_handled_total", code("OK"))), 7);
  EXPECT_EQ(delta(M("reqctx_client_handled_total", code("DEADLINE_EXCEEDED"))), 3);
  EXPECT_EQ(delta(M("reqctx_client_handled_total", code("CANCELLED"))), 2);
  EXPECT_EQ(delta(M("reqctx_client_cancel_propagation_seconds_count")), 2);
  EXPECT_EQ(Sample(after, M("reqctx_client_active_calls")), 0);
  // Process-wide gauges are there.
  EXPECT_THAT(after, HasSubstr("\nreqctx_live_timers "));
  EXPECT_THAT(after, HasSubstr("\nreqctx_executor_threads "));
  EXPECT_THAT(after, HasSubstr("\nreqctx_sync_watched_calls "));
  // The stalled scrapers were cut off, not served.
  for (auto& s : stalled) EXPECT_TRUE(s->ClosedByServer(kBound));
}

TEST_F(ObservabilityTest, HandlerIgnoringItsContextIsReportedExactlyOnce) {
  TestServer server("backend");
  ASSERT_NE(server.server, nullptr);
  auto stub = ::echo::v1::Echo::NewStub(server.Channel());
  constexpr absl::Duration kThreshold = absl::Milliseconds(100);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> lines;
  ASSERT_TRUE(EnableOrphanReports(kThreshold, [&](const std::string& line) {
                std::lock_guard<std::mutex> lock(mu);
                lines.push_back(line);
                cv.notify_all();
              }).ok());
  const std::string before = Scrape();
  EXPECT_EQ(Call(*stub, "ignore", absl::Milliseconds(50)),
            grpc::DEADLINE_EXCEEDED);
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                            [&] { return !lines.empty(); }));
  }
  absl::SleepFor(5 * kThreshold);  // Still running: no second report.
  server.service.Release();
  const absl::Time end = absl::Now() + kBound;
  std::string after = Scrape();
  while (Sample(after, M("reqctx_server_active_calls")) != 0 &&
         absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(10));
    after = Scrape();
  }
  DisableOrphanDetector();
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("orphaned handler method=/echo.v1.Echo/Echo"));
  EXPECT_THAT(lines[0], ::testing::ContainsRegex("trace_id=[0-9a-f]{32} "));
  EXPECT_THAT(lines[0], HasSubstr("context="));
  EXPECT_EQ(Sample(after, absl::StrCat("reqctx_orphan_reports_total{kind=\"handler\",method=\"",
                                       kMethod, "\"}")) -
                Sample(before, absl::StrCat("reqctx_orphan_reports_total{kind=\"handler\",method=\"",
                                            kMethod, "\"}")),
            1);
  const double orphaned = Sample(after, M("reqctx_server_orphaned_seconds_count")) -
                          Sample(before, M("reqctx_server_orphaned_seconds_count"));
  const double under_threshold =
      Sample(after, M("reqctx_server_orphaned_seconds_bucket", ",le=\"0.1\"")) -
      Sample(before, M("reqctx_server_orphaned_seconds_bucket", ",le=\"0.1\""));
  EXPECT_EQ(orphaned, 1);
  EXPECT_EQ(under_threshold, 0);  // It ran on well past the threshold.
}

TEST_F(ObservabilityTest, BaggageCrossesTwoHops) {
  TestServer back("back");
  TestServer front("front");
  ASSERT_NE(back.server, nullptr);
  ASSERT_NE(front.server, nullptr);
  front.service.SetNext(back.Channel());
  auto stub = ::echo::v1::Echo::NewStub(front.Channel());
  Context ctx = WithBaggage(WithBaggage(Background(), "tenant", "acme corp"),
                            "criticality", "critical");
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  EchoRequest req;
  req.set_message("ok");
  EchoResponse resp;
  ASSERT_TRUE(stub->Echo(cc.get(), req, &resp).ok());
  EXPECT_EQ(resp.message(), "tenant=acme%20corp,criticality=critical,hop=front");
}

TEST_F(ObservabilityTest, HostileBaggageNeverFailsACall) {
  TestServer server("backend");
  ASSERT_NE(server.server, nullptr);
  EchoRequest req;
  req.set_message("ok");
  const std::string body = req.SerializeAsString();
  std::string many;
  for (int i = 0; i < 300; ++i) many += absl::StrCat("k", i, "=v,");
  struct Case {
    std::vector<std::pair<std::string, std::string>> headers;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{{"baggage", "tenant=acme, bad key=1, k=%zz,;;,=x"}}, "tenant=acme"},
      {{{"baggage", "a=1"}, {"baggage", "b=2;p"}}, "a=1,b=2;p"},
      {{{"baggage", std::string(20000, ',')}}, ""},
      {{{"baggage", "big=" + std::string(9000, 'x') + ",small=1"}}, "small=1"},
      {{{"baggage", std::string("k=\x01\x7f\xff", 5)}}, ""},
  };
  for (const Case& c : cases) {
    testing::RawCallResult r = testing::RawUnaryCall(
        server.port, kMethod, body, c.headers, kBound);
    ASSERT_TRUE(r.connected);
    ASSERT_EQ(r.grpc_status, 0) << c.headers[0].second.substr(0, 40);
    EchoResponse resp;
    ASSERT_TRUE(r.message.has_value());
    ASSERT_TRUE(resp.ParseFromString(*r.message));
    EXPECT_EQ(resp.message(), c.expected);
  }
  testing::RawCallResult r =
      testing::RawUnaryCall(server.port, kMethod, body, {{"baggage", many}}, kBound);
  ASSERT_EQ(r.grpc_status, 0);
  EchoResponse resp;
  ASSERT_TRUE(resp.ParseFromString(r.message.value_or("")));
  EXPECT_EQ(ParseBaggage(resp.message()).size(), kMaxBaggageMembers);
}

// Collects call log records (copied: the record's views die with the call).
class CollectingSink final : public CallLogSink {
 public:
  struct Line {
    std::string side, method, trace_id, span_id, parent_span_id, json;
    int code;
    std::optional<absl::Duration> deadline_at_arrival;
  };
  void Write(const CallLogRecord& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back(Line{std::string(r.side), std::string(r.method),
                          std::string(r.trace_id), std::string(r.span_id),
                          std::string(r.parent_span_id), FormatCallLogJson(r),
                          r.code, r.deadline_at_arrival});
    cv_.notify_all();
  }
  std::vector<Line> lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }
  // Waits (bounded) until `n` lines are in; the lines.
  std::vector<Line> WaitLines(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(kBound),
                 [&] { return lines_.size() >= n; });
    return lines_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Line> lines_;
};

TEST_F(ObservabilityTest, CallLogHasBothSidesOfACallWithTheirSpans) {
  TestServer server("backend");
  ASSERT_NE(server.server, nullptr);
  auto stub = ::echo::v1::Echo::NewStub(server.Channel());
  static CollectingSink* const sink = new CollectingSink();  // Outlives calls.
  SetCallLogSink(sink);
  const TraceContext caller{"4bf92f3577b34da6a3ce929d0e0e4736",
                            "00f067aa0ba902b7", true};
  auto [ctx, cancel] =
      WithTimeout(WithTraceContext(Background(), caller), absl::Seconds(8));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  EchoRequest req;
  req.set_message("reject");
  EchoResponse resp;
  EXPECT_EQ(stub->Echo(cc.get(), req, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
  SetCallLogSink(nullptr);
  // The server writes its line before its status goes out, the client when
  // the status arrives: both are in once the call has returned.
  std::vector<CollectingSink::Line> lines = sink->lines();
  ASSERT_EQ(lines.size(), 2u);
  const auto& server_line = lines[0].side == "server" ? lines[0] : lines[1];
  const auto& client_line = lines[0].side == "server" ? lines[1] : lines[0];
  EXPECT_EQ(server_line.side, "server");
  EXPECT_EQ(client_line.side, "client");
  for (const auto* l : {&server_line, &client_line}) {
    EXPECT_EQ(l->method, kMethod);
    EXPECT_EQ(l->code, grpc::INVALID_ARGUMENT);
    EXPECT_EQ(l->trace_id, caller.trace_id);
    ASSERT_TRUE(l->deadline_at_arrival.has_value());
    EXPECT_GT(*l->deadline_at_arrival, absl::Seconds(7));
    // grpc-timeout rounds the server's up by a few ms.
    EXPECT_LE(*l->deadline_at_arrival, absl::Seconds(8) + absl::Milliseconds(100));
  }
  EXPECT_EQ(client_line.span_id, caller.span_id);
  EXPECT_EQ(server_line.parent_span_id, caller.span_id);
  EXPECT_EQ(server_line.span_id.size(), 16u);
  EXPECT_NE(server_line.span_id, caller.span_id);  // A fresh span per hop.
  EXPECT_THAT(server_line.json,
              HasSubstr("\"code\":\"INVALID_ARGUMENT\",\"trace_id\":\"4bf92f35"));
}

// Both sides' lines say why the call's Context ended: the server's, its
// caller's deadline; the client's, the cause its own Context carried.
TEST_F(ObservabilityTest, CallLogNamesTheCause) {
  TestServer server("backend");
  ASSERT_NE(server.server, nullptr);
  auto stub = ::echo::v1::Echo::NewStub(server.Channel());
  static CollectingSink* const sink = new CollectingSink();  // Outlives calls.
  SetCallLogSink(sink);
  auto [ctx, cancel] = WithTimeoutCause(
      Background(), absl::Milliseconds(300),
      MakeCause(CauseKind::kCallerDeadline, "frontend"));
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  EchoRequest req;
  req.set_message("sleep");
  req.set_work_ms(60000);
  EchoResponse resp;
  const grpc::Status status = stub->Echo(cc.get(), req, &resp);
  EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED);
  EXPECT_EQ(status.error_message(),
            "deadline exceeded: caller's deadline (set by frontend)");
  std::vector<CollectingSink::Line> lines = sink->WaitLines(2);
  SetCallLogSink(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& l : lines) {
    EXPECT_THAT(l.json, HasSubstr(",\"cause\":\"CALLER_DEADLINE\"}")) << l.side;
  }
}

}  // namespace
}  // namespace reqctx
