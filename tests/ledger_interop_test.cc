// The budget ledger across languages (issue 21, section 3: interop), live,
// against real echo server processes on loopback:
//   * Python (Debian python3-grpcio): tests/ledger_python_interop.py calls a
//     three-hop chain and decodes grpc-status-details-bin with the documented
//     schema;
//   * Go (Debian grpc-go 1.33): tests/go_interop/main.go as a pass-through
//     middle hop between a reqctx client (or a reqctx frontend) and a reqctx
//     backend, and as a client that decodes the details with grpc-go's status
//     package and genproto's errdetails.
// Each peer is skipped, with one line, when its packages are missing.
// Every process is stopped by its own pid (ServerProcess / ChildProcess),
// even when a check fails.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "ledger/grpc_ledger.h"
#include "ledger/ledger.h"
#include "proto/echo.grpc.pb.h"
#include "tests/child_process.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"
#include "tests/server_process.h"
#include "tests/test_timing.h"
#include "w3c/baggage_context.h"
#include "w3c/trace_context.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using testing::ChildProcess;
using testing::Eventually;
using testing::kWaitBound;
using testing::PlainOrSanitized;
using testing::ServerProcess;

constexpr char kTraceId[] = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr char kTraceparent[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// The backend's minimum budget: calls arriving with less are refused at
// arrival (DEADLINE_EXCEEDED, cause MIN_BUDGET) whatever the load, so a
// ledger from the backend is deterministic.
constexpr absl::Duration kMinBudget =
    PlainOrSanitized(absl::Milliseconds(400), absl::Milliseconds(1500));
// The backend's reply margin: a call whose work outlasts its deadline ends
// this much early, so its ledger gets out before the caller's deadline.
constexpr absl::Duration kMargin =
    PlainOrSanitized(absl::Milliseconds(150), absl::Milliseconds(600));

int64_t Ms(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace, "/", path);
}

// The last line of `output` that starts with `prefix` (without it), or "".
std::string LineAfter(const std::string& output, const std::string& prefix) {
  std::string last;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (absl::StartsWith(line, prefix)) {
      last = std::string(line.substr(prefix.size()));
    }
  }
  return last;
}

// `key=value` from a "hop ..." line of the Go hop.
std::string Field(const std::string& line, const std::string& key) {
  for (absl::string_view word : absl::StrSplit(line, ' ')) {
    if (absl::StartsWith(word, key + "=")) {
      return std::string(word.substr(key.size() + 1));
    }
  }
  return "";
}

// A Go or Python peer process; `skipped` once it printed its skip line.
struct Peer {
  ChildProcess process;
  bool skipped = false;

  // Starts `argv` and waits (bounded) for `ready` in its output; false (with
  // `skipped` set if it printed "skip:") when it did not come.
  bool Start(const std::vector<std::string>& argv, const std::string& ready) {
    const std::string dir = testing::MakeTempDir("ledger_interop");
    if (dir.empty() || !process.Start(argv, dir + "/peer.log")) return false;
    if (process.WaitForOutput(ready, kWaitBound)) return true;
    skipped = process.Output().find("skip:") != std::string::npos;
    return false;
  }
};

class LedgerInteropTest : public ::testing::Test {
 protected:
  // The backend echo server: no policy (kPlain), kMinBudget (calls
  // arriving with less are refused at arrival) or kMargin (work that
  // outlasts the deadline ends kMargin early).
  enum class Backend { kPlain, kMinBudget, kMargin };
  void StartBackend(Backend kind) {
    std::vector<std::string> flags = {"--name=backend"};
    if (kind == Backend::kMinBudget) {
      flags.push_back(absl::StrCat("--min_budget_ms=", Ms(kMinBudget)));
    } else if (kind == Backend::kMargin) {
      flags.push_back(absl::StrCat("--reply_margin_ms=", Ms(kMargin)));
    }
    ASSERT_TRUE(backend_.Start(flags)) << backend_.output();
  }

