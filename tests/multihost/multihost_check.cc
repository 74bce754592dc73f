// multihost_check: the client side of tests/multihost/run.sh (issue 12,
// section 5). Runs in the frontend's network namespace and checks, over the
// real links (veth + latency_relay) of frontend -> middle -> backend:
//   latency   the links really delay (a call takes >= 4 x latency: two
//             relays each way), each hop's deadline shrinks by its reply
//             margin (front - back >= 2 x margin), and the backend's
//             deadline leaves time for its answer to travel back: its
//             remaining time at arrival plus the call's round trip fits in
//             the client's deadline. gRPC sends deadlines as a relative
//             `grpc-timeout`, so transit time is not subtracted by the
//             protocol; the reply margin (>= the round trip to the next hop)
//             is what accounts for it;
//   margin    a call that cannot finish downstream is answered by the
//             frontend before the client's own deadline, by about the
//             margin: every hop's Context ends `margin` early, and a margin
//             covering the round trip gets each answer back in time;
//   transit   a deadline that runs out on the frontend -> middle link (what
//             the frontend has left for the call is less than the relay's
//             one-way latency): the client's budget ledger blames the
//             network between the frontend and the middle's address, not
//             the frontend's work, and the frontend's shares (queued, work,
//             the link's time, its reply margin) add up to the client's
//             deadline within 5 ms + 10%;
//   trace     one trace id on every hop;
//   cancel    a client cancel reaches the backend's workers (its Stats show
//             the call canceled and no worker left);
//   budget    a minimum-budget rejection happens at the backend (its
//             min_budget_rejected count rises, the others' do not).
// Prints one line per check, "multihost: ok: NAME ..." or
// "multihost: FAILED: NAME ..."; exits 1 if any failed. Every wait is
// bounded.
#include <cstdio>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "interceptors/interceptors.h"
#include "interceptors/internal/grpc_timeout.h"
#include "ledger/grpc_ledger.h"
#include "ledger/ledger.h"
#include "proto/echo.grpc.pb.h"

ABSL_FLAG(std::string, frontend, "", "frontend address");
ABSL_FLAG(std::string, middle_stats, "", "address reaching the middle server");
ABSL_FLAG(std::string, backend_stats, "",
          "address reaching the backend server");
ABSL_FLAG(int, latency_ms, 50, "one-way latency each relay adds");
ABSL_FLAG(int, margin_ms, 50, "reply margin of each server");
ABSL_FLAG(int, backend_min_budget_ms, 0,
          "minimum budget of the backend (0: skip the budget check)");

namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using ::echo::v1::StatsRequest;
using ::echo::v1::StatsResponse;

int failures = 0;

