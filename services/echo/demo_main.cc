// The reqctx demo: three echo servers in one process (frontend -> middle ->
// backend, free loopback ports), and three calls that show what the Context
// does across hops:
//   1. a 1 s deadline that shrinks at each hop, one trace id throughout;
//   2. a deadline that runs out in the middle hop: every hop involved reports
//      DEADLINE_EXCEEDED and every worker stops;
//   3. a client cancel mid-call, and how long it takes to reach the backend
//      and stop its workers;
//   4. production policies (issue 12): a hopeless call refused at the first
//      hop by its minimum budget, and a follow-up detached from a call (with
//      a bound) that outlives it;
//   5. a bidirectional stream (Chat) whose client goes silent mid-stream, cut
//      by the frontend's message-wait timeout, every hop's call ended;
//   6. an adaptive concurrency limit (issue 23): a server in front of a
//      backend that runs 4 calls at a time; as the load rises from 4 to 32
//      callers the printed limit moves from its initial value down to what
//      the backend can take, with no concurrency number chosen.
// Exits 0 by itself within a few seconds.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "context/sleep.h"
#include "interceptors/interceptors.h"
#include "ledger/grpc_ledger.h"
#include "interceptors/policy/detach.h"
#include "limits/limit_options.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "streams/stream_guard.h"

namespace {

using reqctx::echo::EchoServer;
using reqctx::echo::EchoStats;

constexpr int kWorkers = 2;
constexpr absl::Duration kWaitBound = absl::Seconds(5);
// The frontend's message-wait timeout for streaming calls (scene 5).
constexpr absl::Duration kMessageWait = absl::Milliseconds(300);

struct Chain {
  std::unique_ptr<EchoServer> backend, middle, frontend;
  std::vector<const EchoServer*> all() const {
    return {frontend.get(), middle.get(), backend.get()};
  }
};

absl::StatusOr<std::unique_ptr<EchoServer>> StartHop(const std::string& name,
                                                     const std::string& next) {
  reqctx::echo::EchoServerOptions options;
  options.name = name;
  options.next = next;
  options.workers = kWorkers;
  // Each handler's Context ends 10 ms before its call's deadline, so a hop
  // whose deadline runs out still answers itself -- with its budget ledger
  // (scene 2) -- before gRPC ends the call for it.
  options.server_policy.defaults.reply_margin = absl::Milliseconds(10);
  if (name == "frontend") {
    reqctx::streams::StreamOptions streams;
    streams.message_wait = kMessageWait;
    options.streams = reqctx::streams::MethodStreamOptions(streams);
  }
  return EchoServer::Start(options);
}

bool Idle(const EchoStats::Snapshot& s) {
  return s.active_requests == 0 && s.active_workers == 0;
}

void PrintStats(const Chain& chain) {
  for (const EchoServer* server : chain.all()) {
    server->stats().WaitUntil(Idle, kWaitBound);
    EchoStats::Snapshot s = server->stats().Get();
    absl::PrintF(
        "     %-8s active requests %d, active workers %d | completed %d, "
        "canceled %d, deadline exceeded %d\n",
        server->name(), s.active_requests, s.active_workers, s.completed_total,
        s.canceled_total, s.deadline_exceeded_total);
  }
}

std::string CodeName(const grpc::Status& status) {
  return absl::StatusCodeToString(
      reqctx::FromGrpcStatus(status).code());
}

void ShrinkingDeadline(echo::v1::Echo::Stub& stub) {
  absl::PrintF("\n1) A call with a 1 s deadline, 50 ms of work per hop\n");
  auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), absl::Seconds(1));
  echo::v1::EchoRequest request;
  request.set_message("hello");
  request.set_work_ms(50);
  echo::v1::EchoResponse response;
  auto cc = reqctx::NewClientContext(ctx);
  grpc::Status status = stub.Echo(cc.get(), request, &response);
  absl::PrintF("   status %s\n", CodeName(status));
  bool one_trace = true;
  for (const echo::v1::Hop& hop : response.hops()) {
    absl::PrintF("   %-8s trace %s  span %s  deadline remaining %4d ms\n",
                 hop.service(), hop.trace_id(), hop.span_id(),
                 hop.deadline_remaining_ms());
    one_trace &= hop.trace_id() == response.trace_id();
  }
  absl::PrintF("   one trace id across all %d hops: %s\n", response.hops_size(),
               one_trace ? "yes" : "NO");
}