  // Starts a Go hop in front of the backend; GTEST_SKIP()s the caller when
  // Go's packages are missing (check IsSkipped() after).
  void StartGoHop(Peer& hop, const std::string& details) {
    if (HasFatalFailure()) return;
    if (!hop.Start({Runfile("tests/go_interop_peer"), "--mode=hop",
                    "--next=" + backend_.address(), "--details=" + details},
                   "listening on ")) {
      if (hop.skipped) GTEST_SKIP() << hop.process.Output();
      FAIL() << hop.process.Output();
    }
  }

  static std::string Address(const Peer& hop) {
    return LineAfter(hop.process.Output(), "listening on ");
  }

  // A reqctx echo server named `name` whose next hop is `next`.
  void StartFrontend(ServerProcess& server, const std::string& name,
                     const std::string& next) {
    ASSERT_TRUE(server.Start({"--name=" + name, "--next=" + next}))
        << server.output();
  }

  // Echo to `target` through reqctx's client glue on `ctx` (with
  // `reqctx-ledger: always` if `ask_ledger`); *cc_out is the finished call's
  // ClientContext (its trailers).
  static grpc::Status Call(
      const std::string& target, const Context& ctx, int64_t work_ms,
      EchoResponse* response, std::unique_ptr<grpc::ClientContext>* cc_out,
      bool ask_ledger = false) {
    auto stub = ::echo::v1::Echo::NewStub(
        reqctx::CreateChannel(target, grpc::InsecureChannelCredentials()));
    std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
    if (ask_ledger) cc->AddMetadata("reqctx-ledger", "always");
    EchoRequest req;
    req.set_message("interop");
    req.set_work_ms(work_ms);
    grpc::Status s = stub->Echo(cc.get(), req, response);
    *cc_out = std::move(cc);
    return s;
  }

