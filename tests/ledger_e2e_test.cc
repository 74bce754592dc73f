// The budget ledger end to end (issue 21, sections 1 and 3): echo servers in
// one process, chained frontend -> middle -> backend (and a 20-hop chain),
// return where the deadline went in grpc-status-details-bin; the client
// decodes it with LedgerFromStatus / LedgerFromTrailers. Also: hostile
// peers' details are bounded and ignored, an application's own details are
// never overwritten, and the per-hop share reaches the metric.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "context/sleep.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/observability.h"
#include "ledger/grpc_ledger.h"
#include "ledger/ledger.h"
#include "metrics/metrics.h"
#include "proto/echo.grpc.pb.h"
#include "reqctx/v1/ledger.pb.h"
#include "services/echo/echo_server.h"
#include "tests/echo_chain.h"
#include "tests/test_timing.h"
#include "tests/work_gate.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using testing::kWaitBound;
using testing::PlainOrSanitized;

// The budget the client gives the chain; long enough for three hops under
// TSan on two loaded cores.
constexpr absl::Duration kBudget =
    PlainOrSanitized(absl::Milliseconds(1000), absl::Milliseconds(4000));
// The reply margin of the hop where the deadline runs out: its handler's
// Context ends this much before its deadline, so its status (and ledger)
// gets out before gRPC ends the call.
constexpr absl::Duration kMargin =
    PlainOrSanitized(absl::Milliseconds(100), absl::Milliseconds(600));
// How far the shares may fall short of the budget: each hop gives the next
// up to 3% + one grpc-timeout unit + 2 ms less (client_interceptor.h), the
// hop that runs out stops kMargin early, and each transit and reply takes a
// little (stated tolerance: 3% x 2 hops + margin + 5% slack).
const absl::Duration kTolerance =
    kBudget * 0.06 + kMargin + kBudget * 0.05 + absl::Milliseconds(10);

// A chain of echo servers named `names`, each calling the next; `edit`
// adjusts each hop's options by index.
class Chain {
 public:
  Chain(const std::vector<std::string>& names,
        const std::function<void(size_t, echo::EchoServerOptions&)>& edit) {
    std::string next;
    servers_.resize(names.size());
    for (size_t i = names.size(); i-- > 0;) {
      echo::EchoServerOptions o;
      o.name = names[i];
      o.next = next;
      o.workers = 1;
      o.health_check = false;
      if (edit) edit(i, o);
      auto s = echo::EchoServer::Start(o);
      if (!s.ok()) {
        status_ = s.status();
        return;
      }
      servers_[i] = std::move(*s);
      next = servers_[i]->address();
    }
  }
  ~Chain() {
    for (auto& s : servers_) {
      if (s) s->Shutdown();
    }
  }
  const absl::Status& status() const { return status_; }
  echo::EchoServer& at(size_t i) { return *servers_[i]; }

 private:
  absl::Status status_;
  std::vector<std::unique_ptr<echo::EchoServer>> servers_;
};

// Calls the first hop with kBudget; returns the status.
grpc::Status CallChain(echo::EchoServer& first, absl::Duration budget,
                       grpc::ClientContext* cc = nullptr) {
  auto stub = testing::NewStub(first);
  grpc::ClientContext own;
  if (cc == nullptr) cc = &own;
  cc->set_deadline(std::chrono::system_clock::now() +
                   absl::ToChronoNanoseconds(budget));
  EchoRequest req;
  req.set_message("ledger");
  EchoResponse resp;
  return stub->Echo(cc, req, &resp);
}

// The hop where the call ended: follows the failed outbound call with a
// nested ledger down from `h`.
const LedgerHop& EndHop(const LedgerHop& h) {
  for (const LedgerOutbound& o : h.outbound) {
    if (o.code != 0 && !o.ledger.empty()) return EndHop(o.ledger.front());
  }
  return h;
}

// Own shares along the failure path, plus each transit (an outbound call's
// time not spent inside the callee), from the root down.
absl::Duration PathSum(const LedgerHop& h) {
  absl::Duration sum = h.queued + h.work;
  for (const LedgerOutbound& o : h.outbound) {
    if (o.ledger.empty()) {
      sum += o.took;
      continue;
    }
    sum += *LedgerNetworkTime(o);
    sum += PathSum(o.ledger.front());
  }
  return sum;
}

