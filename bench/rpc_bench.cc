// //bench:rpc_bench -- what reqctx's gRPC interceptors cost, against plain
// gRPC, and how fast a cancel crosses three hops. Real servers on 127.0.0.1,
// client and servers in this one process for both sides.
//
//   1. Throughput: unary Echo, sync-API server with a minimal handler (copy
//      the message; no simulated work, so the glue's cost is what differs),
//      `--callers` client threads with blocking stubs on one channel, the
//      same payload and the same per-call deadline on both sides. "plain" has
//      no interceptors; "noop" installs interceptors on server and channel
//      that only Proceed() (gRPC's own cost of having interceptors at all:
//      InterceptorBatchMethodsImpl, a hook pass per batch); "reqctx" installs
//      reqctx's on server and channel, the client calls through
//      NewClientContext(ctx) and the handler takes its Context with
//      FromServerContext (what every reqctx handler does). "reqctx over
//      noop" is thus reqctx's own cost. "metrics" is "reqctx" with the
//      reqctx_* Prometheus metrics recorded (EnableRpcMetrics), so "metrics
//      over reqctx" is the cost of recording them. "by hand" is plain gRPC
//      (no interceptors) doing the least any propagation does: the client
//      sets the deadline and adds a `traceparent` header itself (formatted
//      once per caller thread), the server parses it with reqctx's W3C parser
//      (ParseTraceparent) and makes its own Context with WithDeadline from
//      ServerContext::deadline(); "reqctx over by hand" is thus what the
//      interceptors (gRPC's machinery and reqctx's code) add to hand-written
//      propagation.
//      Phases are time-bounded and rotate plain/noop/reqctx/metrics (the order
//      rotates and flips every round, to cancel drift); each mode's median
//      over the rounds is reported. CPU per RPC is process CPU time (CLOCK_PROCESS_CPUTIME_ID:
//      client and server together) over the phase / RPCs completed; the
//      context switches per RPC are getrusage(RUSAGE_SELF) deltas over the
//      phase (voluntary: a thread blocked, e.g. waiting for a wake-up;
//      involuntary: preempted), also for client and server together (one
//      process), / RPCs completed.
//   2. Cancellation across 3 hops: client -> hop1 -> hop2 -> hop3, each hop
//      a server deriving its outbound call from the call's Context. The
//      client cancels its Context once hop3's handler is running; the trial's
//      time is from that cancel() to hop3's Context being done.
//      (a) callback API (the glue is notified by gRPC): hop3 timestamps in an
//          AfterFunc on its Context.
//      (b) sync API: services/echo's EchoServer chain (the shared watcher
//          polls IsCancelled()); hop3 is seen done when its EchoStats count
//          the request canceled (an upper bound: it adds the worker's exit).
//
//          Each hop works --sync_work_ms before calling the next, so a
//          cancel slower than that is counted as a failed trial.
// --profile_mode=plain|noop|by_hand|reqctx|metrics runs only that mode's
// throughput phases, to put one side under `perf record` or `perf stat`; with
// --profile_calls it makes a fixed number of calls (after
// --profile_warmup_calls unmeasured ones), the measured loop wrapped in
// callgrind's START/STOP_INSTRUMENTATION client requests (no-ops outside
// valgrind), which bench/rpc_instructions.sh uses to count instructions per
// RPC (client and server together: one process).
// Allocations: this binary replaces the global operator new/delete with
// counting ones (counting only while a measured --profile_calls loop runs, so
// the wall-clock phases pay nothing for it); allocations per RPC are the
// operator new calls of every thread (client, server and gRPC's own) over
// the measured loop / RPCs made.
//
// Output: a markdown table on stdout (bench/run_all.sh includes it), the
// numbers as JSON in --json_out (run_all.sh checks the targets
// against them), progress on stderr.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <time.h>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else  // Without valgrind's headers the instruction counts are unavailable.
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <latch>
#include <memory>
#include <new>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/core.h"
#include "interceptors/interceptors.h"
#include "w3c/traceparent.h"
#include "interceptors/observability.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"

ABSL_FLAG(double, phase_seconds, 3.0, "measured seconds per throughput phase");
ABSL_FLAG(double, warmup_seconds, 1.0, "unmeasured seconds before each phase");
ABSL_FLAG(int, rounds, 5,
          "rounds of plain/noop/reqctx phases; medians are reported");
ABSL_FLAG(int, callers, 8, "client threads (blocking stubs, one channel)");
ABSL_FLAG(int, payload_bytes, 64, "Echo message size");
ABSL_FLAG(int, cancel_trials, 1000, "3-hop cancellation trials per API");
ABSL_FLAG(std::string, profile_mode, "",
          "plain, noop, by_hand, reqctx or metrics: run only throughput "
          "phases of that mode (for perf, callgrind)");
ABSL_FLAG(int64_t, profile_calls, 0,
          "with --profile_mode: each caller makes exactly this many calls "
          "(no warm-up, no time bound) instead of timed phases, so two runs "
          "under `valgrind --tool=callgrind` with different counts give the "
          "instructions per RPC by difference (repeatable on a loaded "
          "machine)");
