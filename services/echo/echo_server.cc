#include "services/echo/echo_server.h"

#include <arpa/inet.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/strings/str_split.h"
#include "drain/shutdown_signal.h"
#include "interceptors/interceptors.h"
#include "logging/log_context.h"

namespace reqctx::echo {

absl::StatusOr<std::string> BindHost(std::string_view address) {
  // inet_pton reads a C string: an embedded NUL would hide what follows.
  std::string host(address.find('\0') == std::string_view::npos ? address
                                                                 : "");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') == std::string::npos) {
    in_addr v4;
    if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return host;
    host = "";  // Not IPv4, and not IPv6 either (no ':').
  }
  in6_addr v6;
  if (!host.empty() && inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return absl::StrCat("[", host, "]");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "bad bind address \"", absl::CEscape(absl::string_view(
                                  address.data(), address.size())),
      "\": want an IPv4 address (e.g. 127.0.0.1, 0.0.0.0) or an IPv6 one "
      "(e.g. [::1], [::])"));
}

absl::StatusOr<std::string> PostgresConninfo(std::string_view flag,
                                             std::string_view file) {
  if (!flag.empty() && !file.empty()) {
    return absl::InvalidArgumentError(
        "set --postgres or --postgres_conninfo_file, not both");
  }
  if (!flag.empty()) {
    if (postgres::RedactSecrets(flag) != flag) {
      return absl::InvalidArgumentError(
          "--postgres contains a password, which every local user can read "
          "in /proc/PID/cmdline: put the conninfo in "
          "--postgres_conninfo_file, or the password in PGPASSWORD or the "
          "password file (PGPASSFILE, ~/.pgpass)");
    }
    return std::string(flag);
  }
  if (file.empty()) return std::string();
  constexpr size_t kMaxBytes = 64 * 1024;
  const std::string path(file);
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--postgres_conninfo_file: cannot read ", path, ": ",
        std::strerror(errno)));
  }
  std::string text(kMaxBytes + 1, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), f));
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) {
    return absl::InvalidArgumentError(
        absl::StrCat("--postgres_conninfo_file: cannot read ", path));
  }
  if (text.size() > kMaxBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--postgres_conninfo_file: ", path, " is over ", kMaxBytes, " bytes"));
  }
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (trimmed.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--postgres_conninfo_file: ", path, " is empty"));
  }
  return std::string(trimmed);
}

namespace {

// A timeout flag's milliseconds as a stream timeout (0: off).
absl::StatusOr<absl::Duration> StreamTimeoutMs(int64_t ms,
                                               absl::string_view what) {
  if (ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be >= 0 (0: off), got ", ms));
  }
  return ms == 0 ? absl::InfiniteDuration() : absl::Milliseconds(ms);
}

}  // namespace

absl::StatusOr<streams::MethodStreamOptions> StreamTimeoutFlags(
    int64_t message_wait_ms, int64_t idle_ms, std::string_view per_method) {
  streams::StreamOptions defaults;
  absl::StatusOr<absl::Duration> wait =
      StreamTimeoutMs(message_wait_ms, "--stream_message_wait_ms");
  if (!wait.ok()) return wait.status();
  absl::StatusOr<absl::Duration> idle =
      StreamTimeoutMs(idle_ms, "--stream_idle_ms");
  if (!idle.ok()) return idle.status();
  defaults.message_wait = *wait;
  defaults.idle = *idle;
  streams::MethodStreamOptions options(defaults);
  if (per_method.empty()) return options;
  std::set<std::string> seen;
  for (absl::string_view entry : absl::StrSplit(
           absl::string_view(per_method.data(), per_method.size()), ',')) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--stream_timeouts: \"", absl::CEscape(entry), "\" ", why,
          " (want METHOD=MESSAGE_WAIT_MS/IDLE_MS, METHOD one of EchoStream, "
          "Collect, Chat; 0: off)"));
    };
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(entry, absl::MaxSplits('=', 1));
    std::pair<absl::string_view, absl::string_view> ms =
        absl::StrSplit(kv.second, absl::MaxSplits('/', 1));
    const std::string method(absl::StripAsciiWhitespace(kv.first));
    if (method != "EchoStream" && method != "Collect" && method != "Chat") {
      return bad("names no streaming method");
    }
    if (!seen.insert(method).second) return bad("repeats its method");
    int64_t entry_wait = 0;
    int64_t entry_idle = 0;
    if (!absl::SimpleAtoi(ms.first, &entry_wait) ||
        !absl::SimpleAtoi(ms.second, &entry_idle) || entry_wait < 0 ||
        entry_idle < 0) {
      return bad("needs two timeouts in ms, each >= 0");
    }
    streams::StreamOptions o;
    o.message_wait = *StreamTimeoutMs(entry_wait, "");
    o.idle = *StreamTimeoutMs(entry_idle, "");
    if (absl::Status s = options.Set("/echo.v1.Echo/" + method, o); !s.ok()) {
      return bad(s.message());
    }
  }
  return options;
}

policy::ServerPolicyOptions DefaultEchoServerPolicy() {
  policy::ServerPolicyOptions o;
  o.defaults.max_concurrency = kDefaultMaxConcurrency;
  o.defaults.max_queue = kDefaultMaxQueue;
  return o;
}