// The ledger a call that ran out of deadline returned, and its line.
struct DeadlineLedger {
  Ledger ledger;
  std::string line;
};

// Calls `first` with kBudget, then opens `gate` (so the held hops end): the
// call's ledger, or an error if the call did not end DEADLINE_EXCEEDED with
// one.
absl::StatusOr<DeadlineLedger> CallUntilDeadline(echo::EchoServer& first,
                                                 testing::WorkGate& gate) {
  const grpc::Status s = CallChain(first, kBudget);
  gate.Open();
  if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::InternalError(absl::StrCat("status ", s.error_code(), ": ",
                                            s.error_message()));
  }
  absl::StatusOr<Ledger> l = LedgerFromStatus(s);
  if (!l.ok()) return l.status();
  std::string line = LedgerLine(*l);
  return DeadlineLedger{*std::move(l), std::move(line)};
}

TEST(LedgerE2eTest, DeadlineRunsOutInTheMiddleHopsWork) {
  testing::WorkGate gate(kWaitBound);
  Chain chain({"frontend", "middle", "backend"},
              [&](size_t i, echo::EchoServerOptions& o) {
                if (i != 1) return;
                o.server_policy.defaults.reply_margin = kMargin;
                o.before_work = [&](const Context& ctx) { gate.Wait(ctx); };
              });
  ASSERT_TRUE(chain.status().ok()) << chain.status();
  absl::StatusOr<DeadlineLedger> d = CallUntilDeadline(chain.at(0), gate);
  ASSERT_TRUE(d.ok()) << d.status();
  const Ledger& l = d->ledger;
  const std::string& line = d->line;
  SCOPED_TRACE(line);
  EXPECT_EQ(l.root.host, "frontend");
  const LedgerHop& end = EndHop(l.root);
  EXPECT_EQ(end.host, "middle");
  EXPECT_EQ(end.code, 4);
  ASSERT_TRUE(end.reply_margin.has_value());
  EXPECT_EQ(*end.reply_margin, kMargin);
  // The backend was never called: the middle hop's work ate the budget.
  EXPECT_TRUE(end.outbound.empty());
  EXPECT_NE(line.find("middle ("), std::string::npos);
  EXPECT_NE(line.find("deadline ran out here"), std::string::npos);
  EXPECT_EQ(line.find("backend"), std::string::npos);
  // The middle hop's own work is most of the budget.
  EXPECT_GT(end.work, kBudget - kTolerance);
  // The shares add up to the budget, within the tolerance.
  ASSERT_TRUE(l.root.budget.has_value());
  EXPECT_LE(*l.root.budget, kBudget);
  const absl::Duration sum = PathSum(l.root);
  EXPECT_LE(sum, kBudget + absl::Milliseconds(5));
  EXPECT_GE(sum, kBudget - kTolerance);
}

TEST(LedgerE2eTest, DeadlineRunsOutInTheBackendsShedderQueue) {
  testing::WorkGate gate(kWaitBound);
  std::atomic<bool> block_first{true};
  Chain chain({"frontend", "middle", "backend"},
              [&](size_t i, echo::EchoServerOptions& o) {
                if (i != 2) return;
                o.workers = 2;
                o.server_policy.defaults.max_concurrency = 1;
                o.server_policy.defaults.max_queue = 4;
                o.server_policy.defaults.reply_margin = kMargin;
                o.before_work = [&](const Context& ctx) {
                  if (block_first.exchange(false)) gate.Wait(ctx);
                };
              });
  ASSERT_TRUE(chain.status().ok()) << chain.status();
  // A call straight to the backend holds its one slot.
  std::thread holder([&] { (void)CallChain(chain.at(2), 2 * kWaitBound); });
  ASSERT_TRUE(gate.WaitForWaiter());
  absl::StatusOr<DeadlineLedger> d = CallUntilDeadline(chain.at(0), gate);
  holder.join();
  ASSERT_TRUE(d.ok()) << d.status();
  const Ledger& l = d->ledger;
  const std::string& line = d->line;
  SCOPED_TRACE(line);
  const LedgerHop& end = EndHop(l.root);
  EXPECT_EQ(end.host, "backend");
  EXPECT_EQ(end.code, 4);
  EXPECT_GT(end.queued, kBudget - 2 * kTolerance);
  EXPECT_LT(end.work, kTolerance);
  EXPECT_NE(line.find("backend ("), std::string::npos);
  EXPECT_NE(line.find("queued"), std::string::npos);
  EXPECT_NE(line.find("deadline ran out here"), std::string::npos);
  const absl::Duration sum = PathSum(l.root);
  EXPECT_LE(sum, kBudget + absl::Milliseconds(5));
  EXPECT_GE(sum, kBudget - kTolerance);
}