  // One OK call to `target` (budget kWaitBound, no work): the chain behind
  // it connects its channels now, so a cold connect under a loaded
  // sanitizer run is not charged to a test's short budget.
  static void WarmUp(const std::string& target) {
    auto [ctx, cancel] = WithTimeout(Background(), kWaitBound);
    EchoResponse resp;
    std::unique_ptr<grpc::ClientContext> cc;
    const grpc::Status s = Call(target, ctx, 0, &resp, &cc);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // The backend (Backend::kMinBudget) behind the Go hop in `mode` behind a
  // reqctx frontend, warmed up; then one call to the frontend with half the
  // backend's minimum budget (refused there, at arrival): its status in *s
  // and its decoded ledger in *l (DEADLINE_EXCEEDED and a ledger asserted).
  // Callers return when IsSkipped() or HasFatalFailure().
  void CallRefusedThroughGoHop(const std::string& mode, grpc::Status* s,
                               Ledger* l) {
    Peer hop;
    StartBackend(Backend::kMinBudget);
    StartGoHop(hop, mode);
    if (IsSkipped() || HasFatalFailure()) return;
    ServerProcess frontend;
    StartFrontend(frontend, "frontend", Address(hop));
    if (HasFatalFailure()) return;
    WarmUp(frontend.address());
    if (HasFatalFailure()) return;
    auto [ctx, cancel] = WithTimeout(Background(), kMinBudget / 2);
    EchoResponse resp;
    std::unique_ptr<grpc::ClientContext> cc;
    *s = Call(frontend.address(), ctx, 0, &resp, &cc);
    ASSERT_EQ(s->error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << s->error_message();
    absl::StatusOr<Ledger> decoded = LedgerFromStatus(*s);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    *l = *std::move(decoded);
  }

  // Polls the backend's counters (bounded: Eventually, and a deadline per
  // Stats call) until `done` holds for them; the last counters read.
  ::echo::v1::StatsResponse BackendStatsOnce(
      const std::function<bool(const ::echo::v1::StatsResponse&)>& done) {
    auto stub = ::echo::v1::Echo::NewStub(grpc::CreateChannel(
        backend_.address(), grpc::InsecureChannelCredentials()));
    ::echo::v1::StatsResponse stats;
    Eventually([&] {
      grpc::ClientContext cc;
      cc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      return stub->Stats(&cc, ::echo::v1::StatsRequest(), &stats).ok() &&
             done(stats);
    });
    return stats;
  }

  // The backend's counters once it serves no call.
  ::echo::v1::StatsResponse IdleBackendStats() {
    return BackendStatsOnce([](const ::echo::v1::StatsResponse& s) {
      return s.active_requests() == 0;
    });
  }

  // True once the backend serves `n` calls.
  bool BackendActive(int64_t n) {
    return BackendStatsOnce([n](const ::echo::v1::StatsResponse& s) {
             return s.active_requests() == n;
           }).active_requests() == n;
  }

  ServerProcess backend_;
};

// ---- Python ---------------------------------------------------------------

TEST_F(LedgerInteropTest, PythonClientDecodesTheLedgerOfAThreeHopChain) {
  // frontend -> middle -> backend; Python calls the frontend with
  // `reqctx-ledger: always`, then the middle with a budget that runs out in
  // the backend's work (each hop does work_ms; the middle's leaves the
  // backend about half of work_ms).
  const int64_t work = Ms(PlainOrSanitized(absl::Milliseconds(600),
                                           absl::Milliseconds(2400)));
  const int64_t budget = work * 3 / 2;
  StartBackend(Backend::kMargin);
  ServerProcess middle, frontend;
  StartFrontend(middle, "middle", backend_.address());
  StartFrontend(frontend, "frontend", middle.address());
  if (HasFatalFailure()) return;
  Peer python;
  const bool done = python.Start(
      {"/usr/bin/python3", Runfile("tests/ledger_python_interop.py"),
       Runfile("proto/ledger_descriptor_set.pb"),
       "--frontend=" + frontend.address(), "--middle=" + middle.address(),
       absl::StrCat("--work_ms=", work), absl::StrCat("--budget_ms=", budget),
       absl::StrCat("--margin_ms=", Ms(kMargin)),
       // Under 1 s gRPC C++ sends grpc-timeout exactly (in ms).
       absl::StrCat("--ok_budget_ms=", Ms(PlainOrSanitized(
                                           absl::Milliseconds(900),
                                           absl::Milliseconds(5000)))),
       "--bound_s=60"},
      "python-interop: done");
  if (!done && python.skipped) GTEST_SKIP() << python.process.Output();
  ASSERT_TRUE(done) << python.process.Output();
  std::cout << python.process.Output();
}

// ---- Go: a pass-through middle hop --------------------------------------

TEST_F(LedgerInteropTest, GoHopPassesOkCallsThroughWithDeadlineAndTrace) {
  Peer hop;
  StartBackend(Backend::kPlain);
  StartGoHop(hop, "pass");
  if (IsSkipped() || HasFatalFailure()) return;
  // Connections made first: under TSan on a loaded machine they can take
  // most of the budget below.
  WarmUp(Address(hop));
  // Under 1 s: gRPC C++ sends grpc-timeout exactly (in ms) only below 1 s.
  const absl::Duration budget = absl::Milliseconds(900);
  auto [ctx, cancel] = WithTimeout(
      WithBaggage(WithTraceContext(Background(),
                                   TraceContext{kTraceId, "00f067aa0ba902b7",
                                                true}),
                  "tenant", "acme"),
      budget);
  EchoResponse resp;
  std::unique_ptr<grpc::ClientContext> cc;
  const grpc::Status s =
      Call(Address(hop), ctx, 20, &resp, &cc, /*ask_ledger=*/true);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // The trace id survives the Go hop; the backend is the only echo hop.
  EXPECT_EQ(resp.trace_id(), kTraceId);
  ASSERT_EQ(resp.hops_size(), 1);
  EXPECT_EQ(resp.hops(0).service(), "backend");
  EXPECT_EQ(resp.hops(0).trace_id(), kTraceId);
  // The Go hop saw the deadline, the trace, the baggage and the ledger
  // request; the backend's deadline is no later than the Go hop's.
  // (Its second call: the first was the warm-up.)
  ASSERT_TRUE(Eventually(
      [&] {
        const std::string out = hop.process.Output();
        const size_t first = out.find("hop-status OK");
        return first != std::string::npos &&
               out.find("hop-status OK", first + 1) != std::string::npos;
      },
      kWaitBound))
      << hop.process.Output();
  const std::string line = LineAfter(hop.process.Output(), "hop ");
  int64_t go_budget = -1;
  ASSERT_TRUE(absl::SimpleAtoi(Field(line, "budget_ms"), &go_budget)) << line;
  EXPECT_GT(go_budget, 0) << line;
  EXPECT_LE(go_budget, Ms(budget)) << line;
  EXPECT_GT(resp.hops(0).deadline_remaining_ms(), 0);
  EXPECT_LE(resp.hops(0).deadline_remaining_ms(), go_budget + 1) << line;
  EXPECT_NE(Field(line, "traceparent").find(kTraceId), std::string::npos)
      << line;
  EXPECT_EQ(Field(line, "baggage"), "tenant=acme") << line;
  EXPECT_EQ(Field(line, "ledger"), "always") << line;
  // grpc-go gives a proxy no access to an OK call's status details, so the
  // ledger `reqctx-ledger: always` asks for does not cross it on success.
  EXPECT_FALSE(LedgerFromTrailers(*cc).ok());
}

TEST_F(LedgerInteropTest, BackendsLedgerCrossesTheGoHopIntact) {
  Peer hop;
  StartBackend(Backend::kMargin);
  StartGoHop(hop, "pass");
  if (IsSkipped() || HasFatalFailure()) return;
  WarmUp(Address(hop));
  if (HasFatalFailure()) return;
  // The backend's work outlasts the budget: it ends at its reply margin.
  const absl::Duration budget = 3 * kMargin;
  auto [ctx, cancel] = WithTimeout(Background(), budget);
  EchoResponse resp;
  std::unique_ptr<grpc::ClientContext> cc;
  const grpc::Status s =
      Call(Address(hop), ctx, Ms(kWaitBound), &resp, &cc);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  absl::StatusOr<Ledger> l = LedgerFromStatus(s);
  ASSERT_TRUE(l.ok()) << l.status();
  SCOPED_TRACE(LedgerLine(*l));
  EXPECT_EQ(l->root.host, "backend");
  EXPECT_EQ(l->root.code, 4);
  ASSERT_TRUE(l->root.budget.has_value());
  // Shrunk on the way, never extended (how much the Go hop and the links
  // took depends on the machine's load: not asserted).
  EXPECT_LE(*l->root.budget, budget);
  EXPECT_GT(*l->root.budget, absl::ZeroDuration());
  ASSERT_TRUE(l->root.reply_margin.has_value());
  EXPECT_EQ(*l->root.reply_margin, kMargin);
  // The same bytes the backend sent: the Go hop's copy is a google.rpc.Status
  // with reqctx's three details in order.
  absl::StatusOr<Ledger> again = LedgerFromTrailers(*cc);
  EXPECT_TRUE(again.ok()) << again.status();
  EXPECT_NE(LedgerLine(*l).find("backend"), std::string::npos);
}

TEST_F(LedgerInteropTest, ReqctxFrontendSeesTheBackendThroughTheGoHop) {
  grpc::Status s;
  Ledger ledger;
  CallRefusedThroughGoHop("pass", &s, &ledger);
  if (IsSkipped() || HasFatalFailure()) return;
  const Ledger* l = &ledger;
  const std::string line = LedgerLine(*l);
  SCOPED_TRACE(line);
  EXPECT_EQ(l->root.host, "frontend");
  ASSERT_EQ(l->root.outbound.size(), 1u);
  const LedgerOutbound& out = l->root.outbound[0];
  EXPECT_TRUE(out.sent);
  EXPECT_EQ(out.code, 4);
  // The Go hop is transparent: the frontend's outbound call holds the
  // backend's ledger, and the deadline only shrank on the way.
  ASSERT_EQ(out.ledger.size(), 1u);
  const LedgerHop& backend = out.ledger.front();
  EXPECT_EQ(backend.host, "backend");
  EXPECT_EQ(backend.cause, CauseKind::kMinBudget);
  ASSERT_TRUE(out.budget.has_value() && backend.budget.has_value() &&
              l->root.budget.has_value());
  EXPECT_LE(*out.budget, *l->root.budget);
  // gRPC C++ dates an incoming grpc-timeout from its cached clock, which
  // may lag the real time by up to about a millisecond: the budget a hop
  // reads at arrival can exceed what its caller sent by that much (seen:
  // 181.6 vs 180.9 ms), never by more.
  EXPECT_LE(*backend.budget, *out.budget + absl::Milliseconds(1));
  EXPECT_NE(line.find("backend"), std::string::npos);
}

TEST_F(LedgerInteropTest, GoHopThatDropsDetailsLeavesTheFrontendsOwnLedger) {
  grpc::Status s;
  Ledger ledger;
  CallRefusedThroughGoHop("drop", &s, &ledger);
  if (IsSkipped() || HasFatalFailure()) return;
  const Ledger* l = &ledger;
  const std::string line = LedgerLine(*l);
  SCOPED_TRACE(line);
  EXPECT_EQ(l->root.host, "frontend");
  ASSERT_EQ(l->root.outbound.size(), 1u);
  EXPECT_EQ(l->root.outbound[0].code, 4);
  EXPECT_TRUE(l->root.outbound[0].ledger.empty());
  // A DEADLINE_EXCEEDED outbound call with no ledger reads as time on the
  // link ("no ledger came back": the link, or a callee keeping none, as the
  // Go hop that dropped the details here); never as this hop's own doing.
  EXPECT_NE(line.find("no ledger came back"), std::string::npos);
  EXPECT_EQ(line.find("ran out here"), std::string::npos);
}

TEST_F(LedgerInteropTest, GoHopsOwnDetailsAreKeptNextToTheLedger) {
  Peer hop;
  StartBackend(Backend::kMinBudget);
  StartGoHop(hop, "add");
  if (IsSkipped() || HasFatalFailure()) return;
  auto [ctx, cancel] = WithTimeout(Background(), kMinBudget / 2);
  EchoResponse resp;
  std::unique_ptr<grpc::ClientContext> cc;
  const grpc::Status s = Call(Address(hop), ctx, 0, &resp, &cc);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  // Both: the backend's ledger and the Go hop's own ErrorInfo.
  absl::StatusOr<Ledger> l = LedgerFromStatus(s);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->root.host, "backend");
  EXPECT_NE(s.error_details().find("go-hop.example"), std::string::npos);
  EXPECT_NE(s.error_details().find("PROXIED"), std::string::npos);
}

TEST_F(LedgerInteropTest, FrontendFindsTheLedgerPastTheGoHopsOwnDetails) {
  // frontend -> Go hop (appends its ErrorInfo) -> backend: the frontend's
  // outbound record still decodes the backend's ledger (the first
  // BudgetLedger detail), whatever else the status carries.
  grpc::Status s;
  Ledger ledger;
  CallRefusedThroughGoHop("add", &s, &ledger);
  if (IsSkipped() || HasFatalFailure()) return;
  const Ledger* l = &ledger;
  SCOPED_TRACE(LedgerLine(*l));
  ASSERT_EQ(l->root.outbound.size(), 1u);
  ASSERT_EQ(l->root.outbound[0].ledger.size(), 1u);
  EXPECT_EQ(l->root.outbound[0].ledger.front().host, "backend");
  EXPECT_EQ(l->root.outbound[0].ledger.front().cause, CauseKind::kMinBudget);
}

TEST_F(LedgerInteropTest, CancelCrossesTheGoHop) {
  Peer hop;
  StartBackend(Backend::kMinBudget);
  StartGoHop(hop, "pass");
  if (IsSkipped() || HasFatalFailure()) return;
  auto stub = ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel(Address(hop), grpc::InsecureChannelCredentials()));
  grpc::ClientContext cc;  // No deadline: only the cancel can end it.
  EchoRequest req;
  req.set_work_ms(Ms(kWaitBound));
  EchoResponse resp;
  grpc::Status s;
  std::thread call([&] { s = stub->Echo(&cc, req, &resp); });
  const bool reached = BackendActive(1);
  cc.TryCancel();
  call.join();
  ASSERT_TRUE(reached);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);
  const ::echo::v1::StatsResponse stats = IdleBackendStats();
  EXPECT_EQ(stats.active_requests(), 0) << stats.DebugString();
  EXPECT_EQ(stats.canceled_total(), 1) << stats.DebugString();
}

