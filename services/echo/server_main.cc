// echo server: serves echo.v1.Echo on --bind_address (127.0.0.1 unless told
// otherwise) until SIGINT or SIGTERM.
//
//   server --name=backend --port=0 [--bind_address=127.0.0.1]
//          [--next=HOST:PORT] [--workers=2]
//          [--postgres="host=127.0.0.1 port=5432 user=postgres" |
//           --postgres_conninfo_file=PATH] [--postgres_max_connections=10]
//          [--max_work_ms=3600000] [--shutdown_grace_ms=0]
//          [--metrics_port=9464] [--metrics_address=127.0.0.1]
//          [--orphan_threshold_ms=1000] [--call_log] [--behind_envoy]
//
// With --metrics_port (0: a free port) it records reqctx's metrics and serves
// them for Prometheus at http://ADDRESS:PORT/metrics, printing "metrics on
// ADDRESS:PORT". Handlers and workers still running --orphan_threshold_ms
// after their Context is done are logged once on stderr and counted (0
// turns the detector off). --call_log writes one JSON line per finished call
// to stderr. Log lines (database details, orphan reports, the drain) go to
// stderr through spdlog with the request's trace_id, span_id, method and
// budget_ms (logging/spdlog.h).
//
// PostgreSQL: the conninfo comes from --postgres (no password allowed: the
// command line is readable by every local user; the server exits 1 naming
// the safer ways) or from --postgres_conninfo_file; libpq takes what it
// leaves out from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE and the
// password file (PGPASSFILE, ~/.pgpass). At most --postgres_max_connections
// (10) are open at once. Clients see UNAVAILABLE "database unavailable" (or
// UNKNOWN "database outcome unknown"); details go to stderr, passwords
// redacted.
// --bind_address takes an IPv4 address (0.0.0.0: every interface) or an
// IPv6 one ([::1], [::]); anything else (a host name) exits 1 naming it.
// Prints "NAME listening on HOST:PORT" once serving. A request asking for
// more than --max_work_ms of work fails with INVALID_ARGUMENT naming the
// limit. It serves grpc.health.v1.Health (--health_check). On
// SIGINT/SIGTERM it drains: health NOT_SERVING at once, calls still served
// for --drain_ms, then new calls refused (UNAVAILABLE), in-flight calls run
// for up to --shutdown_grace_ms, the rest canceled with the cause "server
// shutting down" (their Contexts end, so do their calls to --next; their
// clients get UNAVAILABLE), then it waits for their handlers and exits 0. A second SIGINT/SIGTERM
// while that shutdown is still going (a hung handler, a long grace) exits at
// once with status 1, without waiting for anything.
// --propagation_header_budget (default 4096) bounds the traceparent,
// tracestate and baggage a call to --next carries (trimmed to fit), so a
// huge incoming baggage never makes the next hop reset the shared channel;
// an invalid value exits 1 naming it.
// Bounds on by default (issue 19; services/echo/echo_server.h): at most
// --max_concurrency=64 calls run at once, --max_queue=64 wait, the rest get
// RESOURCE_EXHAUSTED with grpc-retry-pushback-ms; gRPC runs at most
// --max_threads=200 server threads (0 turns each bound off).
// --behind_envoy: Envoy is in front; a call's deadline is the smaller of
// grpc-timeout and Envoy's x-envoy-expected-rq-timeout-ms.
// --criticality_trust (all, none, or peer ranges) says whose `criticality`
// baggage member is believed (--untrusted_criticality for the others).
// Production policies (issue 12), off by default: --min_budget_ms,
// --learned_min_budget_quantile/--learned_warmup, --reply_margin_ms,
// --default_deadline_ms, --max_deadline_ms, --expected_handling_ms
// (server), --retry_max_attempts, --retry_budget,
// --retry_attempt_timeout_ms, --retry_backoff_ms,
// --retry_expected_latency_ms, --hedging_delay_ms, --hedging_learned_quantile/
// --hedging_learned_warmup/--hedging_min_delay_ms/--hedging_max_delay_ms
// (calls to --next). Their
// counts are in Stats.policy_counts and printed at exit.
// Streaming calls (EchoStream, Collect, Chat) have every Read and Write
// bound to their Context; --stream_message_wait_ms and --stream_idle_ms
// (0: off) end a stalled stream with DEADLINE_EXCEEDED naming the timeout,
// --stream_timeouts sets them per method (Chat=500/0,Collect=2000/10000).
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"
#include "interceptors/observability.h"
#include "interceptors/policy/policy_counters.h"
#include "limits/limit_options.h"
#include "logging/spdlog.h"
#include "metrics/metrics.h"
#include "metrics/metrics_server.h"
#include "services/echo/echo_server.h"