void Report(bool ok, const std::string& name, const std::string& detail) {
  std::printf("multihost: %s: %s %s\n", ok ? "ok" : "FAILED", name.c_str(),
              detail.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

std::unique_ptr<::echo::v1::Echo::Stub> Stub(const std::string& address) {
  return ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

std::optional<StatsResponse> Stats(::echo::v1::Echo::Stub& stub) {
  grpc::ClientContext cc;
  cc.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  StatsResponse r;
  if (!stub.Stats(&cc, StatsRequest(), &r).ok()) return std::nullopt;
  return r;
}

int64_t Count(const StatsResponse& s, const std::string& name) {
  auto it = s.policy_counts().find(name);
  return it == s.policy_counts().end() ? 0 : it->second;
}

// Polls `stub`'s Stats until `done` holds or 10 s pass.
bool WaitStats(::echo::v1::Echo::Stub& stub,
               const std::function<bool(const StatsResponse&)>& done) {
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < end) {
    std::optional<StatsResponse> s = Stats(stub);
    if (s.has_value() && done(*s)) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

struct CallResult {
  grpc::Status status;
  EchoResponse response;
  absl::Duration elapsed;
};

CallResult Call(::echo::v1::Echo::Stub& stub, const reqctx::Context& ctx,
                int64_t work_ms) {
  EchoRequest request;
  request.set_message("multihost");
  request.set_work_ms(work_ms);
  CallResult r;
  std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
  const absl::Time start = absl::Now();
  r.status = stub.Echo(cc.get(), request, &r.response);
  r.elapsed = absl::Now() - start;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t latency = absl::GetFlag(FLAGS_latency_ms);
  const int64_t margin = absl::GetFlag(FLAGS_margin_ms);
  auto front = Stub(absl::GetFlag(FLAGS_frontend));
  auto middle = Stub(absl::GetFlag(FLAGS_middle_stats));
  auto back = Stub(absl::GetFlag(FLAGS_backend_stats));

  // latency + trace: a 5 s call doing no work (after one call that sets up
  // the connections, whose handshakes would add to the measured time).
  {
    auto [warm, warm_cancel] =
        reqctx::WithTimeout(reqctx::Background(), absl::Seconds(5));
    Call(*front, warm, 0);
    const absl::Duration deadline = absl::Seconds(5);
    auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), deadline);
    CallResult r = Call(*front, ctx, 0);
    bool ok = r.status.ok() && r.response.hops_size() == 3;
    std::string detail = absl::StrFormat("status %d, %d hops",
                                         r.status.error_code(),
                                         r.response.hops_size());
    if (ok) {
      const int64_t f = r.response.hops(0).deadline_remaining_ms();
      const int64_t m = r.response.hops(1).deadline_remaining_ms();
      const int64_t b = r.response.hops(2).deadline_remaining_ms();
      const int64_t elapsed = absl::ToInt64Milliseconds(r.elapsed);
      const int64_t d = absl::ToInt64Milliseconds(deadline);
      // Each hop's Context ends `margin` early, and each outbound call
      // keeps back what grpc-timeout's encoding could add (97% of the time
      // left, less 2 ms: client_interceptor.h); the hops and the links take
      // a little time: allow that around the expected drop.
      const absl::Duration fd = absl::Milliseconds(f);
      const absl::Duration md = absl::Milliseconds(margin);
      const int64_t expected_drop =
          f - absl::ToInt64Milliseconds(reqctx::internal::OutboundGrpcTimeout(
                  reqctx::internal::OutboundGrpcTimeout(fd - md) - md));
      ok = elapsed >= 4 * latency && f - b >= 2 * margin - 25 &&
           f - b <= expected_drop + 150 && b + elapsed <= d;
      detail = absl::StrFormat(
          "call took %d ms (>= 4 x %d ms of links); remaining ms at arrival: "
          "frontend %d, middle %d, backend %d (front - back = %d ~ %d: 2 x "
          "margin %d and what each hop keeps back); backend remaining + "
          "round trip = %d <= deadline %d",
          elapsed, latency, f, m, b, f - b, expected_drop, margin, b + elapsed,
          d);
    }
    Report(ok, "latency", detail);
    bool same = r.status.ok() && r.response.hops_size() == 3;
    for (int i = 0; same && i < r.response.hops_size(); ++i) {
      same = r.response.hops(i).trace_id() == r.response.trace_id() &&
             !r.response.trace_id().empty();
    }
    Report(same, "trace", "trace id " + r.response.trace_id());
  }

  // margin: the backend cannot finish; the frontend answers early.
  {
    const absl::Duration deadline = absl::Milliseconds(3000);
    auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), deadline);
    // 1 s at each hop: the backend is admitted (about 3000 - 2000 - 2 x
    // margin ms left, above its minimum budget) but cannot finish; every
    // hop's Context ends first at the backend, then back up the chain.
    CallResult r = Call(*front, ctx, 1000);
    const bool ok =
        r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
        r.elapsed <= deadline - absl::Milliseconds(margin) / 2;
    Report(ok, "margin",
           absl::StrFormat("status %d after %s of a %s deadline (answer "
                           "expected ~%d ms early)",
                           r.status.error_code(),
                           absl::FormatDuration(r.elapsed),
                           absl::FormatDuration(deadline), margin));
  }

  // transit: the frontend's handler has 80% of one link's latency left (the
  // client's deadline less its reply margin): its call to the middle runs
  // out on the link, the request reaching the middle after the frontend's
  // deadline for it (gRPC's relative grpc-timeout does not say so), and no
  // answer, so no ledger, gets back in time.
  {
    const absl::Duration deadline = absl::Milliseconds(margin + latency * 4 / 5);
    auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), deadline);
    CallResult r = Call(*front, ctx, 0);
    absl::StatusOr<reqctx::Ledger> l = reqctx::LedgerFromStatus(r.status);
    std::string detail = absl::StrFormat(
        "status %d after %s of a %s deadline; ", r.status.error_code(),
        absl::FormatDuration(r.elapsed), absl::FormatDuration(deadline));
    bool ok = r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
              l.ok();
    if (!l.ok()) {
      detail += "no ledger: " + l.status().ToString();
    } else {
      const reqctx::LedgerHop& root = l->root;
      const std::string line = reqctx::LedgerLine(*l);
      const std::string middle_address = absl::GetFlag(FLAGS_middle_stats);
      const reqctx::LedgerOutbound* link =
          root.outbound.empty() ? nullptr : &root.outbound.back();
      ok = ok && root.host == "frontend" && link != nullptr && link->sent &&
           link->code == 4 && link->ledger.empty() &&
           link->peer.find(middle_address) != std::string::npos &&
           line.find("network") != std::string::npos &&
           line.find("to " + link->peer) != std::string::npos &&
           line.find("ran out in transit") != std::string::npos &&
           line.find("ran out here") == std::string::npos;
      if (ok) {
        // The link's time, not the frontend's work, took the budget; the
        // frontend's shares add up to the client's deadline.
        const absl::Duration own = root.queued + root.work;
        const absl::Duration sum =
            own + link->took + root.reply_margin.value_or(absl::ZeroDuration());
        const absl::Duration tolerance =
            absl::Milliseconds(5) + deadline / 10;
        ok = own < link->took && sum <= deadline + tolerance &&
             sum >= deadline - tolerance;
        detail += absl::StrFormat(
            "frontend own %s, link %s, reply margin %s: sum %s ~ %s (+-%s); ",
            absl::FormatDuration(own), absl::FormatDuration(link->took),
            absl::FormatDuration(
                root.reply_margin.value_or(absl::ZeroDuration())),
            absl::FormatDuration(sum), absl::FormatDuration(deadline),
            absl::FormatDuration(tolerance));
      }
      detail += "ledger: " + line;
    }
    Report(ok, "transit", detail);
  }

  // cancel: canceled while the backend's workers run.
  {
    std::optional<StatsResponse> before = Stats(*back);
    auto [ctx, cancel] =
        reqctx::WithTimeout(reqctx::Background(), absl::Seconds(30));
    std::thread caller([&, ctx = ctx] { Call(*front, ctx, 2000); });
    // Each hop works 2 s before calling on: wait until the backend works.
    bool reached = WaitStats(*back, [](const StatsResponse& s) {
      return s.active_workers() > 0;
    });
    cancel();
    caller.join();
    bool stopped =
        reached && before.has_value() &&
        WaitStats(*back, [&](const StatsResponse& s) {
          return s.active_workers() == 0 && s.active_requests() == 0 &&
                 s.canceled_total() > before->canceled_total();
        });
    Report(stopped, "cancel",
           reached ? "backend's call canceled and its workers stopped"
                   : "the call never reached the backend's workers");
  }

  // budget: rejected by the backend's minimum, not before.
  if (const int64_t min = absl::GetFlag(FLAGS_backend_min_budget_ms); min > 0) {
    std::optional<StatsResponse> f0 = Stats(*front), m0 = Stats(*middle),
                                 b0 = Stats(*back);
    // The frontend and middle have no minimum; the backend gets the
    // client's deadline minus the two margins, 100 ms under its minimum.
    const int64_t timeout = min + 2 * margin - 100;
    auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(),
                                             absl::Milliseconds(timeout));
    CallResult r = Call(*front, ctx, 0);
    std::optional<StatsResponse> f1 = Stats(*front), m1 = Stats(*middle),
                                 b1 = Stats(*back);
    bool ok = f0 && m0 && b0 && f1 && m1 && b1 &&
              r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
              Count(*b1, "min_budget_rejected") ==
                  Count(*b0, "min_budget_rejected") + 1 &&
              Count(*m1, "min_budget_rejected") ==
                  Count(*m0, "min_budget_rejected") &&
              Count(*f1, "min_budget_rejected") ==
                  Count(*f0, "min_budget_rejected");
    Report(ok, "budget",
           absl::StrFormat("a %d ms call: status %d, backend "
                           "min_budget_rejected %d -> %d",
                           timeout, r.status.error_code(),
                           b0 ? Count(*b0, "min_budget_rejected") : -1,
                           b1 ? Count(*b1, "min_budget_rejected") : -1));
  }
  return failures == 0 ? 0 : 1;
}