absl::StatusOr<std::unique_ptr<EchoServer>> EchoServer::Start(
    const EchoServerOptions& options) {
  absl::StatusOr<std::string> host = BindHost(options.bind_address);
  if (!host.ok()) return host.status();
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad port ", options.port));
  }
  if (options.workers < 1) {
    return absl::InvalidArgumentError("workers must be >= 1");
  }
  if (options.max_work_ms < 0) {
    return absl::InvalidArgumentError("max_work_ms must be >= 0");
  }
  if (options.max_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_threads must be >= 0 (0: no bound), got ",
                     options.max_threads));
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("shutdown_grace must be >= 0");
  }
  if (options.drain_period < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain_period must be >= 0");
  }
  if (options.retry.max_attempts < 1) {
    return absl::InvalidArgumentError("retry max_attempts must be >= 1");
  }
  if (!(options.retry_channel.ratio >= 0)) {
    return absl::InvalidArgumentError("retry budget must be >= 0");
  }
  if (absl::Status s = options.postgres_pool.Validate(); !s.ok()) return s;
  if (absl::Status s = ValidateClientInterceptorOptions(options.next_channel);
      !s.ok()) {
    return s;
  }
  EchoServiceOptions service_options;
  service_options.name = options.name;
  service_options.next = options.next;
  service_options.workers = options.workers;
  service_options.postgres = options.postgres;
  service_options.postgres_pool = options.postgres_pool;
  service_options.log = options.log;
  service_options.max_work_ms = options.max_work_ms;
  service_options.before_work = options.before_work;
  service_options.streams = options.streams;
  service_options.server_policy = options.server_policy;
  // Stats is monitoring: it must answer under overload, so the policies
  // leave it alone unless it has an entry of its own.
  service_options.server_policy.methods.try_emplace("/echo.v1.Echo/Stats");
  service_options.retry = options.retry;
  service_options.retry_channel = options.retry_channel;
  service_options.next_channel = options.next_channel;
  auto service = std::make_unique<EchoService>(std::move(service_options));
  // Invalid policies fail Start even when they would switch nothing on.
  if (absl::Status s = service->server_policy().Validate(); !s.ok()) {
    return s;
  }
  const bool policy_on =
      EchoServiceOptions::ServerPolicyOn(options.server_policy);
  if (policy_on) {
    if (absl::Status s = service->server_policy().Apply(service.get());
        !s.ok()) {
      return s;
    }
  }
  // Read by BuildAndStart (process-wide; see the header).
  if (options.health_check) grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::StrCat(*host, ":", options.port),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service.get());
  if (options.max_threads > 0) {
    grpc::ResourceQuota quota(absl::StrCat(options.name, "-threads"));
    quota.SetMaxThreads(options.max_threads);
    builder.SetResourceQuota(quota);
  }
  // The policy's per-call rules always: with no policy on they change no
  // deadline, and they still carry the incoming criticality into the
  // handler's Context, so it travels on to the next hop.
  // Each call's method goes in its Context for log lines
  // (logging/log_context.h).
  // The server's name labels its hop in the budget ledger; its shutdown
  // signal makes the calls its drain ends say SERVER_SHUTDOWN.
  ServerCallRules rules =
      logging::WithLogMethodRule(service->server_policy().CallRules());
  rules.ledger_host = options.name;
  rules.shutdown = service->shutdown_signal();
  InstallServerInterceptorsWithRules(builder, std::move(rules));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", *host, ":", options.port));
  }
  if (grpc::HealthCheckServiceInterface* health =
          server->GetHealthCheckService();
      health != nullptr) {
    health->SetServingStatus(true);  // "" (the whole server).
    health->SetServingStatus(::echo::v1::Echo::service_full_name(), true);
  }
  return std::unique_ptr<EchoServer>(new EchoServer(
      std::move(service), std::move(server), *std::move(host), port, options));
}

EchoServer::EchoServer(std::unique_ptr<EchoService> service,
                       std::unique_ptr<grpc::Server> server,
                       std::string host, int port,
                       const EchoServerOptions& options)
    : service_(std::move(service)),
      server_(std::move(server)),
      host_(std::move(host)),
      port_(port),
      shutdown_grace_(options.shutdown_grace),
      drain_period_(options.drain_period),
      shutdown_log_(options.shutdown_log) {}

void EchoServer::Log(std::string_view line) const {
  if (shutdown_log_) shutdown_log_(line);
}

EchoServer::~EchoServer() { Shutdown(); }

std::string EchoServer::address() const {
  return absl::StrCat(host_, ":", port_);
}

void EchoServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    // 1. NOT_SERVING at once, still serving for the drain period.
    if (grpc::HealthCheckServiceInterface* health =
            server_->GetHealthCheckService();
        health != nullptr) {
      health->SetServingStatus(false);  // Every service, "" included.
    }
    Log(absl::StrCat(name(), ": draining: health NOT_SERVING, refusing new "
                     "calls in ", absl::FormatDuration(drain_period_)));
    if (drain_period_ > absl::ZeroDuration()) absl::SleepFor(drain_period_);
    // 2. Refuse new calls; in-flight ones get the grace. gRPC cancels what
    // still runs kShutdownBackstop after it (the interceptor turns that
    // into canceled Contexts); Shutdown returns once no call is left.
    const absl::Time grace_end = absl::Now() + shutdown_grace_;
    Log(absl::StrCat(name(), ": refusing new calls; ",
                     service_->calls().in_flight(), " in flight, grace ",
                     absl::FormatDuration(shutdown_grace_)));
    std::thread stopper([this, grace_end] {
      drain::ShutdownServer(*server_, *service_->shutdown_signal(),
                            grace_end + kShutdownBackstop);
    });
    // 3. Then end the Echo calls (unary and streams) still running, with
    // the cause.
    if (!service_->calls().WaitIdle(grace_end)) {
      const size_t n = service_->calls().CancelAll();
      Log(absl::StrCat(name(), ": grace over: canceled ", n,
                       " call(s): server shutting down"));
    } else {
      // Calls the policy queue still admits end at once, with the cause.
      service_->calls().CancelAll();
    }
    stopper.join();
    server_->Wait();
    Log(absl::StrCat(name(), ": drained"));
  });
}

}  // namespace reqctx::echo
