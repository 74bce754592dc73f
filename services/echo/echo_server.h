// EchoServer: an EchoService served on a loopback port, in this process.
//
// Start() binds options.bind_address (127.0.0.1 unless told otherwise; port
// 0 picks a free port; port() tells which) with reqctx's server interceptor
// installed, and (options.health_check) the standard grpc.health.v1.Health
// service: SERVING for "" and "echo.v1.Echo" while the server runs.
// Shutdown() drains the server so that a load balancer can follow:
//   1. at once, health turns NOT_SERVING (Check answers it; Watch streams
//      see it), and calls are still served for options.drain_period, while
//      balancers notice;
//   2. then the server stops taking calls (new calls fail with UNAVAILABLE,
//      which clients may retry elsewhere) and lets in-flight calls run for
//      up to options.shutdown_grace;
//   3. then the Echo calls still running, unary and streaming, are
//      canceled with the cause "server shutting down"
//      (drain/call_tracker.h): their Contexts end, so do their workers and
//      their calls to the next hop (whose handlers see their own Contexts
//      end), and their clients get UNAVAILABLE "server shutting down"
//      (or, when gRPC 1.51 closes the connection as its last call ends and
//      the last status is lost, UNAVAILABLE "Socket closed": retryable too);
//      whatever else still runs (queued calls, health Watch streams) is
//      canceled by gRPC kShutdownBackstop later;
//   4. it returns once every handler has returned.
// The server binary, the demo and the end-to-end tests all use this class.
//
// Thread-safety: all methods are safe from any thread; Shutdown() is
// idempotent (a second caller waits for the first to finish). Lifetime: the
// destructor calls Shutdown(). Turning the health service on calls
// grpc::EnableDefaultHealthCheckService(true), which is process-wide: every
// gRPC server built later in the process gets one too.
#ifndef REQCTX_SERVICES_ECHO_ECHO_SERVER_H_
#define REQCTX_SERVICES_ECHO_ECHO_SERVER_H_

#include <grpcpp/server.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "interceptors/policy/server_policy.h"
#include "services/echo/echo_service.h"
#include "services/echo/echo_stats.h"
#include "streams/stream_guard.h"