ABSL_FLAG(std::string, name, "echo", "service name reported in each Hop");
ABSL_FLAG(std::string, bind_address, "127.0.0.1",
          "address to listen on: IPv4 (0.0.0.0: every interface) or IPv6 "
          "([::1], [::]) -- for servers on separate hosts");
ABSL_FLAG(int, port, 0, "port on --bind_address (0: pick a free one)");
ABSL_FLAG(std::string, next, "", "host:port of the next hop (empty: none)");
ABSL_FLAG(int, workers, 2, "worker threads per Echo call");
ABSL_FLAG(std::string, postgres, "",
          "libpq conninfo without a password (refused: the command line is "
          "public): do each Echo call's work as SELECT pg_sleep(work_ms / "
          "1000.0) on this PostgreSQL server, bound to the call's Context; "
          "what it leaves out comes from PG* variables and PGPASSFILE, e.g. "
          "--postgres=dbname=app");
ABSL_FLAG(std::string, postgres_conninfo_file, "",
          "read the libpq conninfo (may hold a password) from this file "
          "instead of --postgres");
ABSL_FLAG(int64_t, postgres_max_connections, 10,
          "most PostgreSQL connections open at once (>= 1); calls beyond "
          "wait for one within their deadline");
ABSL_FLAG(int64_t, max_work_ms, 3600 * 1000,
          "most work_ms one request may ask for (more: INVALID_ARGUMENT)");
// Production policies (issue 12); all off by default. See docs/production.md.
ABSL_FLAG(int64_t, min_budget_ms, 0,
          "refuse (DEADLINE_EXCEEDED, before the handler) calls with less "
          "than this left of their deadline");
ABSL_FLAG(double, learned_min_budget_quantile, 0,
          "also refuse calls with less left than this quantile (e.g. 0.9) of "
          "recent handling times, after --learned_warmup calls (0: off)");
ABSL_FLAG(int, learned_warmup, 100,
          "handled calls before the learned minimum budget acts");
ABSL_FLAG(int64_t, reply_margin_ms, 0,
          "the handler's deadline is this much earlier than the call's");
ABSL_FLAG(int64_t, default_deadline_ms, 0,
          "deadline for calls that have none (0: none)");
ABSL_FLAG(int64_t, max_deadline_ms, 0,
          "cap on incoming deadlines (0: no cap)");
ABSL_FLAG(int, max_concurrency, reqctx::echo::kDefaultMaxConcurrency,
          "calls run at once (Stats exempt); more wait in a deadline-aware "
          "queue or are shed with RESOURCE_EXHAUSTED and "
          "grpc-retry-pushback-ms (0: no limit)");
ABSL_FLAG(int, max_queue, reqctx::echo::kDefaultMaxQueue,
          "calls that may wait for a slot, each holding a gRPC thread (-1: "
          "4 x --max_concurrency)");
ABSL_FLAG(int, max_threads, reqctx::echo::kDefaultMaxThreads,
          "most threads gRPC's server may run (grpc::ResourceQuota); past "
          "it gRPC answers RESOURCE_EXHAUSTED itself (0: no bound)");
ABSL_FLAG(int64_t, expected_handling_ms, 1,
          "handling time the shedder assumes until it has measured one");
ABSL_FLAG(std::string, criticality_trust, "all",
          "whose `criticality` (in the W3C baggage header) the server "
          "believes: all (every caller: a server behind a trusted edge), "
          "none (no caller: the edge; calls get --untrusted_criticality), or "
          "a comma-separated list of peer address ranges (10.0.0.0/8,::1)");
ABSL_FLAG(std::string, untrusted_criticality, "default",
          "criticality of a call whose caller is not trusted: default, "
          "sheddable or critical");
ABSL_FLAG(int, retry_max_attempts, 1,
          "attempts per call to --next (1: no retries)");
ABSL_FLAG(double, retry_budget, 0.1,
          "retries at most this fraction of calls to --next (plus 10/s)");
ABSL_FLAG(int64_t, retry_attempt_timeout_ms, 0,
          "cap on each attempt's deadline (0: the call's deadline)");
ABSL_FLAG(int64_t, retry_backoff_ms, 10, "first retry backoff");
ABSL_FLAG(int64_t, retry_expected_latency_ms, 0,
          "no attempt when less than this is left of the deadline");