ABSL_FLAG(int64_t, profile_warmup_calls, 0,
          "with --profile_calls: each caller first makes this many calls "
          "outside the measured loop (not counted by callgrind nor in the "
          "allocations)");
ABSL_FLAG(int, sync_work_ms, 30,
          "sync 3-hop trials: work per hop before it calls the next");
ABSL_FLAG(std::string, json_out, "", "also write the numbers here as JSON");

// --- Counting allocations ---------------------------------------------------------
// The global operator new of this binary, counting while g_count_allocations
// is set (only around a measured --profile_calls loop: the timed phases pay
// one relaxed load per allocation). Every form forwards to malloc / free, as
// libstdc++'s own do. gRPC core's own allocations (gpr_malloc) are malloc
// calls, not operator new: they are not counted here.
namespace {
std::atomic<bool> g_count_allocations{false};
std::atomic<int64_t> g_allocations{0};

void* CountedAllocation(std::size_t n, std::size_t align) {
  if (g_count_allocations.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  if (n == 0) n = 1;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(n);
  } else if (posix_memalign(&p, align, n) != 0) {
    p = nullptr;
  }
  return p;
}

void* CountedNew(std::size_t n, std::size_t align) {
  void* p = CountedAllocation(n, align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return CountedNew(n, 0); }
void* operator new[](std::size_t n) { return CountedNew(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return CountedNew(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return CountedNew(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return CountedAllocation(n, 0);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return CountedAllocation(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a,
                   const std::nothrow_t&) noexcept {
  return CountedAllocation(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a,
                     const std::nothrow_t&) noexcept {
  return CountedAllocation(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t,
                     const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t,
                       const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using Clock = std::chrono::steady_clock;

// Every wait is bounded by this; a trial that hits it is counted as failed.
constexpr auto kWaitBound = std::chrono::seconds(10);
// Bounds each caller's loop whatever the phase length.
constexpr int64_t kMaxCallsPerCaller = 50'000'000;

void Log(const std::string& s) { std::fprintf(stderr, "rpc_bench: %s\n", s.c_str()); }

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// The process's context switches so far (every thread: client and server
// share this process): voluntary (the thread blocked, e.g. a futex wait for a
// wake-up) and involuntary (preempted).
struct Switches {
  int64_t voluntary = 0, involuntary = 0;
};

Switches ProcessSwitches() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {ru.ru_nvcsw, ru.ru_nivcsw};
}

double Micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

// Nearest-rank percentile; sorts `v`.
double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  return v[i];
}

double Median(std::vector<double> v) { return Percentile(v, 0.5); }

std::string Target(int port) { return absl::StrCat("127.0.0.1:", port); }

// What a throughput phase installs on its server and channel.
enum class Mode { kPlain, kNoop, kByHand, kReqctx, kMetrics };
constexpr Mode kModes[] = {Mode::kPlain, Mode::kNoop, Mode::kByHand,
                           Mode::kReqctx, Mode::kMetrics};
constexpr int kModeCount = 5;

bool WithReqctx(Mode m) { return m == Mode::kReqctx || m == Mode::kMetrics; }

const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kPlain: return "plain";
    case Mode::kNoop: return "noop";
    case Mode::kByHand: return "by_hand";
    case Mode::kReqctx: return "reqctx";
    case Mode::kMetrics: return "metrics";
  }
  return "?";
}

std::optional<Mode> ModeNamed(std::string_view name) {
  for (Mode m : kModes) {
    if (name == ModeName(m)) return m;
  }
  return std::nullopt;
}

// Interceptors that do nothing but let every batch through: what gRPC itself
// charges for a call that has interceptors (the baseline reqctx's own cost is
// measured against). PRE_SEND_CANCEL must not Proceed (gRPC's rule).
class NoopInterceptor final : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_CANCEL)) {
      return;
    }
    methods->Proceed();
  }
};

class NoopServerFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo*) override {
    return new NoopInterceptor();
  }
};

class NoopClientFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new NoopInterceptor();
  }
};

std::unique_ptr<grpc::Server> Serve(grpc::Service* service, Mode mode,
                                    int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           port);
  builder.RegisterService(service);
  if (WithReqctx(mode)) reqctx::InstallServerInterceptors(builder);
  if (mode == Mode::kNoop) {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        creators;
    creators.push_back(std::make_unique<NoopServerFactory>());
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  return builder.BuildAndStart();
}

std::unique_ptr<grpc::Server> Serve(grpc::Service* service, bool with_reqctx,
                                    int* port) {
  return Serve(service, with_reqctx ? Mode::kReqctx : Mode::kPlain, port);
}

std::shared_ptr<grpc::Channel> Connect(int port, Mode mode) {
  auto creds = grpc::InsecureChannelCredentials();
  std::shared_ptr<grpc::Channel> channel;
  switch (mode) {
    case Mode::kPlain:
    case Mode::kByHand:
      channel = grpc::CreateChannel(Target(port), creds);
      break;
    case Mode::kReqctx:
    case Mode::kMetrics:
      channel = reqctx::CreateChannel(Target(port), creds);
      break;
    case Mode::kNoop: {
      std::vector<std::unique_ptr<
          grpc::experimental::ClientInterceptorFactoryInterface>>
          factories;
      factories.push_back(std::make_unique<NoopClientFactory>());
      channel = grpc::experimental::CreateCustomChannelWithInterceptors(
          Target(port), creds, grpc::ChannelArguments(), std::move(factories));
      break;
    }
  }
  channel->WaitForConnected(std::chrono::system_clock::now() + kWaitBound);
  return channel;
}

