// //bench:overload_bench -- goodput under overload with reqctx's
// deadline-aware load shedding, with a static or an adaptive concurrency
// limit (issue 12, section 4; issue 23, section 2).
//
// Server: a callback-API echo.v1.Echo service on 127.0.0.1 whose capacity
// is simulated and known: `--workers` simulated cores, each call holding
// one for `--work_ms` (a sleep, so the machine's own CPU is not what limits
// it; x (1 + `--jitter` x u), u uniform in [-1, 1] per call, for a spread of
// handling times as real handlers have), served from one FIFO queue -- what a plain server does: it takes
// every call and works through them in order, whether or not their callers
// still wait. Capacity = workers / work_ms calls/s, and the right
// concurrency limit is `workers`. Every figure is relative to that
// simulated capacity, not to what the machine manages at 1x.
// Configurations:
//   none         no ServerPolicy (plain server);
//   static-right max_concurrency = workers (the operator guessed right);
//   static-4x    max_concurrency = 4 x workers (guessed 4x too high);
//   aimd, gradient, vegas: the adaptive limit (MethodPolicy::limit) with
//                its defaults and no concurrency number; AIMD's latency
//                threshold is --aimd_timeout_factor x work_ms.
// Each has the deadline-aware queue (max_queue: 4 x the limit).
// Client: an open-loop generator (calls start on schedule whatever the
// answers) on the callback client API, each call with a `--deadline_ms`
// deadline. Goodput: calls that finished OK inside their deadline, per
// second; p99: latency of those good calls.
// Scenarios (--scenarios, comma-separated):
//   load      1x, 2x, 4x capacity, `--seconds` each;
//   capacity  2x (of full capacity) for 3 phases of `--phase_seconds`: the
//             simulated workers halved in phase 2, restored in phase 3;
//   slowdown  2x for 3 phases: handling time x5 in phase 2 (a slow
//             dependency; the right limit stays `workers`);
//   mixed     4x, `--critical_share` of the calls marked
//             criticality=critical, the rest sheddable (criticality shares:
//             critical 90%).
// Settling: the limit is read every 100 ms; a phase's settle time is how
// long after its start the limit entered [0.8, 1.2] x workers for good.
// Output: markdown tables on stdout (with the machine's load average),
// progress on stderr.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/server_policy.h"
#include "proto/echo.grpc.pb.h"

ABSL_FLAG(int, workers, 32, "simulated cores of the server");
ABSL_FLAG(int, work_ms, 80, "time each call holds a core");
ABSL_FLAG(double, jitter, 0,
          "spread of each call's work: x (1 + jitter x u), u uniform in "
          "[-1, 1] (a fixed-seed generator); in [0, 1)");
ABSL_FLAG(int, deadline_ms, 500, "deadline of every call");
ABSL_FLAG(double, seconds, 5.0,
          "measured seconds per load level (load, mixed)");
ABSL_FLAG(double, warmup_seconds, 3.0,
          "unmeasured seconds at the same load before each load level (load, "
          "mixed): the adaptive limits start at their initial 20; how fast "
          "they move is the capacity scenario's settle time");
ABSL_FLAG(double, phase_seconds, 10.0,
          "seconds per phase (capacity, slowdown)");
ABSL_FLAG(std::string, loads, "1,2,4", "load levels, x capacity (load)");
ABSL_FLAG(std::string, scenarios, "load,capacity,slowdown,mixed",
          "which scenarios to run");
ABSL_FLAG(std::string, configs, "none,static-right,static-4x,aimd,gradient,vegas",
          "which server configurations to run");
ABSL_FLAG(double, critical_share, 0.2,
          "share of critical calls in the mixed scenario");
ABSL_FLAG(double, aimd_timeout_factor, 1.1,
          "AIMD's latency threshold, in multiples of work_ms");
ABSL_FLAG(bool, trace, false,
          "print every 100 ms reading of the limit to stderr: config, phase, "
          "seconds into the phase, limit, in flight, queued, the "
          "algorithm's min/long/last handling time (ms), queue estimate and queue "
          "share");

namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
namespace policy = ::reqctx::policy;
namespace limits = ::reqctx::limits;