ABSL_FLAG(int64_t, hedging_delay_ms, 0,
          "start another attempt after this long without an answer (0: no "
          "hedging)");
ABSL_FLAG(double, hedging_learned_quantile, 0,
          "hedge calls to --next after this quantile of their recent attempt "
          "latencies, e.g. 0.95 (0: off); until --hedging_learned_warmup "
          "latencies are seen, --hedging_delay_ms (or no hedge)");
ABSL_FLAG(int, hedging_learned_warmup, 50,
          "attempt latencies seen before the learned hedging delay is used");
ABSL_FLAG(int64_t, hedging_min_delay_ms, 1,
          "lower bound of the learned hedging delay");
ABSL_FLAG(int64_t, hedging_max_delay_ms, 1000,
          "upper bound of the learned hedging delay");
ABSL_FLAG(int64_t, propagation_header_budget, 4096,
          "bytes of traceparent, tracestate and baggage a call to --next may "
          "carry (name + value + 32 per header; baggage and tracestate are "
          "trimmed to fit); keep it well under the next hop's metadata limit "
          "(gRPC's default: 8192 for all headers)");
ABSL_FLAG(int64_t, shutdown_grace_ms, 0,
          "on SIGTERM, how long in-flight calls may still run before they "
          "are canceled");
// Drain on SIGTERM (issue 24): health NOT_SERVING at once, calls still
// served for --drain_ms, then refused; see EchoServer::Shutdown.
ABSL_FLAG(int64_t, drain_ms, 0,
          "on SIGTERM, how long the server keeps serving after turning its "
          "grpc.health.v1.Health status NOT_SERVING, before refusing new "
          "calls (UNAVAILABLE) and starting --shutdown_grace_ms");
ABSL_FLAG(bool, health_check, true,
          "serve the standard grpc.health.v1.Health service");

// Streaming calls (issue 22): timeouts of EchoStream, Collect and Chat.
ABSL_FLAG(int64_t, stream_message_wait_ms, 0,
          "longest wait of a streaming call's Read for the next message; an "
          "expired wait ends the call with DEADLINE_EXCEEDED naming it (0: "
          "off)");
ABSL_FLAG(int64_t, stream_idle_ms, 60000,
          "longest time a streaming call may pass with no message in either "
          "direction (a Write blocked on a peer that does not read counts "
          "as idle); DEADLINE_EXCEEDED naming it (0: off). On by default so "
          "silent or non-reading peers cannot hold every concurrency slot "
          "for ever");
ABSL_FLAG(std::string, stream_timeouts, "",
          "per-method stream timeouts replacing the two above, "
          "METHOD=MESSAGE_WAIT_MS/IDLE_MS,... with METHOD EchoStream, Collect "
          "or Chat (0: off), e.g. Chat=500/0,Collect=2000/10000");

ABSL_FLAG(int, metrics_port, -1,
          "serve Prometheus metrics on this port (0: a free one; -1: off)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1",
          "interface for --metrics_port (0.0.0.0 for a remote Prometheus)");
ABSL_FLAG(int64_t, orphan_threshold_ms, 1000,
          "log and count handlers/workers still running this long after "
          "their Context is done (0: off)");
ABSL_FLAG(bool, call_log, false, "one JSON line per finished call on stderr");

// Behind proxies (issue 24, section 1).
ABSL_FLAG(bool, behind_envoy, false,
          "Envoy is in front: a call's deadline is the smaller of "
          "grpc-timeout and x-envoy-expected-rq-timeout-ms (malformed "
          "values ignored and counted)");
// Adaptive admission (issue 23): the limit algorithm and its parameters,
// criticality shares, queue-delay admission and the safety valves. One
// block; ApplyAdmissionFlags sets them on the server policy, ShedModeFrom-
// File reads the kill-switch file, and SIGUSR2 re-reads it (or, with no
// file, toggles enforce <-> off).
ABSL_FLAG(std::string, limit, "fixed",
          "concurrency limit algorithm: fixed (--max_concurrency), aimd, "
          "gradient (Netflix Gradient2) or vegas; the adaptive ones find the "
          "limit themselves");
ABSL_FLAG(int, limit_initial, 20, "adaptive limit before warm-up ends");
ABSL_FLAG(int, limit_min, 1, "smallest adaptive limit");
ABSL_FLAG(int, limit_max, 1000, "largest adaptive limit");
ABSL_FLAG(int, limit_warmup, 5,
          "samples (windows) an adaptive limit only learns from");