// ---- Go: a client decoding with grpc-go's status + errdetails -----------

// Runs the Go client with `args` to completion; "" when skipped.
std::string RunGoClient(const std::vector<std::string>& args, bool* skipped) {
  Peer client;
  std::vector<std::string> argv = {Runfile("tests/go_interop_peer"),
                                   "--mode=client"};
  argv.insert(argv.end(), args.begin(), args.end());
  *skipped = false;
  if (!client.Start(argv, "client done")) {
    *skipped = client.skipped;
    if (!*skipped) ADD_FAILURE() << client.process.Output();
    return "";
  }
  return client.process.Output();
}

TEST_F(LedgerInteropTest, GoClientDecodesTheDetailsWithTheStandardPackages) {
  StartBackend(Backend::kMinBudget);
  ServerProcess frontend;
  StartFrontend(frontend, "frontend", backend_.address());
  if (HasFatalFailure()) return;
  bool skipped = false;
  const std::string out = RunGoClient(
      {"--target=" + frontend.address(),
       absl::StrCat("--timeout_ms=", Ms(kMinBudget / 2))},
      &skipped);
  if (skipped) GTEST_SKIP() << "Go's gRPC packages are missing";
  ASSERT_FALSE(out.empty());
  std::cout << out;
  EXPECT_NE(out.find("status DeadlineExceeded"), std::string::npos);
  // The three details in order; the ledger stays an opaque Any in Go.
  EXPECT_NE(out.find("detail type.googleapis.com/reqctx.v1.BudgetLedger\n"
                     "ledger-any bytes="),
            std::string::npos);
  EXPECT_NE(out.find("detail type.googleapis.com/google.rpc.ErrorInfo\n"
                     "detail type.googleapis.com/google.rpc.DebugInfo\n"),
            std::string::npos);
  // Decoded by errdetails through status.Details().
  EXPECT_NE(out.find("errorinfo domain=reqctx.dev reason="), std::string::npos);
  EXPECT_NE(out.find(" hop=frontend\n"), std::string::npos);
  const std::string debug = LineAfter(out, "debuginfo ");
  EXPECT_EQ(Field(debug, "entries"), "reqctx.dev/ledger");
  EXPECT_NE(debug.find("frontend"), std::string::npos);
  EXPECT_NE(debug.find("backend"), std::string::npos);
}