std::shared_ptr<grpc::Channel> Connect(int port, bool with_reqctx) {
  return Connect(port, with_reqctx ? Mode::kReqctx : Mode::kPlain);
}

// --- 1. Throughput -------------------------------------------------------------

// By hand, the server side: the call's trace from its one `traceparent`
// header (reqctx's W3C parser) and a Context with the call's deadline, made
// by the handler itself (no interceptor). The handler keeps the CancelFunc
// for the call's length (its last copy's destruction cancels the Context).
std::pair<reqctx::Context, reqctx::CancelFunc> ByHandContext(
    const grpc::ServerContext* sc, std::optional<reqctx::TraceContext>* trace) {
  const auto& metadata = sc->client_metadata();
  if (auto it = metadata.find("traceparent"); it != metadata.end()) {
    *trace = reqctx::ParseTraceparent(
        std::string_view(it->second.data(), it->second.size()));
  }
  return reqctx::WithDeadline(reqctx::Background(),
                              absl::FromChrono(sc->deadline()));
}

// The minimal handler; with reqctx (or by hand) it also takes the call's
// Context, as any reqctx handler would, and answers with its error if it is
// already done.
class MinimalEcho final : public ::echo::v1::Echo::Service {
 public:
  explicit MinimalEcho(Mode mode) : mode_(mode) {}
  grpc::Status Echo(grpc::ServerContext* sc, const EchoRequest* request,
                    EchoResponse* response) override {
    if (WithReqctx(mode_)) {
      reqctx::Context ctx = reqctx::FromServerContext(sc);
      if (absl::Status err = ctx.Err(); !err.ok()) {
        return reqctx::ToGrpcStatus(err);
      }
    } else if (mode_ == Mode::kByHand) {
      std::optional<reqctx::TraceContext> trace;
      auto [ctx, cancel] = ByHandContext(sc, &trace);
      if (absl::Status err = ctx.Err(); !err.ok()) {
        return reqctx::ToGrpcStatus(err);
      }
      if (!trace.has_value()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "by hand: no valid traceparent");
      }
    }
    response->set_message(request->message());
    return grpc::Status::OK;
  }

 private:
  const Mode mode_;
};

struct PhaseResult {
  double qps = 0, p50_us = 0, p99_us = 0, cpu_us_per_rpc = 0;
  // getrusage(RUSAGE_SELF) deltas over the measured phase / RPCs completed.
  double vcsw_per_rpc = 0, ivcsw_per_rpc = 0;
  int64_t rpcs = 0, errors = 0;
  // With --profile_calls: operator new calls (every thread) over the
  // measured loop / calls made; else -1 (not counted).
  double allocations_per_rpc = -1;
};