// `max` threads taking jobs from one FIFO queue, of which only the first
// `active` work (the simulated capacity, changed at run time); a job holds
// its thread for work x slowdown x (1 + jitter x u), u uniform in [-1, 1],
// then runs its completion.
class CorePool {
 public:
  CorePool(int max, absl::Duration work, double jitter)
      : work_(work), jitter_(jitter), active_(max) {
    for (int i = 0; i < max; ++i) threads_.emplace_back([this, i] { Loop(i); });
  }
  ~CorePool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Submit(std::function<void()> done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(done));
    }
    cv_.notify_all();
  }
  void SetActive(int n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      active_ = n;
    }
    cv_.notify_all();
  }
  void SetSlowdown(double x) {
    std::lock_guard<std::mutex> lock(mu_);
    slowdown_ = x;
  }

 private:
  void Loop(int index) {
    while (true) {
      std::function<void()> job;
      absl::Duration work;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return stop_ || (index < active_ && !jobs_.empty());
        });
        if (stop_) {
          if (jobs_.empty()) return;
        }
        job = std::move(jobs_.front());
        jobs_.pop_front();
        work = work_ * (slowdown_ * (1 + jitter_ * spread_(random_)));
      }
      absl::SleepFor(work);
      job();
    }
  }
  const absl::Duration work_;
  const double jitter_;
  std::mutex mu_;
  std::mt19937 random_{1};                                // Guarded by mu_.
  std::uniform_real_distribution<double> spread_{-1, 1};  // Guarded by mu_.
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // Guarded by mu_.
  int active_;                              // Guarded by mu_.
  double slowdown_ = 1;                     // Guarded by mu_.
  bool stop_ = false;                       // Guarded by mu_.
  std::vector<std::thread> threads_;
};

class BusyEcho final : public ::echo::v1::Echo::CallbackService {
 public:
  explicit BusyEcho(CorePool* pool) : pool_(pool) {}
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* sc,
                                 const EchoRequest* request,
                                 EchoResponse* response) override {
    response->set_message(request->message());
    grpc::ServerUnaryReactor* reactor = sc->DefaultReactor();
    pool_->Submit([reactor] { reactor->Finish(grpc::Status::OK); });
    return reactor;
  }

 private:
  CorePool* const pool_;
};

// The server policy of configuration `config`, or nullopt for "none".
std::optional<policy::ServerPolicyOptions> PolicyFor(const std::string& config) {
  const int workers = absl::GetFlag(FLAGS_workers);
  const absl::Duration work = absl::Milliseconds(absl::GetFlag(FLAGS_work_ms));
  if (config == "none") return std::nullopt;
  policy::ServerPolicyOptions o;
  policy::MethodPolicy& p = o.defaults;
  p.expected_handling = work;
  p.learned_warmup = 50;
  p.shares = {0, 0, 0.9};
  if (config == "static-right") {
    p.max_concurrency = workers;
  } else if (config == "static-4x") {
    p.max_concurrency = 4 * workers;
  } else if (std::optional<limits::Algorithm> a =
                 limits::ParseAlgorithm(config)) {
    p.limit.algorithm = *a;
    p.limit.aimd.timeout = work * absl::GetFlag(FLAGS_aimd_timeout_factor);
  } else {
    std::fprintf(stderr, "overload_bench: unknown config %s\n",
                 config.c_str());
    std::exit(2);
  }
  return o;
}

// One phase of a run: its offered load (x capacity), length, the server's
// simulated workers and slowdown during it.
struct Phase {
  double load;
  double seconds;
  int workers;
  double slowdown = 1;
};

struct PhaseResult {
  int64_t sent = 0;
  int64_t good = 0;
  int64_t refused = 0;  // RESOURCE_EXHAUSTED
  int64_t late = 0;     // DEADLINE_EXCEEDED, or OK after the deadline
  int64_t critical_sent = 0;
  int64_t critical_good = 0;
  int64_t critical_refused = 0;
  int64_t critical_late = 0;
  std::vector<absl::Duration> good_latency;
  // The limit read every 100 ms: (time since the phase began, limit).
  std::vector<std::pair<absl::Duration, int>> limits;
  double seconds = 0;
};

absl::Duration P99(std::vector<absl::Duration> v) {
  if (v.empty()) return absl::ZeroDuration();
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * 99 / 100)];
}

