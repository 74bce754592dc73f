// echo server: serves echo.v1.Echo on 127.0.0.1 until SIGINT or SIGTERM.
//
//   server --name=backend --port=0 [--next=127.0.0.1:PORT] [--workers=2]
//          [--postgres="host=127.0.0.1 port=5432 user=postgres"]
//          [--metrics_port=9464] [--metrics_address=127.0.0.1]
//          [--orphan_threshold_ms=1000] [--call_log]
//
// With --metrics_port (0: a free port) it records reqctx's metrics and serves
// them for Prometheus at http://ADDRESS:PORT/metrics, printing "metrics on
// ADDRESS:PORT". Handlers and workers still running --orphan_threshold_ms
// after their Context is done are logged once on stderr and counted (0
// turns the detector off). --call_log writes one JSON line per finished call
// to stderr.
//
// Prints "listening on 127.0.0.1:PORT" once serving. On SIGINT/SIGTERM it
// cancels in-flight calls (their Contexts are canceled), waits for their
// handlers, and exits 0.
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "interceptors/observability.h"
#include "metrics/metrics_server.h"
#include "services/echo/echo_server.h"

ABSL_FLAG(std::string, name, "echo", "service name reported in each Hop");
ABSL_FLAG(int, port, 0, "port on 127.0.0.1 (0: pick a free one)");
ABSL_FLAG(std::string, next, "", "host:port of the next hop (empty: none)");
ABSL_FLAG(int, workers, 2, "worker threads per Echo call");
ABSL_FLAG(std::string, postgres, "",
          "libpq conninfo: do each Echo call's work as SELECT pg_sleep(work_ms "
          "/ 1000.0) on this PostgreSQL server, bound to the call's Context");

ABSL_FLAG(int, metrics_port, -1,
          "serve Prometheus metrics on this port (0: a free one; -1: off)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1",
          "interface for --metrics_port (0.0.0.0 for a remote Prometheus)");
ABSL_FLAG(int64_t, orphan_threshold_ms, 1000,
          "log and count handlers/workers still running this long after "
          "their Context is done (0: off)");
ABSL_FLAG(bool, call_log, false, "one JSON line per finished call on stderr");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "echo server: --name=N --port=P [--next=host:port] [--workers=K]");
  absl::ParseCommandLine(argc, argv);

  // Block the stop signals in every thread (gRPC's threads inherit this
  // mask) and take them synchronously with sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::unique_ptr<reqctx::MetricsServer> metrics;
  if (const int port = absl::GetFlag(FLAGS_metrics_port); port >= 0) {
    reqctx::EnableRpcMetrics();
    reqctx::MetricsServerOptions mo;
    mo.address = absl::GetFlag(FLAGS_metrics_address);
    mo.port = port;
    absl::StatusOr<std::unique_ptr<reqctx::MetricsServer>> m =
        reqctx::MetricsServer::Start(mo);
    if (!m.ok()) {
      absl::FPrintF(stderr, "echo server: %s\n", m.status().ToString());
      return 1;
    }
    metrics = std::move(*m);
  }
  if (const int64_t ms = absl::GetFlag(FLAGS_orphan_threshold_ms); ms > 0) {
    if (absl::Status s = reqctx::EnableOrphanReports(absl::Milliseconds(ms));
        !s.ok()) {
      absl::FPrintF(stderr, "echo server: %s\n", s.ToString());
      return 1;
    }
  }
  if (absl::GetFlag(FLAGS_call_log)) {
    reqctx::SetCallLogSink(reqctx::StderrJsonCallLogSink());
  }

  reqctx::echo::EchoServerOptions options;
  options.name = absl::GetFlag(FLAGS_name);
  options.port = absl::GetFlag(FLAGS_port);
  options.next = absl::GetFlag(FLAGS_next);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.postgres = absl::GetFlag(FLAGS_postgres);
  absl::StatusOr<std::unique_ptr<reqctx::echo::EchoServer>> server =
      reqctx::echo::EchoServer::Start(options);
  if (!server.ok()) {
    absl::FPrintF(stderr, "echo server: %s\n", server.status().ToString());
    return 1;
  }
  if (metrics != nullptr) {
    absl::PrintF("%s metrics on %s:%d\n", options.name,
                 absl::GetFlag(FLAGS_metrics_address), metrics->port());
  }
  absl::PrintF("%s listening on %s\n", options.name, (*server)->address());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  absl::PrintF("%s: signal %d, shutting down\n", options.name, signal_number);
  std::fflush(stdout);
  (*server)->Shutdown();
  reqctx::echo::EchoStats::Snapshot s = (*server)->stats().Get();
  absl::PrintF(
      "%s: stopped (completed %d, canceled %d, deadline exceeded %d)\n",
      options.name, s.completed_total, s.canceled_total,
      s.deadline_exceeded_total);
  return 0;
}