ABSL_FLAG(int64_t, limit_window_ms, 100,
          "an adaptive limit takes one sample per window of at least this");
ABSL_FLAG(int, limit_window_samples, 10, "calls a window needs to count");
ABSL_FLAG(double, aimd_backoff, 0.9, "AIMD: multiplier on a drop");
ABSL_FLAG(int64_t, aimd_timeout_ms, 0,
          "AIMD: handling time counted as a drop (0: deadlines hit only)");
ABSL_FLAG(double, gradient_smoothing, 0.2, "Gradient2: smoothing");
ABSL_FLAG(int, gradient_long_window, 600,
          "Gradient2: samples in the long-term average");
ABSL_FLAG(double, gradient_queue_size,
          reqctx::limits::Gradient2Options().queue_size,
          "Gradient2: calls the limit may exceed the no-queue estimate by "
          "(plus --gradient_queue_share x the limit)");
ABSL_FLAG(double, gradient_queue_share,
          reqctx::limits::Gradient2Options().queue_share,
          "Gradient2: share of the limit added to --gradient_queue_size");
ABSL_FLAG(double, vegas_alpha, reqctx::limits::VegasOptions().alpha,
          "Vegas: grow below alpha x log10(limit)");
ABSL_FLAG(double, vegas_beta, reqctx::limits::VegasOptions().beta,
          "Vegas: shrink above beta x log10(limit) queued calls");
ABSL_FLAG(double, vegas_probe_after_fall,
          reqctx::limits::VegasOptions().probe_after_fall,
          "Vegas: probe the no-load time (halving the limit) once decreases "
          "in a row cut the limit by this share (0: never)");
ABSL_FLAG(int, vegas_probe_multiplier, 30,
          "Vegas: re-learn the no-load time every this x limit samples");
ABSL_FLAG(std::string, shares, "",
          "guaranteed shares of the limit, sheddable,default,critical (e.g. "
          "0,0,0.9); empty: none");
ABSL_FLAG(int64_t, codel_target_ms, 0,
          "standing queue: refuse calls waiting longer than this (0: off)");
ABSL_FLAG(int64_t, codel_interval_ms, 100,
          "a queue not empty for this long is standing");
ABSL_FLAG(double, max_refused_share, 1,
          "refuse at most this share of the calls per --refusal_window_ms "
          "(1: no cap)");
ABSL_FLAG(int64_t, refusal_window_ms, 1000, "the refusal cap's window");
ABSL_FLAG(std::string, shed_mode, "enforce",
          "enforce, dark (decide and count, refuse nothing) or off (kill "
          "switch); SIGUSR2 changes it at run time");
ABSL_FLAG(std::string, shed_mode_file, "",
          "file holding enforce, dark or off: read at start and on each "
          "SIGUSR2 (without it SIGUSR2 toggles enforce <-> off)");

namespace {

// The mode named in the first word of `path`.
absl::StatusOr<reqctx::policy::ShedMode> ShedModeFromFile(
    const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("--shed_mode_file: cannot open ",
                                            path));
  }
  char word[16] = {};
  const int got = std::fscanf(f, "%15s", word);
  std::fclose(f);
  std::optional<reqctx::policy::ShedMode> m;
  if (got == 1) m = reqctx::policy::ParseShedMode(word);
  if (!m.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shed_mode_file: ", path, " must hold enforce, dark or off"));
  }
  return *m;
}