PhaseResult RunThroughputPhase(Mode mode) {
  const bool with_reqctx = WithReqctx(mode);
  if (mode == Mode::kMetrics) {
    reqctx::EnableRpcMetrics();
  } else {
    reqctx::DisableRpcMetrics();
  }
  MinimalEcho service(mode);
  int port = 0;
  std::unique_ptr<grpc::Server> server = Serve(&service, mode, &port);
  if (server == nullptr || port == 0) {
    Log("cannot start a server on 127.0.0.1");
    std::exit(1);
  }
  std::shared_ptr<grpc::Channel> channel = Connect(port, mode);
  std::unique_ptr<::echo::v1::Echo::Stub> stub =
      ::echo::v1::Echo::NewStub(channel);

  const auto phase = absl::ToChronoNanoseconds(
      absl::Seconds(absl::GetFlag(FLAGS_phase_seconds)));
  const auto warmup = absl::ToChronoNanoseconds(
      absl::Seconds(absl::GetFlag(FLAGS_warmup_seconds)));
  // Both sides send the same deadline (so the same grpc-timeout header), far
  // enough away never to fire; it bounds every call.
  const auto deadline_sys = std::chrono::system_clock::now() + warmup + phase +
                            std::chrono::seconds(30);
  auto [caller_ctx, cancel_callers] = reqctx::WithDeadline(
      reqctx::Background(), absl::FromChrono(deadline_sys));

  enum State { kWarmup, kMeasure, kStop };
  // --profile_calls: a fixed number of measured calls per caller, after
  // --profile_warmup_calls unmeasured ones.
  const int64_t fixed_calls = absl::GetFlag(FLAGS_profile_calls);
  const int64_t warmup_calls =
      fixed_calls > 0 ? std::max<int64_t>(0, absl::GetFlag(FLAGS_profile_warmup_calls))
                      : 0;
  const int64_t max_calls = fixed_calls > 0 ? fixed_calls : kMaxCallsPerCaller;
  std::atomic<int> state{fixed_calls > 0 && warmup_calls == 0 ? kMeasure
                                                              : kWarmup};
  const int callers = std::max(1, absl::GetFlag(FLAGS_callers));
  std::vector<std::vector<double>> latencies(callers);
  std::vector<int64_t> errors(callers, 0);
  EchoRequest request;
  request.set_message(std::string(absl::GetFlag(FLAGS_payload_bytes), 'x'));
  // --profile_calls: every caller has made its warm-up calls (warmed), then
  // the measured loop starts for all at once (go).
  std::latch warmed(callers), go(1);

  std::vector<std::thread> threads;
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&, i, ctx = caller_ctx] {
      std::vector<double>& lat = latencies[i];
      lat.reserve(1 << 16);
      EchoResponse response;
      // By hand: the caller's trace, its header formatted once (a service
      // propagating by hand holds its request's trace the same way).
      const std::string traceparent = reqctx::FormatTraceparent(
          {.trace_id = absl::StrFormat("%032x", i + 1),
           .span_id = absl::StrFormat("%016x", i + 1),
           .sampled = true});
      auto call = [&]() -> grpc::Status {
        if (with_reqctx) {
          std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
          return stub->Echo(cc.get(), request, &response);
        }
        grpc::ClientContext cc;
        cc.set_deadline(deadline_sys);
        if (mode == Mode::kByHand) cc.AddMetadata("traceparent", traceparent);
        return stub->Echo(&cc, request, &response);
      };
      for (int64_t n = 0; n < warmup_calls; ++n) {
        if (const grpc::Status s = call(); !s.ok()) {
          ++errors[i];
          if (errors[i] == 1) {
            Log(absl::StrCat(ModeName(mode), ": warm-up call failed: ",
                             s.error_message()));
          }
        }
      }
      if (fixed_calls > 0) {
        warmed.count_down();
        go.wait();
      }
      for (int64_t n = 0; n < max_calls; ++n) {
        if (state.load(std::memory_order_relaxed) == kStop) break;
        const Clock::time_point start = Clock::now();
        const grpc::Status s = call();
        const Clock::time_point end = Clock::now();
        if (state.load(std::memory_order_relaxed) != kMeasure) continue;
        if (s.ok()) {
          lat.push_back(Micros(end - start));
        } else if (++errors[i] == 1) {
          Log(absl::StrCat(ModeName(mode), ": call failed: ", s.error_message()));
        }
      }
    });
  }
  if (fixed_calls == 0) std::this_thread::sleep_for(warmup);
  if (fixed_calls > 0) warmed.wait();
  int64_t allocations0 = 0;
  if (fixed_calls > 0) {
    // Only the measured loop is counted: callgrind (run with
    // --instr-atstart=no) from here to the STOP below, and operator new.
    CALLGRIND_START_INSTRUMENTATION;
    allocations0 = g_allocations.load();
    g_count_allocations.store(true);
  }
  const double cpu0 = ProcessCpuSeconds();
  const Switches sw0 = ProcessSwitches();
  const Clock::time_point t0 = Clock::now();
  state.store(kMeasure);
  if (fixed_calls == 0) {
    std::this_thread::sleep_for(phase);
    state.store(kStop);
  } else {
    go.count_down();
    for (std::thread& t : threads) t.join();
  }
  const Clock::time_point t1 = Clock::now();
  const double cpu1 = ProcessCpuSeconds();
  const Switches sw1 = ProcessSwitches();
  int64_t allocations = -1;
  if (fixed_calls > 0) {
    g_count_allocations.store(false);
    allocations = g_allocations.load() - allocations0;
    CALLGRIND_STOP_INSTRUMENTATION;
  }
  if (fixed_calls == 0) {
    for (std::thread& t : threads) t.join();
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server->Wait();

  PhaseResult r;
  std::vector<double> all;
  for (int i = 0; i < callers; ++i) {
    all.insert(all.end(), latencies[i].begin(), latencies[i].end());
    r.errors += errors[i];
  }
  r.rpcs = static_cast<int64_t>(all.size());
  const double wall = std::chrono::duration<double>(t1 - t0).count();
  r.qps = r.rpcs / wall;
  r.cpu_us_per_rpc = r.rpcs > 0 ? (cpu1 - cpu0) * 1e6 / r.rpcs : 0;
  if (r.rpcs > 0) {
    r.vcsw_per_rpc =
        static_cast<double>(sw1.voluntary - sw0.voluntary) / r.rpcs;
    r.ivcsw_per_rpc =
        static_cast<double>(sw1.involuntary - sw0.involuntary) / r.rpcs;
  }
  if (allocations >= 0) {
    r.allocations_per_rpc =
        static_cast<double>(allocations) / (callers * fixed_calls);
  }
  r.p50_us = Percentile(all, 0.50);
  r.p99_us = Percentile(all, 0.99);
  return r;
}

// --- 2a. Cancellation, callback API ---------------------------------------------