void DeadlineInMiddle(echo::v1::Echo::Stub& stub, const Chain& chain) {
  absl::PrintF(
      "\n2) A call with a 250 ms deadline, 150 ms of work per hop: the deadline "
      "runs out\n   while the middle hop works (the backend is never called)\n");
  auto [ctx, cancel] =
      reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(250));
  echo::v1::EchoRequest request;
  request.set_message("slow");
  request.set_work_ms(150);
  echo::v1::EchoResponse response;
  auto cc = reqctx::NewClientContext(ctx);
  absl::Time start = absl::Now();
  grpc::Status status = stub.Echo(cc.get(), request, &response);
  absl::PrintF("   client: %s after %d ms\n", CodeName(status),
               absl::ToInt64Milliseconds(absl::Now() - start));
  // Where the deadline went: the ledger the hops returned with the status.
  if (std::string line = reqctx::LedgerLineOf(status); !line.empty()) {
    absl::PrintF("   ledger: %s\n", line);
  } else {
    absl::PrintF("   ledger: none returned\n");
  }
  absl::PrintF("   stats once every hop is idle:\n");
  PrintStats(chain);
}

void ClientCancel(echo::v1::Echo::Stub& stub, const Chain& chain) {
  absl::PrintF(
      "\n3) A call with no deadline and 300 ms of work per hop, canceled by the "
      "client\n   as soon as the backend's workers are running\n");
  auto [ctx, cancel] = reqctx::WithCancel(reqctx::Background());
  echo::v1::EchoRequest request;
  request.set_message("cancel me");
  request.set_work_ms(300);
  grpc::Status status;
  std::thread caller([&stub, &request, &status, ctx = ctx] {
    echo::v1::EchoResponse response;
    auto cc = reqctx::NewClientContext(ctx);
    status = stub.Echo(cc.get(), request, &response);
  });
  const EchoStats& backend = chain.backend->stats();
  if (!backend.WaitUntil(
          [](const EchoStats::Snapshot& s) {
            return s.active_workers == kWorkers;
          },
          kWaitBound)) {
    absl::PrintF("   the backend never started working\n");
  }
  absl::Time canceled_at = absl::Now();
  cancel();
  bool stopped = backend.WaitUntil(Idle, kWaitBound);
  absl::Duration to_backend = absl::Now() - canceled_at;
  caller.join();
  absl::Duration to_client = absl::Now() - canceled_at;
  absl::PrintF("   client: %s %.1f ms after the cancel\n", CodeName(status),
               absl::ToDoubleMilliseconds(to_client));
  absl::PrintF(
      "   backend: context canceled and all workers stopped %s%.1f ms after "
      "the cancel\n",
      stopped ? "" : "NOT within ", absl::ToDoubleMilliseconds(to_backend));
  absl::PrintF("   stats once every hop is idle:\n");
  PrintStats(chain);
}

void Policies() {
  absl::PrintF(
      "\n4) Production policies: a server with a 50 ms minimum budget\n");
  reqctx::echo::EchoServerOptions options;
  options.name = "guarded";
  options.server_policy.defaults.min_budget = absl::Milliseconds(50);
  auto guarded = EchoServer::Start(options);
  if (!guarded.ok()) {
    absl::PrintF("   cannot start: %s\n", guarded.status().ToString());
    return;
  }
  auto stub = echo::v1::Echo::NewStub(reqctx::CreateChannel(
      (*guarded)->address(), grpc::InsecureChannelCredentials()));
  echo::v1::EchoRequest request;
  request.set_message("hopeless");
  echo::v1::EchoResponse response;
  // The best of a few tries, on a connected channel: one loopback round trip.
  absl::Duration best = absl::InfiniteDuration();
  grpc::Status status;
  for (int i = 0; i < 5; ++i) {
    auto [ctx, cancel] =
        reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(10));
    auto cc = reqctx::NewClientContext(ctx);
    absl::Time start = absl::Now();
    status = stub->Echo(cc.get(), request, &response);
    best = std::min(best, absl::Now() - start);
  }
  absl::PrintF(
      "   hopeless call (10 ms left, 50 ms needed): %s in %.3f ms (best of 5, "
      "connected channel), handler "
      "never ran (%d calls handled, min_budget_rejected %d)\n",
      CodeName(status), absl::ToDoubleMilliseconds(best),
      (*guarded)->stats().Get().started_total,
      (*guarded)->policy_counts()[reqctx::policy::PolicyCounter::
                                      kMinBudgetRejected]);
  (*guarded)->Shutdown();

  // A follow-up (say, flushing an audit record) that must not be cut short
  // by the end of the call, but must not run forever either.
  auto [call, end_call] =
      reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(100));
  auto [follow_up, done] =
      reqctx::policy::DetachWithBound(call, absl::Seconds(1));
  absl::Time call_ended = absl::Now();
  end_call();
  absl::Status flushed = reqctx::SleepFor(follow_up, absl::Milliseconds(200));
  done();
  absl::PrintF(
      "   detached follow-up: call ended (%s), follow-up ran %d ms more and "
      "finished %s (bounded by its own 1 s)\n",
      absl::StatusCodeToString(call.Err().code()),
      absl::ToInt64Milliseconds(absl::Now() - call_ended),
      flushed.ok() ? "OK" : flushed.ToString());
}