// The request header asks every hop for its ledger on an OK call too; a
// 20-hop chain's stays under the cap, deepest hops summarised.
TEST(LedgerE2eTest, TwentyHopChainStaysUnderTheCap) {
  constexpr int kHops = 20;
  std::vector<std::string> names;
  for (int i = 0; i < kHops; ++i) {
    // Long labels (200 bytes), so 20 hops exceed the cap and the deepest
    // are summarised.
    names.push_back(absl::StrCat("hop-", i, "-", std::string(194, 'x')));
  }
  Chain chain(names, {});
  ASSERT_TRUE(chain.status().ok()) << chain.status();
  grpc::ClientContext cc;
  cc.AddMetadata("reqctx-ledger", "always");
  const grpc::Status s = CallChain(chain.at(0), kWaitBound, &cc);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const auto& trailers = cc.GetServerTrailingMetadata();
  auto it = trailers.find("grpc-status-details-bin");
  ASSERT_NE(it, trailers.end());
  EXPECT_LE(it->second.size(), kLedgerDetailsCap);
  absl::StatusOr<Ledger> l = LedgerFromTrailers(cc);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->root.host, names[0]);
  // Every hop is there or counted as summarised where it was lost (the
  // top-level count repeats the ones this encode summarised).
  int present = 0;
  uint32_t summarised = 0;
  const LedgerHop* h = &l->root;
  while (h != nullptr) {
    ++present;
    const LedgerHop* next = nullptr;
    for (const LedgerOutbound& o : h->outbound) {
      summarised += o.summarised_hops;
      if (!o.ledger.empty()) next = &o.ledger.front();
    }
    h = next;
  }
  EXPECT_EQ(present + static_cast<int>(summarised), kHops);
  EXPECT_GT(summarised, 0u);
}

// A peer that is not reqctx returns hostile grpc-status-details-bin: the
// hop calling it ignores them (no child ledger) and still returns its own.
class HostileEcho final : public ::echo::v1::Echo::Service {
 public:
  explicit HostileEcho(std::string details) : details_(std::move(details)) {}
  grpc::Status Echo(grpc::ServerContext*, const EchoRequest*,
                    EchoResponse*) override {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "hostile", details_);
  }

 private:
  const std::string details_;
};

// A serialised google.rpc.Status carrying `ledger` as reqctx's detail,
// built by hand (not by the encoder, which would bound it).
std::string HostileDetails(const reqctx::v1::BudgetLedger& ledger) {
  google::rpc::Status st;
  st.set_code(14);
  google::protobuf::Any* any = st.add_details();
  any->set_type_url(std::string(kLedgerTypeUrl));
  any->set_value(ledger.SerializeAsString());
  return st.SerializeAsString();
}

// A BudgetLedger nesting `depth` hops (over kLedgerMaxDepth).
std::string DeepLedger(int depth) {
  reqctx::v1::BudgetLedger l;
  l.set_version(1);
  reqctx::v1::Hop* h = l.mutable_root();
  for (int i = 0; i < depth; ++i) {
    h->set_host("deep");
    h->set_code(14);
    reqctx::v1::Outbound* o = h->add_outbound();
    o->set_code(14);
    h = o->mutable_ledger();
  }
  return HostileDetails(l);
}