// Runs `phases` back to back against a fresh server of `config`.
std::vector<PhaseResult> Run(const std::string& config,
                             const std::vector<Phase>& phases,
                             double critical_share) {
  const int workers = absl::GetFlag(FLAGS_workers);
  const absl::Duration work = absl::Milliseconds(absl::GetFlag(FLAGS_work_ms));
  const absl::Duration deadline =
      absl::Milliseconds(absl::GetFlag(FLAGS_deadline_ms));
  const double capacity = workers / absl::ToDoubleSeconds(work);
  CorePool pool(workers, work, absl::GetFlag(FLAGS_jitter));
  BusyEcho service(&pool);
  std::optional<policy::ServerPolicyOptions> o = PolicyFor(config);
  policy::ServerPolicy policy(o.value_or(policy::ServerPolicyOptions()));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  if (o.has_value()) {
    if (absl::Status s = policy.Apply(&service); !s.ok()) {
      std::fprintf(stderr, "overload_bench: %s\n", s.ToString().c_str());
      std::exit(2);
    }
  }
  builder.RegisterService(&service);
  if (o.has_value()) {
    policy.InstallInterceptors(builder);
  } else {
    reqctx::InstallServerInterceptors(builder);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) std::abort();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());
  auto stub = ::echo::v1::Echo::NewStub(channel);

  struct Call {
    grpc::ClientContext cc;
    EchoRequest request;
    EchoResponse response;
    absl::Time start;
    size_t phase;
    bool critical;
  };
  std::mutex mu;
  std::condition_variable cv;
  int64_t outstanding = 0;
  std::vector<PhaseResult> results(phases.size());
  uint64_t n = 0;
  for (size_t ph = 0; ph < phases.size(); ++ph) {
    const Phase& phase = phases[ph];
    pool.SetActive(phase.workers);
    pool.SetSlowdown(phase.slowdown);
    const absl::Duration interval = absl::Seconds(1) / (capacity * phase.load);
    const absl::Time begin = absl::Now();
    const absl::Time end = begin + absl::Seconds(phase.seconds);
    absl::Time next = begin;
    absl::Time next_read = begin;
    while (next < end) {
      absl::Time now = absl::Now();
      if (now >= next_read && o.has_value()) {
        std::optional<policy::ShedderStats> s =
            policy.LimiterStats("/echo.v1.Echo/Echo");
        if (s.has_value() && absl::GetFlag(FLAGS_trace)) {
          const limits::LimitInputs& in = s->inputs;
          std::fprintf(stderr,
                       "trace %s %zu %.1f limit=%d running=%d queued=%d "
                       "min=%.0f long=%.0f last=%.0f queue=%.1f share=%.2f\n",
                       config.c_str(), ph + 1,
                       absl::ToDoubleSeconds(now - begin), s->limit,
                       s->running, s->queued,
                       absl::ToDoubleMilliseconds(in.min_rtt),
                       absl::ToDoubleMilliseconds(in.long_rtt),
                       absl::ToDoubleMilliseconds(in.last_rtt),
                       in.queue_estimate, in.queue_share);
        }
        std::lock_guard<std::mutex> lock(mu);
        results[ph].limits.emplace_back(now - begin, s ? s->limit : 0);
        next_read += absl::Milliseconds(100);
      }
      if (now < next) {
        absl::SleepFor(std::min(next - now, next_read - now));
        continue;
      }
      auto* call = new Call;
      call->start = next;  // Open loop: latency counts from the schedule.
      call->phase = ph;
      // Every 1/critical_share-th call is critical (evenly spread).
      call->critical = critical_share > 0 &&
                       static_cast<uint64_t>((n + 1) * critical_share) !=
                           static_cast<uint64_t>(n * critical_share);
      ++n;
      if (critical_share > 0) {
        call->cc.AddMetadata("baggage", call->critical
                                            ? "criticality=critical"
                                            : "criticality=sheddable");
      }
      call->cc.set_deadline(absl::ToChronoTime(next + deadline));
      call->request.set_message("x");
      {
        std::lock_guard<std::mutex> lock(mu);
        ++outstanding;
        ++results[ph].sent;
        if (call->critical) ++results[ph].critical_sent;
      }
      stub->async()->Echo(
          &call->cc, &call->request, &call->response,
          [&, call, deadline](grpc::Status s) {
            const absl::Duration latency = absl::Now() - call->start;
            std::lock_guard<std::mutex> lock(mu);
            PhaseResult& r = results[call->phase];
            if (s.ok() && latency <= deadline) {
              ++r.good;
              if (call->critical) ++r.critical_good;
              r.good_latency.push_back(latency);
            } else if (s.error_code() ==
                       grpc::StatusCode::RESOURCE_EXHAUSTED) {
              ++r.refused;
              if (call->critical) ++r.critical_refused;
            } else {
              ++r.late;
              if (call->critical) ++r.critical_late;
            }
            --outstanding;
            cv.notify_all();
            delete call;
          });
      next += interval;
    }
    results[ph].seconds = absl::ToDoubleSeconds(end - begin);
  }
  {
    // Every call has a deadline; the wait is bounded by it (plus slack).
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, absl::ToChronoNanoseconds(deadline + absl::Seconds(30)),
                [&] { return outstanding == 0; });
  }
  server->Shutdown(std::chrono::system_clock::now());
  server->Wait();
  if (o.has_value()) {
    // The policy's counters of the whole run, on stderr (why calls were
    // refused).
    const policy::PolicyCountersSnapshot c = policy.Counters();
    std::string line;
    for (size_t i = 0; i < policy::kPolicyCounterCount; ++i) {
      const auto counter = static_cast<policy::PolicyCounter>(i);
      if (c[counter] == 0) continue;
      absl::StrAppend(&line, " ", std::string(policy::PolicyCounterName(counter)), "=",
                      c[counter]);
    }
    std::fprintf(stderr, "overload_bench: %s counters:%s\n", config.c_str(),
                 line.c_str());
  }
  return results;
}