void StalledStream(echo::v1::Echo::Stub& stub, const Chain& chain) {
  absl::PrintF(
      "\n5) A Chat stream with no deadline whose client goes silent after two "
      "messages;\n   the frontend waits at most %d ms for the next one "
      "(--stream_message_wait_ms)\n",
      absl::ToInt64Milliseconds(kMessageWait));
  auto cc = reqctx::NewClientContext(reqctx::Background());
  auto stream = stub.Chat(cc.get());
  echo::v1::EchoResponse response;
  for (const char* line : {"hello", "still there?"}) {
    echo::v1::EchoRequest request;
    request.set_message(line);
    if (!stream->Write(request) || !stream->Read(&response)) break;
    absl::PrintF("   sent \"%s\", answered through %d hops\n", line,
                 response.hops_size());
  }
  absl::Time silent_from = absl::Now();
  absl::PrintF("   ... the client now sends nothing and keeps the stream open\n");
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  absl::PrintF("   client: %s after %d ms of silence: %s\n", CodeName(status),
               absl::ToInt64Milliseconds(absl::Now() - silent_from),
               status.error_message());
  absl::PrintF("   stats once every hop is idle:\n");
  PrintStats(chain);
}

// Scene 6. `callers` threads call `stub` back to back (each call 20 ms of
// work per hop, a 1 s deadline) while `running` is set; counts the answers.
struct Load {
  std::atomic<bool> running{true};
  std::atomic<int> callers{0};
  std::atomic<int> ok{0}, refused{0}, other{0};
  std::atomic<int64_t> ok_us{0};  // latency of the OK calls, summed
  std::mutex mu;
  std::string first_other;  // Guarded by mu.
  std::vector<std::thread> threads;
  void Add(echo::v1::Echo::Stub& stub, int n) {
    for (int i = 0; i < n; ++i) {
      callers.fetch_add(1);
      threads.emplace_back([this, &stub] {
        while (running.load()) {
          auto [ctx, cancel] =
              reqctx::WithTimeout(reqctx::Background(), absl::Seconds(1));
          auto cc = reqctx::NewClientContext(ctx);
          echo::v1::EchoRequest request;
          request.set_work_ms(20);
          echo::v1::EchoResponse response;
          const absl::Time start = absl::Now();
          grpc::Status s = stub.Echo(cc.get(), request, &response);
          if (s.ok()) {
            ok_us.fetch_add(absl::ToInt64Microseconds(absl::Now() - start));
            ok.fetch_add(1);
          } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
            refused.fetch_add(1);
            // As a polite client does with grpc-retry-pushback-ms.
            absl::SleepFor(absl::Milliseconds(10));
          } else if (other.fetch_add(1) == 0) {
            std::lock_guard<std::mutex> lock(mu);
            first_other = s.error_message();
          }
        }
      });
    }
  }
  void Stop() {
    running.store(false);
    for (std::thread& t : threads) t.join();  // Each call ends within 1 s.
  }
};