TEST(LedgerE2eTest, HostilePeerDetailsAreBoundedAndIgnored) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"garbage", std::string(6000, '\xff')},
      {"truncated", EncodeLedgerStatus(14, "x", Ledger{}).substr(0, 9)},
      {"huge string", [] {
         reqctx::v1::BudgetLedger l;
         l.set_version(1);
         l.mutable_root()->set_host(std::string(5000, 'h'));
         return HostileDetails(l);
       }()},
      {"bad bytes", [] {
         reqctx::v1::BudgetLedger l;
         l.set_version(1);
         l.mutable_root()->set_host("a\r\nb");
         return HostileDetails(l);
       }()},
      {"negative time", [] {
         reqctx::v1::BudgetLedger l;
         l.set_version(1);
         l.mutable_root()->set_work_us(-5);
         return HostileDetails(l);
       }()},
      {"deep", DeepLedger(kLedgerMaxDepth + 8)},
  };
  for (const auto& [name, details] : cases) {
    SCOPED_TRACE(name);
    HostileEcho hostile(details);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&hostile);
    std::unique_ptr<grpc::Server> peer = b.BuildAndStart();
    ASSERT_NE(peer, nullptr);
    echo::EchoServerOptions o;
    o.name = "caller";
    o.next = absl::StrCat("127.0.0.1:", port);
    o.workers = 1;
    o.health_check = false;
    auto hop = echo::EchoServer::Start(o);
    ASSERT_TRUE(hop.ok()) << hop.status();
    const grpc::Status s = CallChain(**hop, kWaitBound);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_LE(s.error_details().size(), kLedgerDetailsCap);
    absl::StatusOr<Ledger> l = LedgerFromStatus(s);
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_EQ(l->root.host, "caller");
    ASSERT_EQ(l->root.outbound.size(), 1u);
    EXPECT_EQ(l->root.outbound[0].code, 14);
    // Rejected whole: no child ledger.
    EXPECT_TRUE(l->root.outbound[0].ledger.empty());
    (*hop)->Shutdown();
    peer->Shutdown();
  }
}

// A reqctx server whose handler returns a fixed status.
class FixedStatusEcho final : public ::echo::v1::Echo::Service {
 public:
  explicit FixedStatusEcho(grpc::Status status) : status_(std::move(status)) {}
  grpc::Status Echo(grpc::ServerContext*, const EchoRequest*,
                    EchoResponse*) override {
    return status_;
  }

 private:
  const grpc::Status status_;
};

// `service` served with reqctx's interceptors and `rules` on 127.0.0.1.
struct RulesServer {
  RulesServer(grpc::Service* service, ServerCallRules rules) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(service);
    InstallServerInterceptorsWithRules(b, std::move(rules));
    server = b.BuildAndStart();
    stub = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  ~RulesServer() {
    if (server) server->Shutdown();
  }
  grpc::Status Call(grpc::ClientContext* cc) {
    EchoRequest req;
    EchoResponse resp;
    return stub->Echo(cc, req, &resp);
  }
  int port = 0;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<::echo::v1::Echo::Stub> stub;
};

TEST(LedgerE2eTest, AnApplicationsOwnDetailsAreNotOverwritten) {
  google::rpc::ErrorInfo info;
  info.set_reason("APP_REASON");
  info.set_domain("example.com");
  google::rpc::Status theirs;
  theirs.set_code(14);
  theirs.set_message("mine");
  theirs.add_details()->PackFrom(info);
  const std::string rich = theirs.SerializeAsString();
  const std::string opaque = "not a google.rpc.Status \xff\xfe";
  for (const std::string& details : {rich, opaque}) {
    FixedStatusEcho service(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "mine", details));
    ServerCallRules rules;
    rules.ledger_host = "app";
    RulesServer server(&service, std::move(rules));
    ASSERT_NE(server.server, nullptr);
    grpc::ClientContext cc;
    const grpc::Status s = server.Call(&cc);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    if (details == opaque) {
      EXPECT_EQ(s.error_details(), opaque);  // Sent unchanged, no ledger.
    } else {
      google::rpc::Status got;
      ASSERT_TRUE(got.ParseFromString(s.error_details()));
      EXPECT_EQ(got.message(), "mine");
      ASSERT_GE(got.details_size(), 1);
      google::rpc::ErrorInfo first;
      ASSERT_TRUE(got.details(0).UnpackTo(&first));
      EXPECT_EQ(first.reason(), "APP_REASON");  // Kept, first.
      absl::StatusOr<Ledger> l = LedgerFromStatus(s);
      ASSERT_TRUE(l.ok()) << l.status();  // Ours appended.
      EXPECT_EQ(l->root.host, "app");
    }
  }
}