// Sets the admission flags on `o` (ServerPolicy::Validate checks ranges,
// naming the option field each flag sets).
absl::Status ApplyAdmissionFlags(reqctx::policy::ServerPolicyOptions& o) {
  reqctx::policy::MethodPolicy& p = o.defaults;
  std::optional<reqctx::limits::Algorithm> a =
      reqctx::limits::ParseAlgorithm(absl::GetFlag(FLAGS_limit));
  if (!a.has_value()) {
    return absl::InvalidArgumentError(
        "--limit must be fixed, aimd, gradient or vegas");
  }
  p.limit.algorithm = *a;
  reqctx::limits::LimitBounds b;
  b.initial = absl::GetFlag(FLAGS_limit_initial);
  b.min = absl::GetFlag(FLAGS_limit_min);
  b.max = absl::GetFlag(FLAGS_limit_max);
  b.warmup_samples = absl::GetFlag(FLAGS_limit_warmup);
  p.limit.aimd.bounds = p.limit.gradient.bounds = p.limit.vegas.bounds = b;
  p.limit.window.min_time = absl::Milliseconds(
      absl::GetFlag(FLAGS_limit_window_ms));
  p.limit.window.max_time = std::max(p.limit.window.max_time,
                                     p.limit.window.min_time);
  p.limit.window.min_samples = absl::GetFlag(FLAGS_limit_window_samples);
  p.limit.aimd.backoff_ratio = absl::GetFlag(FLAGS_aimd_backoff);
  p.limit.aimd.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_aimd_timeout_ms));
  p.limit.gradient.smoothing = absl::GetFlag(FLAGS_gradient_smoothing);
  p.limit.gradient.long_window = absl::GetFlag(FLAGS_gradient_long_window);
  p.limit.gradient.queue_size = absl::GetFlag(FLAGS_gradient_queue_size);
  p.limit.gradient.queue_share = absl::GetFlag(FLAGS_gradient_queue_share);
  p.limit.vegas.alpha = absl::GetFlag(FLAGS_vegas_alpha);
  p.limit.vegas.beta = absl::GetFlag(FLAGS_vegas_beta);
  p.limit.vegas.probe_after_fall =
      absl::GetFlag(FLAGS_vegas_probe_after_fall);
  p.limit.vegas.probe_multiplier = absl::GetFlag(FLAGS_vegas_probe_multiplier);
  if (const std::string shares = absl::GetFlag(FLAGS_shares); !shares.empty()) {
    std::vector<std::string> parts = absl::StrSplit(shares, ',');
    if (parts.size() != 3) {
      return absl::InvalidArgumentError(
          "--shares must be three numbers: sheddable,default,critical");
    }
    for (size_t i = 0; i < 3; ++i) {
      if (!absl::SimpleAtod(parts[i], &p.shares[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("--shares: '", parts[i], "' is not a number"));
      }
    }
  }
  p.codel_target = absl::Milliseconds(absl::GetFlag(FLAGS_codel_target_ms));
  p.codel_interval = absl::Milliseconds(absl::GetFlag(FLAGS_codel_interval_ms));
  p.max_refused_share = absl::GetFlag(FLAGS_max_refused_share);
  p.refusal_window = absl::Milliseconds(absl::GetFlag(FLAGS_refusal_window_ms));
  std::optional<reqctx::policy::ShedMode> mode =
      reqctx::policy::ParseShedMode(absl::GetFlag(FLAGS_shed_mode));
  if (!mode.has_value()) {
    return absl::InvalidArgumentError(
        "--shed_mode must be enforce, dark or off");
  }
  o.mode = *mode;
  if (const std::string file = absl::GetFlag(FLAGS_shed_mode_file);
      !file.empty()) {
    absl::StatusOr<reqctx::policy::ShedMode> m = ShedModeFromFile(file);
    if (!m.ok()) return m.status();
    o.mode = *m;
  }
  return reqctx::policy::ServerPolicy(o).Validate();
}

// SIGUSR2: the mode from --shed_mode_file, or enforce <-> off.
void OnShedModeSignal(reqctx::policy::ServerPolicy& policy) {
  using reqctx::policy::ShedMode;
  ShedMode next = policy.Mode() == ShedMode::kEnforce ? ShedMode::kOff
                                                       : ShedMode::kEnforce;
  if (const std::string file = absl::GetFlag(FLAGS_shed_mode_file);
      !file.empty()) {
    absl::StatusOr<ShedMode> m = ShedModeFromFile(file);
    if (!m.ok()) {
      absl::FPrintF(stderr, "echo server: %s (mode unchanged)\n",
                    m.status().ToString());
      return;
    }
    next = *m;
  }
  policy.SetMode(next);
  absl::PrintF("shed mode: %s\n", reqctx::policy::ShedModeName(next));
  std::fflush(stdout);
}

}  // namespace

namespace {

// A millisecond flag as a duration.
absl::Duration Ms(const absl::Flag<int64_t>& flag) {
  return absl::Milliseconds(absl::GetFlag(flag));
}

// A millisecond flag where 0 means "not set".
std::optional<absl::Duration> MsIfSet(const absl::Flag<int64_t>& flag) {
  const int64_t ms = absl::GetFlag(flag);
  if (ms == 0) return std::nullopt;
  return absl::Milliseconds(ms);
}

// InvalidArgument naming the first of the millisecond flags that is
// negative.
absl::Status CheckNotNegative(
    std::initializer_list<const absl::Flag<int64_t>*> flags) {
  for (const absl::Flag<int64_t>* f : flags) {
    if (absl::GetFlag(*f) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", absl::GetFlagReflectionHandle(*f).Name(),
                       " must be >= 0"));
    }
  }
  return absl::OkStatus();
}