// Records when the last hop's Context is done (one trial at a time).
class DoneProbe {
 public:
  // Called by the last hop's handler: the trial's call has arrived.
  void Arrived(reqctx::AfterFuncHandle handle) {
    std::lock_guard<std::mutex> lock(mu_);
    handle_ = std::move(handle);
    arrived_ = true;
    changed_.notify_all();
  }
  // Called from the AfterFunc, once the last hop's Context is done.
  void Done(Clock::time_point at) {
    std::lock_guard<std::mutex> lock(mu_);
    done_at_ = at;
    changed_.notify_all();
  }
  bool WaitArrived() {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, kWaitBound, [this] { return arrived_; });
  }
  std::optional<Clock::time_point> WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, kWaitBound,
                           [this] { return done_at_.has_value(); })) {
      return std::nullopt;
    }
    return done_at_;
  }
  // Between trials; the previous trial's AfterFunc has run (or never will).
  void Reset() {
    reqctx::AfterFuncHandle old;
    {
      std::lock_guard<std::mutex> lock(mu_);
      old = std::move(handle_);
      arrived_ = false;
      done_at_.reset();
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool arrived_ = false;
  std::optional<Clock::time_point> done_at_;
  reqctx::AfterFuncHandle handle_;
};

// A callback-API hop: relays Echo to the next hop under the call's Context,
// or (last hop) holds the call until its Context is done.
class CallbackRelay final : public ::echo::v1::Echo::CallbackService {
 public:
  CallbackRelay(std::shared_ptr<grpc::Channel> next, DoneProbe* probe)
      : next_(next ? ::echo::v1::Echo::NewStub(next) : nullptr), probe_(probe) {}

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* sc,
                                 const EchoRequest* request,
                                 EchoResponse* response) override {
    reqctx::Context ctx = reqctx::FromServerContext(sc);
    grpc::ServerUnaryReactor* reactor = sc->DefaultReactor();
    if (next_ == nullptr) {
      probe_->Arrived(reqctx::AfterFunc(ctx, [this, reactor, ctx] {
        probe_->Done(Clock::now());
        reactor->Finish(reqctx::ToGrpcStatus(ctx.Err()));
      }));
      return reactor;
    }
    struct Outbound {
      std::unique_ptr<grpc::ClientContext> cc;
      EchoResponse response;
    };
    auto* out = new Outbound{reqctx::NewClientContext(ctx), {}};
    next_->async()->Echo(out->cc.get(), request, &out->response,
                         [out, reactor, response](grpc::Status s) {
                           if (s.ok()) *response = std::move(out->response);
                           delete out;
                           reactor->Finish(s);
                         });
    return reactor;
  }

 private:
  const std::unique_ptr<::echo::v1::Echo::Stub> next_;
  DoneProbe* const probe_;
};

// Waits (bounded) for a callback-API client call to end.
class CallEnd {
 public:
  void Finished() {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    changed_.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, kWaitBound, [this] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool done_ = false;
};

struct CancelResult {
  double p50_us = 0, p99_us = 0, max_us = 0;
  int trials = 0, failed = 0;
};

CancelResult Summarize(std::vector<double> us, int failed) {
  CancelResult r;
  r.trials = static_cast<int>(us.size());
  r.failed = failed;
  r.p50_us = Percentile(us, 0.50);
  r.p99_us = Percentile(us, 0.99);
  r.max_us = us.empty() ? 0 : us.back();
  return r;
}

CancelResult RunCallbackCancel(int trials) {
  DoneProbe probe;
  CallbackRelay hop3(nullptr, &probe);
  int port3 = 0, port2 = 0, port1 = 0;
  std::unique_ptr<grpc::Server> s3 = Serve(&hop3, true, &port3);
  CallbackRelay hop2(Connect(port3, true), &probe);
  std::unique_ptr<grpc::Server> s2 = Serve(&hop2, true, &port2);
  CallbackRelay hop1(Connect(port2, true), &probe);
  std::unique_ptr<grpc::Server> s1 = Serve(&hop1, true, &port1);
  auto stub = ::echo::v1::Echo::NewStub(Connect(port1, true));

  std::vector<double> us;
  int failed = 0;
  EchoRequest request;
  request.set_message("cancel me");
  for (int i = 0; i < trials; ++i) {
    probe.Reset();
    auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(),
                                             absl::FromChrono(kWaitBound));
    std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
    EchoResponse response;
    CallEnd end;
    stub->async()->Echo(cc.get(), &request, &response,
                        [&end](grpc::Status) { end.Finished(); });
    if (!probe.WaitArrived()) {
      ++failed;
      cancel();
      end.Wait();
      continue;
    }
    const Clock::time_point t0 = Clock::now();
    cancel();
    std::optional<Clock::time_point> t1 = probe.WaitDone();
    if (!end.Wait() || !t1.has_value()) {
      ++failed;
      continue;
    }
    us.push_back(Micros(*t1 - t0));
  }
  for (grpc::Server* s : {s1.get(), s2.get(), s3.get()}) {
    s->Shutdown(std::chrono::system_clock::now());
    s->Wait();
  }
  return Summarize(std::move(us), failed);
}

// --- 2b. Cancellation, sync API (services/echo) ----------------------------------