// kNever: no ledger, even when the request header asks (an edge).
TEST(LedgerE2eTest, NeverReturnsNoLedgerEvenWhenAsked) {
  FixedStatusEcho service(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
  ServerCallRules rules;
  rules.ledger_return = LedgerReturn::kNever;
  RulesServer server(&service, std::move(rules));
  ASSERT_NE(server.server, nullptr);
  for (bool ask : {false, true}) {
    grpc::ClientContext cc;
    if (ask) cc.AddMetadata("reqctx-ledger", "always");
    const grpc::Status s = server.Call(&cc);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_TRUE(s.error_details().empty());
  }
}

// kAlways: OK calls return it too, in the trailer.
TEST(LedgerE2eTest, AlwaysReturnsTheLedgerOnOk) {
  FixedStatusEcho service(grpc::Status::OK);
  ServerCallRules rules;
  rules.ledger_host = "always";
  rules.ledger_return = LedgerReturn::kAlways;
  RulesServer server(&service, std::move(rules));
  ASSERT_NE(server.server, nullptr);
  grpc::ClientContext cc;
  ASSERT_TRUE(server.Call(&cc).ok());
  absl::StatusOr<Ledger> l = LedgerFromTrailers(cc);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->root.host, "always");
  EXPECT_EQ(l->root.code, 0);
}

// A header value other than "always" asks for nothing.
TEST(LedgerE2eTest, OtherHeaderValuesAskForNothing) {
  FixedStatusEcho service(grpc::Status::OK);
  RulesServer server(&service, ServerCallRules());
  ASSERT_NE(server.server, nullptr);
  for (const char* v : {"Always", "1", "always ", ""}) {
    grpc::ClientContext cc;
    cc.AddMetadata("reqctx-ledger", v);
    ASSERT_TRUE(server.Call(&cc).ok());
    EXPECT_EQ(cc.GetServerTrailingMetadata().count("grpc-status-details-bin"),
              0u)
        << v;
  }
}

// On success the ledger is recorded but not sent (no header, no option).
TEST(LedgerE2eTest, SuccessSendsNoLedger) {
  Chain chain({"frontend", "backend"}, {});
  ASSERT_TRUE(chain.status().ok()) << chain.status();
  grpc::ClientContext cc;
  const grpc::Status s = CallChain(chain.at(0), kWaitBound, &cc);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(cc.GetServerTrailingMetadata().count("grpc-status-details-bin"),
            0u);
}

// Keeps the call log's JSON lines.
class CapturingSink final : public CallLogSink {
 public:
  void Write(const CallLogRecord& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (r.side == "server") ++server_;
    lines_.push_back(FormatCallLogJson(r));
    cv_.notify_all();
  }
  // Waits (bounded) for `n` server lines; all lines so far.
  std::vector<std::string> WaitServerLines(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                 [&] { return server_ >= n; });
    return lines_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int server_ = 0;
  std::vector<std::string> lines_;
};

// The hop's own share reaches reqctx_budget_consumed_seconds and the
// server's call log line.
TEST(LedgerE2eTest, OwnShareIsAMetric) {
  EnableRpcMetrics();
  static CapturingSink* const sink = new CapturingSink();  // Outlives calls.
  SetCallLogSink(sink);
  Chain chain({"frontend", "backend"}, {});
  ASSERT_TRUE(chain.status().ok()) << chain.status();
  ASSERT_TRUE(CallChain(chain.at(0), kWaitBound).ok());
  const std::vector<std::string> lines = sink->WaitServerLines(2);
  SetCallLogSink(nullptr);
  int server_lines = 0;
  for (const std::string& line : lines) {
    if (line.find("\"side\":\"server\"") == std::string::npos) continue;
    ++server_lines;
    EXPECT_NE(line.find("\"budget_consumed_s\":"), std::string::npos) << line;
  }
  EXPECT_EQ(server_lines, 2);
  const std::string text = metrics::Registry::Default().Expose();
  EXPECT_NE(text.find("reqctx_budget_consumed_seconds_count{method=\"/echo.v1.Echo/Echo\"} 2"),
            std::string::npos)
      << text.substr(0, 2000);
  DisableRpcMetrics();
}

}  // namespace
}  // namespace reqctx