// --criticality_trust and --untrusted_criticality as options;
// InvalidArgument naming the flag for a bad value (a malformed peer range
// is reported by EchoServer::Start, naming it).
absl::StatusOr<reqctx::policy::CriticalityTrustOptions> CriticalityTrustFlags() {
  using reqctx::policy::Criticality;
  using reqctx::policy::CriticalityTrust;
  reqctx::policy::CriticalityTrustOptions o;
  const std::string trust = absl::GetFlag(FLAGS_criticality_trust);
  if (trust == "all") {
    o.trust = CriticalityTrust::kEveryone;
  } else if (trust == "none") {
    o.trust = CriticalityTrust::kNobody;
  } else {
    o.trust = CriticalityTrust::kListedPeers;
    o.trusted_peers = absl::StrSplit(trust, ',');
  }
  const std::string untrusted = absl::GetFlag(FLAGS_untrusted_criticality);
  if (untrusted == "default") {
    o.untrusted = Criticality::kDefault;
  } else if (untrusted == "sheddable") {
    o.untrusted = Criticality::kSheddable;
  } else if (untrusted == "critical") {
    o.untrusted = Criticality::kCritical;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--untrusted_criticality: \"", untrusted,
                     "\" is not default, sheddable or critical"));
  }
  return o;
}

// Reports a start-up failure; main returns its result.
int Fail(const absl::Status& s) {
  absl::FPrintF(stderr, "echo server: %s\n", s.ToString());
  return 1;
}