std::string Ms(absl::Duration d) {
  return absl::StrFormat("%.0f", absl::ToDoubleMilliseconds(d));
}

// The limit over the phase's second half: "min-max" ("-" for none).
std::string LimitRange(const PhaseResult& r, double seconds) {
  int lo = 1 << 30, hi = -1;
  for (const auto& [t, l] : r.limits) {
    if (absl::ToDoubleSeconds(t) < seconds / 2) continue;
    lo = std::min(lo, l);
    hi = std::max(hi, l);
  }
  if (hi < 0) return "-";
  return lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, "-", hi);
}

// Seconds from the phase's start until the limit stayed within 20% of
// `target` to the phase's end; "never" if it did not; "-" with no limit.
std::string SettleTime(const PhaseResult& r, int target) {
  if (r.limits.empty()) return "-";
  std::optional<absl::Duration> since;
  for (const auto& [t, l] : r.limits) {
    const bool in = l >= 0.8 * target && l <= 1.2 * target;
    if (!in) {
      since.reset();
    } else if (!since.has_value()) {
      since = t;
    }
  }
  if (!since.has_value()) return "never";
  return absl::StrFormat("%.1f", absl::ToDoubleSeconds(*since));
}

std::vector<std::string> Split(const std::string& s) {
  return absl::StrSplit(s, ',', absl::SkipEmpty());
}

