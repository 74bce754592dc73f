// The reqctx demo with a real database: a private PostgreSQL 15 (initdb into
// /tmp, 127.0.0.1, a free port), and three echo servers in this process
// (frontend -> middle -> backend); the backend's work is a SQL query,
// `SELECT pg_sleep(work_ms / 1000.0)`, bound to the call's Context. Shows:
//   1. a query finishing inside the deadline;
//   2. a deadline running out while the query runs: the query is canceled on
//      the database;
//   3. a client cancel reaching the SQL query on the backend, how long that
//      took, and pg_stat_activity showing the query gone.
// Stops everything it started (the database by pid) and exits 0 by itself.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "integrations/postgres/local_server.h"
#include "integrations/postgres/postgres.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"

namespace {

using reqctx::echo::EchoServer;
using reqctx::echo::EchoStats;
using reqctx::postgres::Connection;

constexpr absl::Duration kWaitBound = absl::Seconds(10);

struct Chain {
  std::unique_ptr<EchoServer> backend, middle, frontend;
};

bool Idle(const EchoStats::Snapshot& s) {
  return s.active_requests == 0 && s.active_workers == 0;
}

std::string CodeName(const grpc::Status& status) {
  return absl::StatusCodeToString(reqctx::FromGrpcStatus(status).code());
}

// pg_sleep queries running on the server (from any session but `admin`'s).
int64_t RunningSleeps(Connection& admin) {
  absl::StatusOr<reqctx::postgres::Result> r = admin.Query(
      reqctx::Background(),
      "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
      "query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()");
  int64_t n = -1;
  if (r.ok() && r->at(0, 0)) (void)absl::SimpleAtoi(*r->at(0, 0), &n);
  return n;
}

// Polls pg_stat_activity (the server has no event for it) until `want`
// pg_sleep queries run; false after kWaitBound.
bool AwaitSleeps(Connection& admin, int64_t want) {
  const absl::Time end = absl::Now() + kWaitBound;
  while (absl::Now() < end) {
    if (RunningSleeps(admin) == want) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return false;
}

// Statements the server itself reports as canceled, by a cancel request
// (PQcancel: "user request") or by the deadline's server-side backstop
// ("statement timeout"), from the PostgreSQL log.
struct Canceled {
  int by_request = 0;
  int by_timeout = 0;
  int total() const { return by_request + by_timeout; }
};
Canceled CanceledOnServer(const std::string& log_path) {
  std::ifstream in(log_path);
  Canceled c;
  for (std::string line; std::getline(in, line);) {
    c.by_request += line.find("canceling statement due to user request") !=
                    std::string::npos;
    c.by_timeout += line.find("canceling statement due to statement timeout") !=
                    std::string::npos;
  }
  return c;
}

grpc::Status Call(echo::v1::Echo::Stub& stub, const reqctx::Context& ctx,
                  int64_t work_ms) {
  echo::v1::EchoRequest request;
  request.set_message("hello");
  request.set_work_ms(work_ms);
  echo::v1::EchoResponse response;
  auto cc = reqctx::NewClientContext(ctx);
  return stub.Echo(cc.get(), request, &response);
}

void PrintBackend(const Chain& chain) {
  chain.backend->stats().WaitUntil(Idle, kWaitBound);
  EchoStats::Snapshot s = chain.backend->stats().Get();
  absl::PrintF(
      "   backend totals: completed %d, canceled %d, deadline exceeded %d\n",
      s.completed_total, s.canceled_total, s.deadline_exceeded_total);
}

bool InDeadline(echo::v1::Echo::Stub& stub, const Chain& chain) {
  absl::PrintF(
      "\n1) 2 s deadline, 100 ms of work per hop (the backend's is "
      "pg_sleep(0.1))\n");
  auto [ctx, cancel] =
      reqctx::WithTimeout(reqctx::Background(), absl::Seconds(2));
  const absl::Time start = absl::Now();
  grpc::Status status = Call(stub, ctx, 100);
  absl::PrintF("   client: %s after %d ms\n", CodeName(status),
               absl::ToInt64Milliseconds(absl::Now() - start));
  PrintBackend(chain);
  return status.ok();
}

bool DeadlineDuringQuery(echo::v1::Echo::Stub& stub, const Chain& chain,
                         Connection& admin, const std::string& log) {
  absl::PrintF(
      "\n2) 2.6 s deadline, 1 s of work per hop: the backend's "
      "pg_sleep(1) starts with\n   ~0.6 s left and the deadline runs out "
      "while it runs\n");
  auto [ctx, cancel] =
      reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(2600));
  const absl::Time start = absl::Now();
  grpc::Status status = Call(stub, ctx, 1000);
  absl::PrintF("   client: %s after %d ms\n", CodeName(status),
               absl::ToInt64Milliseconds(absl::Now() - start));
  PrintBackend(chain);
  const int64_t left = RunningSleeps(admin);
  absl::PrintF("   pg_sleep queries still running on the database: %d\n",
               left);
  const Canceled canceled = CanceledOnServer(log);
  absl::PrintF(
      "   the server's log: %d statement canceled (%d by the cancel request, "
      "%d by the\n   server-side statement_timeout backstop)\n",
      canceled.total(), canceled.by_request, canceled.by_timeout);
  return status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
         left == 0 && canceled.total() == 1;
}

bool ClientCancel(echo::v1::Echo::Stub& stub, const Chain& chain,
                  Connection& admin, const std::string& log) {
  absl::PrintF(
      "\n3) no deadline, 600 ms of work per hop; the client cancels as soon "
      "as the\n   backend's pg_sleep(0.6) is running on the database\n");
  auto [ctx, cancel] = reqctx::WithCancel(reqctx::Background());
  grpc::Status status;
  std::thread caller([&, ctx = ctx] { status = Call(stub, ctx, 600); });
  const bool started = AwaitSleeps(admin, 1);
  absl::PrintF("   pg_stat_activity before the cancel: %d pg_sleep query%s\n",
               RunningSleeps(admin), started ? " running" : " (never started)");
  const absl::Time canceled_at = absl::Now();
  cancel();
  const bool gone = AwaitSleeps(admin, 0);
  const absl::Duration to_gone = absl::Now() - canceled_at;
  const bool idle = chain.backend->stats().WaitUntil(Idle, kWaitBound);
  caller.join();
  absl::PrintF("   client: %s\n", CodeName(status));
  absl::PrintF(
      "   cancel -> the query gone from pg_stat_activity: %.1f ms (%s)\n",
      absl::ToDoubleMilliseconds(to_gone), gone ? "yes" : "NOT within 10 s");
  absl::PrintF("   pg_stat_activity after: %d pg_sleep queries\n",
               RunningSleeps(admin));
  const Canceled canceled = CanceledOnServer(log);
  absl::PrintF(
      "   the server's log: %d statements canceled so far, %d by a cancel "
      "request\n",
      canceled.total(), canceled.by_request);
  PrintBackend(chain);
  return started && gone && idle && canceled.total() == 2 &&
         canceled.by_request >= 1 &&
         status.error_code() == grpc::StatusCode::CANCELLED;
}

int Run() {
  absl::StatusOr<std::unique_ptr<reqctx::postgres::LocalServer>> db =
      reqctx::postgres::LocalServer::Start();
  if (!db.ok()) {
    absl::FPrintF(stderr, "demo_postgres: cannot start PostgreSQL: %s\n",
                  db.status().ToString());
    return 1;
  }
  absl::PrintF("reqctx demo with PostgreSQL: a private server (pid %d) on %s\n",
               (*db)->pid(), (*db)->conninfo());
  Chain chain;
  reqctx::echo::EchoServerOptions options;
  options.name = "backend";
  options.postgres = (*db)->conninfo();
  auto backend = EchoServer::Start(options);
  if (!backend.ok()) return absl::FPrintF(stderr, "%s\n", backend.status().ToString()), 1;
  chain.backend = std::move(*backend);
  options = {};
  options.name = "middle";
  options.next = chain.backend->address();
  auto middle = EchoServer::Start(options);
  if (!middle.ok()) return absl::FPrintF(stderr, "%s\n", middle.status().ToString()), 1;
  chain.middle = std::move(*middle);
  options.name = "frontend";
  options.next = chain.middle->address();
  auto frontend = EchoServer::Start(options);
  if (!frontend.ok()) return absl::FPrintF(stderr, "%s\n", frontend.status().ToString()), 1;
  chain.frontend = std::move(*frontend);
  absl::PrintF("   frontend %s -> middle %s -> backend %s -> PostgreSQL\n",
               chain.frontend->address(), chain.middle->address(),
               chain.backend->address());

  auto [ctx, cancel] =
      reqctx::WithTimeout(reqctx::Background(), absl::Seconds(30));
  absl::StatusOr<std::unique_ptr<Connection>> admin =
      Connection::Connect(ctx, (*db)->conninfo());
  if (!admin.ok()) return absl::FPrintF(stderr, "%s\n", admin.status().ToString()), 1;

  auto stub = echo::v1::Echo::NewStub(reqctx::CreateChannel(
      chain.frontend->address(), grpc::InsecureChannelCredentials()));
  bool ok = InDeadline(*stub, chain);
  ok &= DeadlineDuringQuery(*stub, chain, **admin, (*db)->log_path());
  ok &= ClientCancel(*stub, chain, **admin, (*db)->log_path());

  absl::PrintF("\nshutting down the servers and PostgreSQL (pid %d)\n",
               (*db)->pid());
  chain.frontend->Shutdown();
  chain.middle->Shutdown();
  chain.backend->Shutdown();
  admin->reset();
  (*db)->Stop();
  absl::PrintF("%s\n", ok ? "all three behaved as described"
                          : "SOMETHING DID NOT BEHAVE AS DESCRIBED");
  return ok ? 0 : 1;
}

}  // namespace

int main() { return Run(); }