// Calls f(name, value) for every policy counter, in order.
template <typename F>
void ForEachPolicyCount(const reqctx::policy::PolicyCountersSnapshot& counts,
                        F f) {
  for (size_t i = 0; i < reqctx::policy::kPolicyCounterCount; ++i) {
    f(std::string(reqctx::policy::PolicyCounterName(
          static_cast<reqctx::policy::PolicyCounter>(i))),
      counts.values[i]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Block the stop signals in every thread (gRPC's threads inherit this
  // mask) and take them synchronously with sigwait below. SIGUSR1 is how the
  // shutdown thread tells the main thread it is done. First thing in main,
  // so a SIGTERM during start-up waits for sigwait (a drain, exit 0)
  // instead of killing the process.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGUSR1);
  sigaddset(&stop_signals, SIGUSR2);  // shed mode (kill switch)
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::SetProgramUsageMessage(
      "echo server: --name=N --port=P [--next=host:port] [--workers=K] "
      "[--max_work_ms=MS] [--shutdown_grace_ms=MS] [--drain_ms=MS] "
      "[policy flags: "
      "--min_budget_ms --learned_min_budget_quantile --reply_margin_ms "
      "--default_deadline_ms --max_deadline_ms --max_concurrency "
      "--retry_max_attempts --retry_budget ...; see --help]");
  absl::ParseCommandLine(argc, argv);

  // Log lines (database details, orphan reports, the drain) go to stderr
  // through spdlog, each with the request's fields when one is current
  // (logging/spdlog.h): trace_id, span_id, method, budget_ms. stdout keeps
  // the plain lines scripts read ("listening on", "stopped").
  std::shared_ptr<spdlog::logger> log = std::make_shared<spdlog::logger>(
      absl::GetFlag(FLAGS_name),
      std::make_shared<spdlog::sinks::stderr_sink_mt>());
  reqctx::logging::UseContextPattern(
      *log, "[%Y-%m-%d %H:%M:%S.%e] [%n] [%l] %* %v");
  log->flush_on(spdlog::level::trace);

  std::unique_ptr<reqctx::MetricsServer> metrics;
  if (const int port = absl::GetFlag(FLAGS_metrics_port); port >= 0) {
    reqctx::EnableRpcMetrics();
    reqctx::MetricsServerOptions mo;
    mo.address = absl::GetFlag(FLAGS_metrics_address);
    mo.port = port;
    absl::StatusOr<std::unique_ptr<reqctx::MetricsServer>> m =
        reqctx::MetricsServer::Start(mo);
    if (!m.ok()) return Fail(m.status());
    metrics = std::move(*m);
  }
  if (const int64_t ms = absl::GetFlag(FLAGS_orphan_threshold_ms); ms > 0) {
    if (absl::Status s = reqctx::EnableOrphanReports(
            absl::Milliseconds(ms),
            [log](const std::string& line) { log->warn("{}", line); });
        !s.ok()) {
      return Fail(s);
    }
  }
  if (absl::GetFlag(FLAGS_call_log)) {
    reqctx::SetCallLogSink(reqctx::StderrJsonCallLogSink());
  }

  if (absl::Status s = CheckNotNegative(
          {&FLAGS_min_budget_ms, &FLAGS_reply_margin_ms,
           &FLAGS_default_deadline_ms, &FLAGS_max_deadline_ms,
           &FLAGS_expected_handling_ms, &FLAGS_retry_attempt_timeout_ms,
           &FLAGS_retry_backoff_ms, &FLAGS_retry_expected_latency_ms,
           &FLAGS_hedging_delay_ms, &FLAGS_hedging_min_delay_ms,
           &FLAGS_hedging_max_delay_ms, &FLAGS_shutdown_grace_ms,
           &FLAGS_drain_ms});
      !s.ok()) {
    return Fail(s);
  }
  reqctx::echo::EchoServerOptions options;
  options.name = absl::GetFlag(FLAGS_name);
  options.bind_address = absl::GetFlag(FLAGS_bind_address);
  options.port = absl::GetFlag(FLAGS_port);
  options.next = absl::GetFlag(FLAGS_next);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.log = [log](std::string_view line) { log->warn("{}", line); };
  options.shutdown_log = [log](std::string_view line) {
    log->info("{}", line);
  };
  absl::StatusOr<std::string> conninfo = reqctx::echo::PostgresConninfo(
      absl::GetFlag(FLAGS_postgres), absl::GetFlag(FLAGS_postgres_conninfo_file));
  if (!conninfo.ok()) return Fail(conninfo.status());
  options.postgres = *std::move(conninfo);
  if (const int64_t n = absl::GetFlag(FLAGS_postgres_max_connections); n < 1) {
    return Fail(absl::InvalidArgumentError(
        "--postgres_max_connections must be >= 1"));
  } else {
    options.postgres_pool.max_open = static_cast<size_t>(n);
    options.postgres_pool.max_idle = static_cast<size_t>(n);
  }
  options.max_work_ms = absl::GetFlag(FLAGS_max_work_ms);
  options.shutdown_grace = Ms(FLAGS_shutdown_grace_ms);
  options.drain_period = Ms(FLAGS_drain_ms);
  options.health_check = absl::GetFlag(FLAGS_health_check);
  options.next_channel.propagation_header_budget = static_cast<size_t>(
      std::max<int64_t>(0, absl::GetFlag(FLAGS_propagation_header_budget)));
  options.max_threads = absl::GetFlag(FLAGS_max_threads);
  reqctx::policy::MethodPolicy& p = options.server_policy.defaults;
  p.min_budget = Ms(FLAGS_min_budget_ms);
  p.learned_min_budget_quantile =
      absl::GetFlag(FLAGS_learned_min_budget_quantile);
  p.learned_warmup = absl::GetFlag(FLAGS_learned_warmup);
  p.reply_margin = Ms(FLAGS_reply_margin_ms);
  p.default_deadline = MsIfSet(FLAGS_default_deadline_ms);
  p.max_deadline = MsIfSet(FLAGS_max_deadline_ms);
  p.max_concurrency = absl::GetFlag(FLAGS_max_concurrency);
  p.max_queue = absl::GetFlag(FLAGS_max_queue);
  p.expected_handling = Ms(FLAGS_expected_handling_ms);
  if (absl::Status st = ApplyAdmissionFlags(options.server_policy);
      !st.ok()) {
    return Fail(st);
  }
  absl::StatusOr<reqctx::policy::CriticalityTrustOptions> trust =
      CriticalityTrustFlags();
  if (!trust.ok()) return Fail(trust.status());
  options.server_policy.criticality = *std::move(trust);
  options.server_policy.behind_envoy = absl::GetFlag(FLAGS_behind_envoy);
  options.retry.max_attempts = absl::GetFlag(FLAGS_retry_max_attempts);
  options.retry.attempt_timeout =
      MsIfSet(FLAGS_retry_attempt_timeout_ms).value_or(
          options.retry.attempt_timeout);
  options.retry.initial_backoff = Ms(FLAGS_retry_backoff_ms);
  options.retry.expected_latency = Ms(FLAGS_retry_expected_latency_ms);
  options.retry.hedging_delay = MsIfSet(FLAGS_hedging_delay_ms);
  options.retry_channel.ratio = absl::GetFlag(FLAGS_retry_budget);
  if (const double q = absl::GetFlag(FLAGS_hedging_learned_quantile); q != 0) {
    if (!(q > 0 && q <= 1) || absl::GetFlag(FLAGS_hedging_learned_warmup) < 1) {
      return Fail(absl::InvalidArgumentError(
          "--hedging_learned_quantile must be in (0, 1] and "
          "--hedging_learned_warmup >= 1"));
    }
    reqctx::policy::LearnedHedgingOptions h;
    h.quantile = q;
    h.warmup = static_cast<size_t>(absl::GetFlag(FLAGS_hedging_learned_warmup));
    h.min_delay = Ms(FLAGS_hedging_min_delay_ms);
    h.max_delay = Ms(FLAGS_hedging_max_delay_ms);
    options.retry.learned_hedging =
        std::make_shared<reqctx::policy::LearnedHedgingDelay>(h);
  }
  absl::StatusOr<reqctx::streams::MethodStreamOptions> stream_timeouts =
      reqctx::echo::StreamTimeoutFlags(
          absl::GetFlag(FLAGS_stream_message_wait_ms),
          absl::GetFlag(FLAGS_stream_idle_ms),
          absl::GetFlag(FLAGS_stream_timeouts));
  if (!stream_timeouts.ok()) return Fail(stream_timeouts.status());
  options.streams = *std::move(stream_timeouts);
  absl::StatusOr<std::unique_ptr<reqctx::echo::EchoServer>> server =
      reqctx::echo::EchoServer::Start(options);
  if (!server.ok()) return Fail(server.status());
  if (metrics != nullptr) {
    // The policies' own counters, read at each scrape as
    // reqctx_policy_events_total{event="shed_at_arrival"} and so on.
    const reqctx::echo::EchoServer* srv = server->get();
    (void)reqctx::metrics::Registry::Default().AddCallbackFamily(
        "reqctx_policy_events_total",
        "What the server policy and the retry helper did, by event "
        "(interceptors/policy/policy_counters.h).",
        reqctx::metrics::Type::kCounter, {"event"}, [srv] {
          std::vector<reqctx::metrics::Registry::Sample> samples;
          ForEachPolicyCount(srv->policy_counts(),
                             [&](std::string name, int64_t value) {
                               samples.push_back(
                                   {{std::move(name)},
                                    static_cast<double>(value)});
                             });
          return samples;
        });
    absl::PrintF("%s metrics on %s:%d\n", options.name,
                 absl::GetFlag(FLAGS_metrics_address), metrics->port());
  }
  absl::PrintF("%s listening on %s\n", options.name, (*server)->address());
  std::fflush(stdout);

  int signal_number = 0;
  do {
    sigwait(&stop_signals, &signal_number);
    if (signal_number == SIGUSR2) OnShedModeSignal((*server)->server_policy());
  } while (signal_number == SIGUSR1 ||  // Not ours to act on yet.
           signal_number == SIGUSR2);
  absl::PrintF("%s: signal %d, shutting down\n", options.name, signal_number);
  std::fflush(stdout);
  const pthread_t main_thread = pthread_self();
  std::thread stopper([&server, main_thread] {
    (*server)->Shutdown();
    pthread_kill(main_thread, SIGUSR1);
  });
  do {
    sigwait(&stop_signals, &signal_number);
  } while (signal_number == SIGUSR2);  // No mode changes while stopping.
  if (signal_number != SIGUSR1) {
    // The shutdown hangs (or takes its grace) and the operator insists.
    absl::PrintF("%s: second signal %d during shutdown, exiting now\n",
                 options.name, signal_number);
    std::fflush(stdout);
    std::_Exit(1);
  }
  stopper.join();
  metrics.reset();  // No scrape may read the server's counters past here.
  reqctx::echo::EchoStats::Snapshot s = (*server)->stats().Get();
  absl::PrintF(
      "%s: stopped (completed %d, canceled %d, deadline exceeded %d)\n",
      options.name, s.completed_total, s.canceled_total,
      s.deadline_exceeded_total);
  ForEachPolicyCount((*server)->policy_counts(),
                     [&](const std::string& name, int64_t value) {
                       if (value == 0) return;
                       absl::PrintF("%s: policy %s %d\n", options.name, name,
                                    value);
                     });
  return 0;
}