std::string LoadAverage() {
  double avg[3] = {0, 0, 0};
  if (getloadavg(avg, 3) != 3) return "unknown";
  return absl::StrFormat("%.2f %.2f %.2f", avg[0], avg[1], avg[2]);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (const double j = absl::GetFlag(FLAGS_jitter); !(j >= 0 && j < 1)) {
    std::fprintf(stderr, "--jitter must be in [0, 1), not %g\n", j);
    return 2;
  }
  const int workers = absl::GetFlag(FLAGS_workers);
  const double capacity = workers * 1000.0 / absl::GetFlag(FLAGS_work_ms);
  const std::vector<std::string> configs = Split(absl::GetFlag(FLAGS_configs));
  std::printf(
      "Overload benchmark (//bench:overload_bench): simulated capacity %.0f "
      "calls/s (%d simulated cores x %d ms per call; the right concurrency "
      "limit is %d; each call's work spread +-%.0f%%), every call with a %d "
      "ms deadline, open-loop load. "
      "Machine: %ld CPUs, load average %s at start.\n",
      capacity, workers, absl::GetFlag(FLAGS_work_ms), workers,
      absl::GetFlag(FLAGS_jitter) * 100, absl::GetFlag(FLAGS_deadline_ms),
      sysconf(_SC_NPROCESSORS_ONLN),
      LoadAverage().c_str());
  const double phase_s = absl::GetFlag(FLAGS_phase_seconds);
  const double warmup = absl::GetFlag(FLAGS_warmup_seconds);
  for (const std::string& scenario : Split(absl::GetFlag(FLAGS_scenarios))) {
    if (scenario == "load") {
      std::printf(
          "\n### 1. Offered load (%.0f s measured per level, after %.0f s "
          "unmeasured at the same load)\n\n"
          "| load | config | goodput/s | goodput / capacity | p99 good ms | "
          "refused | late | limit (2nd half) |\n"
          "|---|---|---:|---:|---:|---:|---:|---|\n",
          absl::GetFlag(FLAGS_seconds), warmup);
      for (const std::string& l : Split(absl::GetFlag(FLAGS_loads))) {
        double load;
        if (!absl::SimpleAtod(l, &load) || load <= 0) continue;
        for (const std::string& config : configs) {
          std::fprintf(stderr, "overload_bench: load %.1fx, %s\n", load,
                       config.c_str());
          const double s = absl::GetFlag(FLAGS_seconds);
          PhaseResult r = Run(config, {{load, warmup, workers},
                                       {load, s, workers}}, 0)[1];
          const double goodput = r.good / r.seconds;
          std::printf("| %.0fx | %s | %.0f | %.2f | %s | %lld | %lld | %s |\n",
                      load, config.c_str(), goodput, goodput / capacity,
                      Ms(P99(r.good_latency)).c_str(),
                      static_cast<long long>(r.refused),
                      static_cast<long long>(r.late),
                      LimitRange(r, s).c_str());
          std::fflush(stdout);
        }
      }
    } else if (scenario == "capacity" || scenario == "slowdown") {
      const bool cap = scenario == "capacity";
      std::vector<Phase> phases = {
          {2, phase_s, workers},
          {2, phase_s, cap ? workers / 2 : workers, cap ? 1.0 : 5.0},
          {2, phase_s, workers}};
      std::printf(
          "\n### %s (2x load, %.0f s phases; phase 2: %s)\n\n"
          "| config | phase | capacity/s | goodput/s | goodput / capacity | "
          "p99 good ms | refused | late | limit (2nd half) | settled within "
          "20%% of %s after s |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
          "---:|\n",
          cap ? "2. Capacity change" : "3. Dependency slowdown", phase_s,
          cap ? "workers halved" : "handling time x5",
          cap ? "the workers" : "the workers (unchanged)");
      for (const std::string& config : configs) {
        std::fprintf(stderr, "overload_bench: %s, %s\n", scenario.c_str(),
                     config.c_str());
        std::vector<PhaseResult> rs = Run(config, phases, 0);
        for (size_t i = 0; i < rs.size(); ++i) {
          const double phase_capacity =
              phases[i].workers * 1000.0 /
              (absl::GetFlag(FLAGS_work_ms) * phases[i].slowdown);
          const double goodput = rs[i].good / rs[i].seconds;
          std::printf(
              "| %s | %zu | %.0f | %.0f | %.2f | %s | %lld | %lld | %s | %s "
              "|\n",
              config.c_str(), i + 1, phase_capacity, goodput,
              goodput / phase_capacity, Ms(P99(rs[i].good_latency)).c_str(),
              static_cast<long long>(rs[i].refused),
              static_cast<long long>(rs[i].late),
                      LimitRange(rs[i], phase_s).c_str(),
                      SettleTime(rs[i], phases[i].workers).c_str());
        }
        std::fflush(stdout);
      }
    } else if (scenario == "mixed") {
      const double share = absl::GetFlag(FLAGS_critical_share);
      std::printf(
          "\n### 4. Mixed criticality at 4x (%.0f%% critical = %.1fx "
          "capacity, the rest sheddable; shares: critical 90%%)\n\n"
          "| config | critical goodput | critical refused | critical late | "
          "sheddable goodput/s | goodput / capacity | p99 good ms | refused | "
          "late | limit (2nd half) |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
          100 * share, 4 * share);
      for (const std::string& config : configs) {
        std::fprintf(stderr, "overload_bench: mixed, %s\n", config.c_str());
        const double s = absl::GetFlag(FLAGS_seconds);
        PhaseResult r = Run(config, {{4, warmup, workers}, {4, s, workers}},
                            share)[1];
        const double critical =
            r.critical_sent > 0
                ? static_cast<double>(r.critical_good) / r.critical_sent
                : 0;
        std::printf(
            "| %s | %.1f%% | %lld | %lld | %.0f | %.2f | %s | %lld | %lld | "
            "%s |\n",
            config.c_str(), 100 * critical,
            static_cast<long long>(r.critical_refused),
            static_cast<long long>(r.critical_late),
            (r.good - r.critical_good) / r.seconds,
            r.good / r.seconds / capacity, Ms(P99(r.good_latency)).c_str(),
            static_cast<long long>(r.refused), static_cast<long long>(r.late),
            LimitRange(r, s).c_str());
        std::fflush(stdout);
      }
    }
  }
  std::printf("\nLoad average at the end: %s\n", LoadAverage().c_str());
  return 0;
}