namespace reqctx::echo {

// The defaults that bound what one server takes on (issue 19, A5): without
// them each slow call held a gRPC thread plus `workers` threads, and 1,000
// concurrent calls took the server from 11 to ~1,700 threads.
//   * At most kDefaultMaxConcurrency calls (Echo and EchoStream together;
//     Stats is exempt) run at once; kDefaultMaxQueue more wait in the
//     shedder's deadline-aware queue (each waiting call holds a gRPC thread
//     on the sync API, so the queue is short); the rest are refused at once
//     with RESOURCE_EXHAUSTED and grpc-retry-pushback-ms (ServerPolicy).
//   * gRPC's synchronous server runs at most kDefaultMaxThreads threads
//     (grpc::ResourceQuota::SetMaxThreads), above what the limit and queue
//     need, as a backstop: should every one be busy (the limit turned off,
//     or a flood of Stats calls), gRPC 1.51 itself answers a new call with
//     RESOURCE_EXHAUSTED "Server Threadpool Exhausted" (no pushback)
//     instead of starting a thread.
// So the server runs at most about kDefaultMaxThreads + kDefaultMaxConcurrency
// x workers threads, plus a fixed few. Set max_threads or
// server_policy.defaults.max_concurrency to 0 to turn a bound off. An
// adaptive limit (MethodPolicy::limit, echo --limit) does not read
// max_concurrency: calls in flight are bounded by the limit's `max` (echo
// --limit_max, 1,000) and by max_threads, so up to about kDefaultMaxThreads
// x (1 + workers) threads (300 callers of 1 s sleeps for 20 s: limits
// 34-50, 244-282 threads against 76 idle).
inline constexpr int kDefaultMaxConcurrency = 64;
inline constexpr int kDefaultMaxQueue = 64;
inline constexpr int kDefaultMaxThreads = 200;

// How long after the grace gRPC itself cancels what the shutdown's cause
// did not end (calls not tracked, handlers that ignore their Context).
inline constexpr absl::Duration kShutdownBackstop = absl::Milliseconds(500);

// The server policy EchoServerOptions starts with: no deadline rules, the
// default concurrency limit and queue above.
policy::ServerPolicyOptions DefaultEchoServerPolicy();

struct EchoServerOptions {
  std::string name = "echo";
  int port = 0;      // 0: any free port.
  std::string next{};  // host:port of the next hop; empty: last hop.
  int workers = 2;
  std::string postgres{};  // libpq conninfo; see EchoServiceOptions.
  int64_t max_work_ms = 3600 * 1000;  // See EchoServiceOptions (>= 0).
  // How long Shutdown() lets in-flight calls finish before canceling them
  // (0: cancel at once).
  absl::Duration shutdown_grace = absl::ZeroDuration();
  // Production policies (issue 12); see EchoServiceOptions. Invalid ones
  // make Start() fail with InvalidArgument naming the field. Stats is
  // exempt (no policy) unless `server_policy.methods` has an entry for
  // "/echo.v1.Echo/Stats". Starts with the default concurrency limit and
  // queue (DefaultEchoServerPolicy); max_concurrency = 0 turns it off.
  policy::ServerPolicyOptions server_policy = DefaultEchoServerPolicy();
  policy::RetryPolicy retry = EchoServiceOptions::NoRetries();
  policy::RetryChannelOptions retry_channel{};
  // The interface to listen on: an IPv4 address ("127.0.0.1"; "0.0.0.0" for
  // every interface) or an IPv6 one, bracketed or not ("[::1]", "::"). Host
  // names are refused (see BindHost). Last, so positional initializers of
  // the fields above stay valid.
  std::string bind_address = "127.0.0.1";
  // The PostgreSQL pool's limits and the database log; see
  // EchoServiceOptions. Invalid limits make Start() fail with
  // InvalidArgument naming the field.
  postgres::PoolOptions postgres_pool{};
  std::function<void(std::string_view)> log{};
  // The channel to `next`: its outbound header budget; see
  // EchoServiceOptions. Invalid ones make Start() fail naming the field.
  ClientInterceptorOptions next_channel{};
  // Most threads gRPC's synchronous server may run
  // (grpc::ResourceQuota::SetMaxThreads; see kDefaultMaxThreads); 0: no
  // bound. >= 0.
  int max_threads = kDefaultMaxThreads;
  // Message-wait and idle timeouts of the streaming methods, per method;
  // see EchoServiceOptions::streams (all off by default).
  streams::MethodStreamOptions streams{};
  // For tests; see EchoServiceOptions::before_work.
  std::function<void(const Context&)> before_work{};
  // Serve grpc.health.v1.Health (see above).
  bool health_check = true;
  // How long Shutdown() keeps serving after turning health NOT_SERVING,
  // before it refuses new calls (>= 0; 0: refuse at once).
  absl::Duration drain_period = absl::ZeroDuration();
  // Gets Shutdown()'s progress lines (empty: none). The destructor may call
  // it, so what it uses must outlive the server. Must not throw.
  std::function<void(std::string_view)> shutdown_log{};
};

// The libpq conninfo for the server binary's --postgres (`flag`) and
// --postgres_conninfo_file (`file`, a path; its contents, surrounding
// whitespace trimmed, at most 64 KiB). At most one of them may be set; both
// empty give "" (no database). A password in `flag` (password=..., a URI's
// user:password@) is refused with InvalidArgument: a command line is
// readable by every local user (/proc/PID/cmdline). Put the password in the
// file, in PGPASSWORD, or in the password file (PGPASSFILE, ~/.pgpass):
// libpq takes whatever the conninfo leaves out from the PG* variables.
// Errors name the flag or the path, never the conninfo's secrets.
absl::StatusOr<std::string> PostgresConninfo(std::string_view flag,
                                             std::string_view file);

// `address` as the host part of a gRPC listening address: an IPv4 address
// as it is, an IPv6 address in brackets ("::1" and "[::1]" both give
// "[::1]"). InvalidArgument naming it for anything else (empty, a host name,
// a port included, malformed): a server binds addresses, it does not
// resolve names.
absl::StatusOr<std::string> BindHost(std::string_view address);

// The streaming methods' timeouts from the server binary's flags:
// `message_wait_ms` and `idle_ms` (--stream_message_wait_ms,
// --stream_idle_ms) for every streaming method (EchoStream, Collect, Chat),
// 0 meaning off; then `per_method` (--stream_timeouts), a comma-separated
// list of METHOD=MESSAGE_WAIT_MS/IDLE_MS entries (METHOD: EchoStream,
// Collect or Chat; 0: off), e.g. "Chat=500/0,Collect=2000/10000", each
// replacing both timeouts for its method. InvalidArgument naming the flag
// (and the entry) for a negative value, an unknown method, a method given
// twice or a malformed entry.
absl::StatusOr<streams::MethodStreamOptions> StreamTimeoutFlags(
    int64_t message_wait_ms, int64_t idle_ms, std::string_view per_method);

class EchoServer {
 public:
  static absl::StatusOr<std::unique_ptr<EchoServer>> Start(
      const EchoServerOptions& options);
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  int port() const { return port_; }
  // "<bind host>:<port>", e.g. "127.0.0.1:7100", "[::1]:7100".
  std::string address() const;
  const std::string& name() const { return service_->name(); }
  const EchoStats& stats() const { return service_->stats(); }
  // What the server policy and the retry helper did.
  policy::PolicyCountersSnapshot policy_counts() const {
    return service_->PolicyCounts();
  }
  // The server policy, for run-time changes (ServerPolicy::SetMode: dark
  // mode, the kill switch) and its limits' state.
  policy::ServerPolicy& server_policy() { return service_->server_policy(); }

  // Drains and stops the server (see above); returns once every handler
  // has returned. Progress goes to options.shutdown_log, if set.
  void Shutdown();

 private:
  EchoServer(std::unique_ptr<EchoService> service,
             std::unique_ptr<grpc::Server> server, std::string host, int port,
             const EchoServerOptions& options);
  void Log(std::string_view line) const;

  const std::unique_ptr<EchoService> service_;
  const std::unique_ptr<grpc::Server> server_;
  const std::string host_;
  const int port_;
  const absl::Duration shutdown_grace_;
  const absl::Duration drain_period_;
  const std::function<void(std::string_view)> shutdown_log_;
  std::once_flag shutdown_once_;
};

}  // namespace reqctx::echo

#endif  // REQCTX_SERVICES_ECHO_ECHO_SERVER_H_