CancelResult RunSyncCancel(int trials) {
  using reqctx::echo::EchoServer;
  using Snapshot = reqctx::echo::EchoStats::Snapshot;
  // One worker per hop: the last hop's request ends as soon as it notices.
  auto backend = EchoServer::Start({.name = "hop3", .workers = 1});
  if (!backend.ok()) return {};
  auto middle = EchoServer::Start(
      {.name = "hop2", .next = (*backend)->address(), .workers = 1});
  if (!middle.ok()) return {};
  auto frontend = EchoServer::Start(
      {.name = "hop1", .next = (*middle)->address(), .workers = 1});
  if (!frontend.ok()) return {};
  auto stub = ::echo::v1::Echo::NewStub(Connect((*frontend)->port(), true));
  const reqctx::echo::EchoStats& last = (*backend)->stats();
  auto idle = [](const Snapshot& s) { return s.active_requests == 0; };

  std::vector<double> us;
  int failed = 0;
  EchoRequest request;
  request.set_message("cancel me");
  // Each hop works this long before calling the next, so hop 3 is reached
  // after 2x and ends by itself after 3x: a cancel slower than this counts
  // as failed (hop 3 completes instead of being canceled).
  request.set_work_ms(absl::GetFlag(FLAGS_sync_work_ms));
  const absl::Duration bound = absl::FromChrono(kWaitBound);
  for (int i = 0; i < trials; ++i) {
    const Snapshot before = last.Get();
    auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), bound);
    std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
    EchoResponse response;
    CallEnd end;
    stub->async()->Echo(cc.get(), &request, &response,
                        [&end](grpc::Status) { end.Finished(); });
    if (!last.WaitUntil([](const Snapshot& s) { return s.active_workers > 0; },
                        bound)) {
      ++failed;
      cancel();
      end.Wait();
      continue;
    }
    const Clock::time_point t0 = Clock::now();
    cancel();
    bool seen = last.WaitUntil(
        [&](const Snapshot& s) {
          return s.finished_total() > before.finished_total();
        },
        bound);
    const Clock::time_point t1 = Clock::now();
    bool canceled = last.Get().canceled_total > before.canceled_total;
    bool ended = end.Wait() && (*frontend)->stats().WaitUntil(idle, bound) &&
                 (*middle)->stats().WaitUntil(idle, bound) &&
                 last.WaitUntil(idle, bound);
    if (!seen || !canceled || !ended) {
      ++failed;
      continue;
    }
    us.push_back(Micros(t1 - t0));
  }
  (*frontend)->Shutdown();
  (*middle)->Shutdown();
  (*backend)->Shutdown();
  return Summarize(std::move(us), failed);
}

// --- Report -----------------------------------------------------------------------

