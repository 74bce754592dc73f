// EchoService: the echo.v1.Echo service (proto/echo.proto) on reqctx.
//
// Echo does `work_ms` (at most options.max_work_ms) of simulated work on K worker threads (each worker
// works for work_ms, in 10 ms slices, and stops as soon as the call's Context
// is done) -- or, with a PostgreSQL server configured, runs `SELECT
// pg_sleep(work_ms / 1000.0)` there under the call's Context -- then, if a next hop is configured, calls Echo on it with a
// Context derived from the call's (so the deadline shrinks, cancellation
// propagates and the trace continues), and returns one Hop per server.
// EchoStream sends one numbered response per work_ms (100 ms if work_ms is 0)
// until the client cancels or the deadline passes, or relays the next hop's
// stream with this hop prepended. Collect and Chat (client- and
// bidirectional streaming) do each request's work_ms as it arrives and, with
// a next hop, relay the stream request by request (Chat's requests go down
// on a worker thread while the handler relays the responses up); a client
// cancel, the deadline or a failure anywhere ends every hop's call. Stats
// reports EchoStats.
//
// How a stream ends at a hop (sync API; each stream bound to its Context by
// streams/sync.h): the caller's half-close ends the call normally (Collect
// answers, Chat's stream closes after the last response, OK); a client
// cancel, the deadline or an expired stream timeout
// (EchoServiceOptions::streams) ends it with the stream's status
// (CANCELLED, DEADLINE_EXCEEDED with the timeout's message), and the hop
// cancels its call to the next hop with it (never a half-close, so no hop
// answers a stream that did not end). A next hop that fails mid-Chat while
// the caller is silent ends the caller's call at once (gRPC's sync API
// cannot send a status while a Read is pending): CANCELLED with the next
// hop's message, or, when the next hop's deadline ended it, DEADLINE_EXCEEDED
// at this hop's own deadline (later by grpc-timeout's rounding); otherwise
// the next hop's status is returned as it is.
//
// Thread-safety: gRPC calls the handlers concurrently; the service's state
// is its immutable options, a thread-safe stub and EchoStats.
// Lifetime: must outlive the grpc::Server it is registered with; needs the
// server's reqctx interceptor (InstallServerInterceptors).
#ifndef REQCTX_SERVICES_ECHO_ECHO_SERVICE_H_
#define REQCTX_SERVICES_ECHO_ECHO_SERVICE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "drain/call_tracker.h"
#include "drain/shutdown_signal.h"
#include "integrations/postgres/postgres.h"
#include "interceptors/client_interceptor.h"
#include "interceptors/policy/retry.h"
#include "interceptors/policy/server_policy.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_stats.h"
#include "streams/stream_guard.h"
#include "streams/sync.h"

namespace reqctx::echo {

struct EchoServiceOptions {
  std::string name = "echo";  // Reported as Hop.service.
  std::string next{};         // host:port of the next hop; empty: last hop.
  int workers = 2;            // K worker threads per Echo call (>= 1).
  // libpq conninfo. Non-empty: an Echo call's work is instead one query,
  // `SELECT pg_sleep(work_ms / 1000.0)`, on this PostgreSQL server, bound
  // to the call's Context (a cancel or deadline stops it on the server),
  // through a postgres::Pool with `postgres_pool`'s limits (at most 10
  // connections by default; a call waits for one within its Context).
  // libpq takes whatever the conninfo leaves out (host, port, user,
  // password, ...) from the PG* environment variables and the password
  // file (PGPASSFILE, ~/.pgpass), e.g. "dbname=app".
  //
  // What a client sees of the database: the Context's own errors as they
  // are (DEADLINE_EXCEEDED, CANCELLED); an outcome the database layer cannot
  // know (postgres::IsOutcomeUnknown) UNKNOWN "database outcome unknown";
  // any other failure (connect errors, SQL errors) UNAVAILABLE "database
  // unavailable". No host, port, user or SQL text reaches a client: the
  // details go to `log`, passwords redacted (postgres::RedactSecrets).
  std::string postgres{};
  postgres::PoolOptions postgres_pool{};
  // Where database failures are logged, one line each; empty: stderr.
  std::function<void(std::string_view)> log{};
  // The most work_ms a request may ask for; more fails the call with
  // INVALID_ARGUMENT naming the limit (bounds the work one call can cause).
  int64_t max_work_ms = 3600 * 1000;
  // Production policies (issue 12), all off by default. `server_policy`
  // is enforced by EchoServer (ServerPolicy::Apply on this service); its
  // counts and the retry helper's appear in Stats.policy_counts.
  policy::ServerPolicyOptions server_policy{};
  // Calls to the next hop go through the retry helper when
  // retry.max_attempts > 1 or hedging is set (with `retry_channel`'s budget
  // and throttling); either way they carry the call's criticality.
  policy::RetryPolicy retry = NoRetries();
  policy::RetryChannelOptions retry_channel{};
  // The client interceptor of the channel to `next` (its outbound header
  // budget: interceptors/client_interceptor.h). EchoServer::Start refuses
  // invalid ones naming the field; an EchoService built directly with
  // invalid ones uses the defaults.
  ClientInterceptorOptions next_channel{};
  // Message-wait and idle timeouts of the streaming methods (EchoStream,
  // Collect, Chat), per method ("/echo.v1.Echo/Chat"); all off by default.
  // Each stream's Reads and Writes are bound to its call's Context
  // (streams/sync.h): a timeout, the deadline or a cancel ends a Read or a
  // Write blocked on a peer that does not read, the call ends with the
  // stream's status (a timeout: DEADLINE_EXCEEDED "reqctx stream
  // message-wait timeout (...) expired ... after N messages received, M
  // sent"), and the hop's call to the next hop is canceled with it.
  streams::MethodStreamOptions streams{};
  // Test hook (empty in production): called with the call's Context at the
  // start of each Echo call's work, before the workers (or the query); the
  // call waits while it runs. Tests hold calls in it to make them overlap
  // for certain. Must return by the Context's end at the latest.
  std::function<void(const Context&)> before_work{};