void AdaptiveLimit() {
  absl::PrintF(
      "\n6) An adaptive limit (--limit=vegas): a server in front of a backend "
      "that runs\n   4 calls at a time (20 ms of work per hop); no concurrency "
      "number is chosen\n");
  reqctx::echo::EchoServerOptions backend_options;
  backend_options.name = "backend4";
  backend_options.workers = 1;
  backend_options.server_policy.defaults.max_concurrency = 4;
  backend_options.server_policy.defaults.max_queue = 256;
  auto backend = EchoServer::Start(backend_options);
  if (!backend.ok()) {
    absl::PrintF("   cannot start: %s\n", backend.status().ToString());
    return;
  }
  reqctx::echo::EchoServerOptions options;
  options.name = "adaptive";
  options.workers = 1;
  options.next = (*backend)->address();
  reqctx::policy::MethodPolicy& p = options.server_policy.defaults;
  p.max_concurrency = 0;
  p.max_queue = -1;  // 4 x the limit
  p.limit.algorithm = reqctx::limits::Algorithm::kVegas;
  p.limit.vegas.bounds = {/*initial=*/24, /*min=*/2, /*max=*/200,
                          /*warmup_samples=*/3};
  p.limit.window.min_time = absl::Milliseconds(50);
  p.limit.window.min_samples = 5;
  auto server = EchoServer::Start(options);
  if (!server.ok()) {
    absl::PrintF("   cannot start: %s\n", server.status().ToString());
    return;
  }
  auto stub = echo::v1::Echo::NewStub(reqctx::CreateChannel(
      (*server)->address(), grpc::InsecureChannelCredentials()));
  Load load;
  auto report = [&](absl::Duration for_how_long) {
    const absl::Time end = absl::Now() + for_how_long;
    int last_ok = load.ok.load();
    int64_t last_us = load.ok_us.load();
    while (absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(300));
      const int ok = load.ok.load();
      const int64_t us = load.ok_us.load();
      const double mean_ms =
          ok > last_ok ? (us - last_us) / 1000.0 / (ok - last_ok) : 0;
      last_ok = ok;
      last_us = us;
      std::optional<reqctx::policy::ShedderStats> s =
          (*server)->server_policy().LimiterStats("/echo.v1.Echo/Echo");
      if (!s.has_value()) return;
      absl::PrintF(
          "   %2d callers: limit %3d | in flight %2d, queued %2d | "
          "handling %3.0f ms (no-load %3.0f) | callers see %3.0f ms | "
          "ok %4d, refused %3d\n",
          load.callers.load(), s->limit, s->running, s->queued,
          absl::ToDoubleMilliseconds(s->inputs.last_rtt),
          absl::ToDoubleMilliseconds(s->inputs.min_rtt), mean_ms, ok,
          load.refused.load());
    }
  };
  load.Add(*stub, 4);
  report(absl::Milliseconds(900));
  absl::PrintF("   ... the load rises to 32 callers\n");
  load.Add(*stub, 28);
  report(absl::Milliseconds(2400));
  load.Stop();
  absl::PrintF(
      "   the limit left its initial 24 for what the backend takes (4 at a "
      "time x 2 hops of\n   20 ms: ~8 calls in flight without queueing); "
      "the rest wait in the frontend's\n   deadline-aware queue. %d calls "
      "failed otherwise%s%s\n",
      load.other.load(), load.first_other.empty() ? "" : ", first: ",
      load.first_other);
  (*server)->Shutdown();
  (*backend)->Shutdown();
}

}  // namespace

int main() {
  Chain chain;
  auto backend = StartHop("backend", "");
  if (!backend.ok()) return absl::FPrintF(stderr, "%s\n", backend.status().ToString()), 1;
  chain.backend = std::move(*backend);
  auto middle = StartHop("middle", chain.backend->address());
  if (!middle.ok()) return absl::FPrintF(stderr, "%s\n", middle.status().ToString()), 1;
  chain.middle = std::move(*middle);
  auto frontend = StartHop("frontend", chain.middle->address());
  if (!frontend.ok()) return absl::FPrintF(stderr, "%s\n", frontend.status().ToString()), 1;
  chain.frontend = std::move(*frontend);
  absl::PrintF("reqctx demo: three echo servers in this process, %d workers each\n", kWorkers);
  absl::PrintF("   frontend %s -> middle %s -> backend %s\n",
               chain.frontend->address(), chain.middle->address(),
               chain.backend->address());

  auto stub = echo::v1::Echo::NewStub(reqctx::CreateChannel(
      chain.frontend->address(), grpc::InsecureChannelCredentials()));
  ShrinkingDeadline(*stub);
  DeadlineInMiddle(*stub, chain);
  ClientCancel(*stub, chain);
  Policies();
  StalledStream(*stub, chain);
  AdaptiveLimit();

  absl::PrintF("\nshutting down\n");
  chain.frontend->Shutdown();
  chain.middle->Shutdown();
  chain.backend->Shutdown();
  return 0;
}