TEST_F(LedgerInteropTest, GoClientCancelMidCallCrossesTheGoHop) {
  Peer hop;
  StartBackend(Backend::kMinBudget);
  StartGoHop(hop, "pass");
  if (IsSkipped() || HasFatalFailure()) return;
  // The Go client cancels once the backend works on its call.
  Peer client;
  ASSERT_TRUE(client.process.Start(
      {Runfile("tests/go_interop_peer"), "--mode=client",
       "--target=" + Address(hop), absl::StrCat("--work_ms=", Ms(kWaitBound)),
       "--cancel_on_signal"},
      testing::MakeTempDir("ledger_interop") + "/client.log"));
  ASSERT_TRUE(BackendActive(1));
  ASSERT_EQ(kill(client.process.pid(), SIGUSR1), 0);
  ASSERT_TRUE(client.process.WaitForOutput("client done", kWaitBound))
      << client.process.Output();
  EXPECT_NE(client.process.Output().find("status Canceled"), std::string::npos)
      << client.process.Output();
  const ::echo::v1::StatsResponse stats = IdleBackendStats();
  EXPECT_EQ(stats.active_requests(), 0) << stats.DebugString();
  EXPECT_EQ(stats.canceled_total(), 1) << stats.DebugString();
}

}  // namespace
}  // namespace reqctx