  static policy::RetryPolicy NoRetries() {
    policy::RetryPolicy p;
    p.max_attempts = 1;
    return p;
  }
  // True if any policy in `o` is on (EchoServer then applies it).
  static bool ServerPolicyOn(const policy::ServerPolicyOptions& o);
};

class EchoService final : public ::echo::v1::Echo::Service {
 public:
  explicit EchoService(EchoServiceOptions options);

  grpc::Status Echo(grpc::ServerContext* sc,
                    const ::echo::v1::EchoRequest* request,
                    ::echo::v1::EchoResponse* response) override;
  grpc::Status EchoStream(
      grpc::ServerContext* sc, const ::echo::v1::EchoRequest* request,
      grpc::ServerWriter<::echo::v1::EchoResponse>* writer) override;
  grpc::Status Collect(grpc::ServerContext* sc,
                       grpc::ServerReader<::echo::v1::EchoRequest>* reader,
                       ::echo::v1::EchoResponse* response) override;
  grpc::Status Chat(
      grpc::ServerContext* sc,
      grpc::ServerReaderWriter<::echo::v1::EchoResponse,
                               ::echo::v1::EchoRequest>* stream) override;
  grpc::Status Stats(grpc::ServerContext* sc,
                     const ::echo::v1::StatsRequest* request,
                     ::echo::v1::StatsResponse* response) override;

  const EchoStats& stats() const { return stats_; }
  policy::ServerPolicy& server_policy() { return server_policy_; }
  // OK, or why the PostgreSQL pool could not be made (invalid
  // postgres_pool: kInvalidArgument naming the field); EchoServer::Start
  // fails with it.
  const absl::Status& postgres_status() const { return postgres_status_; }
  // Server policy and retry counts together.
  policy::PolicyCountersSnapshot PolicyCounts() const;
  const std::string& name() const { return options_.name; }
  // The Echo calls in flight, for ending them with the shutdown cause
  // (EchoServer's drain; drain/call_tracker.h).
  drain::CallTracker& calls() { return calls_; }
  // This server's shutdown signal, shared with its glue
  // (ServerCallRules::shutdown) and calls(): a call the shutdown ends says
  // SERVER_SHUTDOWN, not CLIENT_CANCEL (drain/shutdown_signal.h).
  const std::shared_ptr<drain::ShutdownSignal>& shutdown_signal() const {
    return shutdown_;
  }

 private:
  ::echo::v1::Hop ArrivalHop(const Context& ctx) const;
  absl::Status RunWorkers(const Context& ctx, absl::Duration work);
  absl::Status QueryWork(const Context& ctx, int64_t work_ms);
  // `s` as a client may see it (see EchoServiceOptions::postgres); logs the
  // details of anything else.
  absl::Status DatabaseError(const Context& ctx, const absl::Status& s) const;
  using EchoStreamWriter =
      streams::ServerStream<grpc::ServerWriter<::echo::v1::EchoResponse>>;
  using CollectReader =
      streams::ServerStream<grpc::ServerReader<::echo::v1::EchoRequest>>;
  using ChatStream = streams::ServerStream<grpc::ServerReaderWriter<
      ::echo::v1::EchoResponse, ::echo::v1::EchoRequest>>;

  absl::Status GenerateStream(const Context& ctx, const ::echo::v1::Hop& hop,
                              const ::echo::v1::EchoRequest& request,
                              EchoStreamWriter& writer);
  absl::Status RelayStream(const Context& ctx, const ::echo::v1::Hop& hop,
                           const ::echo::v1::EchoRequest& request,
                           EchoStreamWriter& writer);
  // One streamed request's checks and work (work_ms on the workers).
  absl::Status RequestWork(const Context& ctx,
                           const ::echo::v1::EchoRequest& request);
  // Reads the caller's requests until its half-close, doing each one's work
  // and relaying it to the next hop if any; counts them in
  // hop->messages_received, the last message in *last. Fills *downstream
  // with the next hop's answer.
  absl::Status CollectRequests(grpc::ServerContext* sc, CollectReader& reader,
                               ::echo::v1::Hop* hop, std::string* last,
                               ::echo::v1::EchoResponse* downstream);
  absl::Status AnswerChat(grpc::ServerContext* sc, const ::echo::v1::Hop& hop,
                          ChatStream& stream);
  absl::Status RelayChat(grpc::ServerContext* sc, const ::echo::v1::Hop& hop,
                         ChatStream& stream);

  const EchoServiceOptions options_;
  const std::unique_ptr<::echo::v1::Echo::Stub> next_;  // Null: last hop.
  absl::Status postgres_status_;
  const std::unique_ptr<postgres::Pool> postgres_;  // Null: simulated work.
  policy::ServerPolicy server_policy_;
  policy::RetryChannelState retry_state_;
  EchoStats stats_;
  const std::shared_ptr<drain::ShutdownSignal> shutdown_ =
      std::make_shared<drain::ShutdownSignal>();
  drain::CallTracker calls_{shutdown_};
};

}  // namespace reqctx::echo

#endif  // REQCTX_SERVICES_ECHO_ECHO_SERVICE_H_