std::string Fmt(double v) {
  return v >= 100 ? absl::StrFormat("%.0f", v) : absl::StrFormat("%.3g", v);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int rounds = std::max(0, absl::GetFlag(FLAGS_rounds));
  const int cancel_trials = std::max(1, absl::GetFlag(FLAGS_cancel_trials));

  if (const std::string mode = absl::GetFlag(FLAGS_profile_mode); !mode.empty()) {
    const std::optional<Mode> m = ModeNamed(mode);
    if (!m.has_value()) {
      Log("--profile_mode must be plain, noop, by_hand, reqctx or metrics");
      return 2;
    }
    for (int r = 0; r < std::max(1, rounds); ++r) {
      PhaseResult p = RunThroughputPhase(*m);
      std::printf(
          "%s: %lld RPCs, %.0f QPS, p50 %.1f us, p99 %.1f us, %.2f us "
          "CPU/RPC, %.4f voluntary + %.4f involuntary context switches/RPC, "
          "%lld errors",
          mode.c_str(), static_cast<long long>(p.rpcs), p.qps, p.p50_us,
          p.p99_us, p.cpu_us_per_rpc, p.vcsw_per_rpc, p.ivcsw_per_rpc,
          static_cast<long long>(p.errors));
      if (p.allocations_per_rpc >= 0) {
        std::printf(", %.3f allocations/RPC", p.allocations_per_rpc);
      }
      std::printf("\n");
      if (p.errors > 0) return 1;
    }
    return 0;
  }

  // Throughput: the five modes back to back each round; the order rotates
  // and flips from round to round, so no mode always runs first or last, or
  // always after the same other mode.
  std::vector<PhaseResult> plain, noop, by_hand, with, metrics;
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < kModeCount; ++k) {
      const int slot = (r / 2) % 2 == 0 ? k : kModeCount - 1 - k;
      const Mode mode = kModes[(slot + r) % kModeCount];
      PhaseResult p = RunThroughputPhase(mode);
      Log(absl::StrFormat(
          "round %d %-6s: %.0f QPS, p50 %.1f us, p99 %.1f us, "
          "%.2f us CPU/RPC, %.4f + %.4f cs/RPC, %d errors",
          r + 1, ModeName(mode), p.qps, p.p50_us, p.p99_us, p.cpu_us_per_rpc,
          p.vcsw_per_rpc, p.ivcsw_per_rpc, p.errors));
      (mode == Mode::kPlain    ? plain
       : mode == Mode::kNoop   ? noop
       : mode == Mode::kByHand ? by_hand
       : mode == Mode::kReqctx ? with
                               : metrics)
          .push_back(p);
    }
  }
  auto median_of = [](const std::vector<PhaseResult>& v,
                       double PhaseResult::*field) {
    std::vector<double> xs;
    for (const PhaseResult& p : v) xs.push_back(p.*field);
    return Median(xs);
  };
  // Paired per round (adjacent phases share the machine's mood), then median.
  std::vector<double> qps_loss, cpu_extra, noop_loss, noop_extra,
      own_loss, own_extra, metrics_loss, metrics_extra, own_vcsw, own_ivcsw,
      noop_vcsw, noop_ivcsw, hand_loss, hand_extra;
  int64_t errors = 0;
  for (int r = 0; r < rounds; ++r) {
    qps_loss.push_back(100.0 * (1.0 - with[r].qps / plain[r].qps));
    cpu_extra.push_back(with[r].cpu_us_per_rpc - plain[r].cpu_us_per_rpc);
    noop_loss.push_back(100.0 * (1.0 - noop[r].qps / plain[r].qps));
    noop_extra.push_back(noop[r].cpu_us_per_rpc - plain[r].cpu_us_per_rpc);
    own_loss.push_back(100.0 * (1.0 - with[r].qps / noop[r].qps));
    own_extra.push_back(with[r].cpu_us_per_rpc - noop[r].cpu_us_per_rpc);
    metrics_loss.push_back(100.0 * (1.0 - metrics[r].qps / with[r].qps));
    metrics_extra.push_back(metrics[r].cpu_us_per_rpc - with[r].cpu_us_per_rpc);
    own_vcsw.push_back(with[r].vcsw_per_rpc - noop[r].vcsw_per_rpc);
    own_ivcsw.push_back(with[r].ivcsw_per_rpc - noop[r].ivcsw_per_rpc);
    noop_vcsw.push_back(noop[r].vcsw_per_rpc - plain[r].vcsw_per_rpc);
    noop_ivcsw.push_back(noop[r].ivcsw_per_rpc - plain[r].ivcsw_per_rpc);
    hand_loss.push_back(100.0 * (1.0 - with[r].qps / by_hand[r].qps));
    hand_extra.push_back(with[r].cpu_us_per_rpc - by_hand[r].cpu_us_per_rpc);
    errors += plain[r].errors + noop[r].errors + by_hand[r].errors +
              with[r].errors + metrics[r].errors;
  }

  Log(absl::StrCat("3-hop cancellation, callback API: ", cancel_trials, " trials"));
  CancelResult cb = RunCallbackCancel(cancel_trials);
  Log(absl::StrCat("3-hop cancellation, sync API: ", cancel_trials, " trials"));
  CancelResult sy = RunSyncCancel(cancel_trials);

  const double qps_p = median_of(plain, &PhaseResult::qps);
  const double qps_r = median_of(with, &PhaseResult::qps);
  const double cpu_p = median_of(plain, &PhaseResult::cpu_us_per_rpc);
  const double cpu_r = median_of(with, &PhaseResult::cpu_us_per_rpc);
  const double loss = Median(qps_loss);
  const double extra = Median(cpu_extra);
  const double qps_n = median_of(noop, &PhaseResult::qps);
  const double cpu_n = median_of(noop, &PhaseResult::cpu_us_per_rpc);
  const double qps_m = median_of(metrics, &PhaseResult::qps);
  const double cpu_m = median_of(metrics, &PhaseResult::cpu_us_per_rpc);
  const double qps_h = median_of(by_hand, &PhaseResult::qps);
  const double cpu_h = median_of(by_hand, &PhaseResult::cpu_us_per_rpc);

  std::printf(
      "Unary Echo on 127.0.0.1, sync-API server, minimal handler, %d-byte "
      "message, %d client threads (blocking stubs, one channel), client and "
      "server in one process; %d rounds of %.0f s per mode, alternating; "
      "median over rounds. The no-op interceptors only Proceed(): gRPC's own "
      "cost of interceptors, so reqctx over no-op is reqctx's own code; "
      "\"by hand\" is plain gRPC with the deadline and traceparent set by the "
      "client and parsed into a WithDeadline Context by the handler (the "
      "least any propagation costs); \"with metrics\" also records the "
      "reqctx_* Prometheus metrics.\n\n",
      absl::GetFlag(FLAGS_payload_bytes), absl::GetFlag(FLAGS_callers), rounds,
      absl::GetFlag(FLAGS_phase_seconds));
  std::printf(
      "| unary Echo | QPS | p50 us | p99 us | CPU us/RPC | voluntary cs/RPC "
      "| involuntary cs/RPC |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  auto mode_row = [&](const char* name, const std::vector<PhaseResult>& v) {
    std::printf("| %s | %.0f | %s | %s | %s | %.3f | %.3f |\n", name,
                median_of(v, &PhaseResult::qps),
                Fmt(median_of(v, &PhaseResult::p50_us)).c_str(),
                Fmt(median_of(v, &PhaseResult::p99_us)).c_str(),
                Fmt(median_of(v, &PhaseResult::cpu_us_per_rpc)).c_str(),
                median_of(v, &PhaseResult::vcsw_per_rpc),
                median_of(v, &PhaseResult::ivcsw_per_rpc));
  };
  mode_row("plain gRPC", plain);
  mode_row("gRPC with no-op interceptors", noop);
  mode_row("by hand (plain gRPC, deadline + traceparent by hand)", by_hand);
  mode_row("reqctx interceptors", with);
  mode_row("reqctx interceptors with metrics", metrics);
  std::printf(
      "| no-op vs plain (median of per-round pairs) | %+.1f%% | | | %+.2f "
      "| %+.3f | %+.3f |\n",
      -Median(noop_loss), Median(noop_extra), Median(noop_vcsw),
      Median(noop_ivcsw));
  std::printf(
      "| reqctx vs no-op: reqctx's own cost (median of per-round pairs) "
      "| %+.1f%% | | | %+.2f | %+.3f | %+.3f |\n",
      -Median(own_loss), Median(own_extra), Median(own_vcsw),
      Median(own_ivcsw));
  std::printf(
      "| reqctx vs by hand (median of per-round pairs) | %+.1f%% | | | %+.2f "
      "| | |\n",
      -Median(hand_loss), Median(hand_extra));
  std::printf(
      "| reqctx vs plain (median of per-round pairs) | %+.1f%% | | | %+.2f "
      "| | |\n",
      -loss, extra);
  std::printf(
      "| metrics vs reqctx: the cost of recording (median of per-round "
      "pairs) | %+.1f%% | | | %+.2f | | |\n\n",
      -Median(metrics_loss), Median(metrics_extra));
  std::printf(
      "| 3-hop cancellation (client cancel -> hop 3 Context done) | trials | "
      "p50 us | p99 us | max us |\n");
  std::printf("|---|---:|---:|---:|---:|\n");
  std::printf("| callback API (pushed) | %d | %s | %s | %s |\n", cb.trials,
              Fmt(cb.p50_us).c_str(), Fmt(cb.p99_us).c_str(),
              Fmt(cb.max_us).c_str());
  std::printf(
      "| sync API, services/echo chain (polled; hop 3 seen via its stats) "
      "| %d | %s | %s | %s |\n",
      sy.trials,
      Fmt(sy.p50_us).c_str(), Fmt(sy.p99_us).c_str(), Fmt(sy.max_us).c_str());
  if (errors > 0 || cb.failed > 0 || sy.failed > 0) {
    std::printf("\nFailures: %lld throughput RPC errors, %d + %d cancellation "
                "trials timed out.\n",
                static_cast<long long>(errors), cb.failed, sy.failed);
  }

  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::ofstream json(path);
    json << absl::StrFormat(
        "{\"qps_plain\": %.1f, \"qps_reqctx\": %.1f, \"qps_loss_pct\": %.3f, "
        "\"cpu_us_plain\": %.3f, \"cpu_us_reqctx\": %.3f, "
        "\"cpu_extra_us\": %.3f, \"rpc_errors\": %d, "
        "\"qps_noop\": %.1f, \"cpu_us_noop\": %.3f, "
        "\"noop_qps_loss_pct\": %.3f, \"noop_cpu_extra_us\": %.3f, "
        "\"reqctx_over_noop_qps_loss_pct\": %.3f, "
        "\"reqctx_over_noop_cpu_extra_us\": %.3f, "
        "\"qps_metrics\": %.1f, \"cpu_us_metrics\": %.3f, "
        "\"metrics_over_reqctx_qps_loss_pct\": %.3f, "
        "\"metrics_over_reqctx_cpu_extra_us\": %.3f, "
        "\"vcsw_per_rpc_plain\": %.4f, \"vcsw_per_rpc_noop\": %.4f, "
        "\"vcsw_per_rpc_reqctx\": %.4f, \"ivcsw_per_rpc_plain\": %.4f, "
        "\"ivcsw_per_rpc_noop\": %.4f, \"ivcsw_per_rpc_reqctx\": %.4f, "
        "\"reqctx_over_noop_vcsw_per_rpc\": %.4f, "
        "\"reqctx_over_noop_ivcsw_per_rpc\": %.4f, "
        "\"qps_by_hand\": %.1f, \"cpu_us_by_hand\": %.3f, "
        "\"reqctx_over_by_hand_qps_loss_pct\": %.3f, "
        "\"reqctx_over_by_hand_cpu_extra_us\": %.3f, "
        "\"cancel_callback\": {\"trials\": %d, \"failed\": %d, "
        "\"p50_us\": %.1f, \"p99_us\": %.1f}, "
        "\"cancel_sync\": {\"trials\": %d, \"failed\": %d, "
        "\"p50_us\": %.1f, \"p99_us\": %.1f}}\n",
        qps_p, qps_r, loss, cpu_p, cpu_r, extra, errors, qps_n, cpu_n,
        Median(noop_loss), Median(noop_extra), Median(own_loss),
        Median(own_extra), qps_m, cpu_m, Median(metrics_loss),
        Median(metrics_extra), median_of(plain, &PhaseResult::vcsw_per_rpc),
        median_of(noop, &PhaseResult::vcsw_per_rpc),
        median_of(with, &PhaseResult::vcsw_per_rpc),
        median_of(plain, &PhaseResult::ivcsw_per_rpc),
        median_of(noop, &PhaseResult::ivcsw_per_rpc),
        median_of(with, &PhaseResult::ivcsw_per_rpc), Median(own_vcsw),
        Median(own_ivcsw), qps_h, cpu_h, Median(hand_loss), Median(hand_extra),
        cb.trials, cb.failed,
        cb.p50_us, cb.p99_us, sy.trials, sy.failed, sy.p50_us, sy.p99_us);
  }
  return 0;
}
