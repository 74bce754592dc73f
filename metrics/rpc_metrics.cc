#include "metrics/rpc_metrics.h"

#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "context/debug.h"
#include "context/orphans.h"

namespace reqctx::metrics {
namespace {

// Remaining deadline at arrival: 1 ms .. 5 min.
const std::vector<double>& DeadlineBuckets() {
  static const auto* const b = new std::vector<double>{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
      0.5,   1,      2.5,   5,    10,    30,   60,  300};
  return *b;
}
// Handling and orphaned time: 100 us .. 60 s.
const std::vector<double>& LatencyBuckets() {
  static const auto* const b = new std::vector<double>{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
  return *b;
}
// Context done -> cancel sent: 10 us .. 1 s.
const std::vector<double>& PropagationBuckets() {
  static const auto* const b = new std::vector<double>{
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
      0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25, 1};
  return *b;
}

template <typename T>
T* Must(absl::StatusOr<T*> f) {
  // The names here are constants checked by metrics_test; a failure is a
  // programming error in this file.
  if (!f.ok()) std::abort();
  return *f;
}

Registry& R() { return Registry::Default(); }

struct ServerFamilies {
  CounterFamily* started = Must(R().AddCounter(
      "reqctx_server_started_total", "Incoming calls started.", {"method"}));
  CounterFamily* handled = Must(R().AddCounter(
      "reqctx_server_handled_total",
      "Incoming calls finished, by final status code.", {"method", "code"}));
  GaugeFamily* active = Must(R().AddGauge(
      "reqctx_server_active_calls", "Incoming calls in progress.", {"method"}));
  HistogramFamily* deadline = Must(R().AddHistogram(
      "reqctx_server_deadline_at_arrival_seconds",
      "Time left until the call's deadline when it arrived (calls with a "
      "deadline only).",
      {"method"}, DeadlineBuckets()));
  CounterFamily* no_deadline = Must(R().AddCounter(
      "reqctx_server_no_deadline_total", "Incoming calls without a deadline.",
      {"method"}));
  HistogramFamily* handling = Must(R().AddHistogram(
      "reqctx_server_handling_seconds",
      "Time from a call's arrival to its status being sent.", {"method"},
      LatencyBuckets()));
  HistogramFamily* orphaned = Must(R().AddHistogram(
      "reqctx_server_orphaned_seconds",
      "Time from a call's Context being done to its handler returning "
      "(calls whose Context was done first only).",
      {"method"}, LatencyBuckets()));
};

struct ClientFamilies {
  CounterFamily* started = Must(R().AddCounter(
      "reqctx_client_started_total", "Outbound calls started.", {"method"}));
  CounterFamily* handled = Must(R().AddCounter(
      "reqctx_client_handled_total",
      "Outbound calls finished, by final status code.", {"method", "code"}));
  GaugeFamily* active = Must(R().AddGauge(
      "reqctx_client_active_calls", "Outbound calls in progress.", {"method"}));
  HistogramFamily* propagation = Must(R().AddHistogram(
      "reqctx_client_cancel_propagation_seconds",
      "Time from the caller's Context being done to the outbound call's "
      "cancel being sent.",
      {"method"}, PropagationBuckets()));
};

const ServerFamilies& Server() {
  static const auto* const f = new ServerFamilies();
  return *f;
}
const ClientFamilies& Client() {
  static const auto* const f = new ClientFamilies();
  return *f;
}

// method -> handles, shared; never shrinks (bounded by kMaxChildren).
template <typename M>
class MethodTable {
 public:
  template <typename Make>
  const M& Get(std::string_view method, Make make) {
    const absl::string_view key(method.data(), method.size());
    thread_local absl::flat_hash_map<std::string, const M*> cache;
    if (auto it = cache.find(key); it != cache.end()) return *it->second;
    const M* m;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = table_.find(key);
      if (it != table_.end()) {
        m = it->second.get();
      } else {
        const bool full = table_.size() >= kMaxChildren;
        const std::string name = full ? "_other" : std::string(method);
        auto& slot = table_[name];
        if (!slot) slot = std::make_unique<M>(make(name));
        m = slot.get();
      }
    }
    if (cache.size() < kMaxChildren) cache.emplace(std::string(method), m);
    return *m;
  }

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<M>> table_;  // Guarded.
};

}  // namespace

std::string_view CodeName(int code) {
  static constexpr std::string_view kNames[kCodes] = {
      "OK",           "CANCELLED",        "UNKNOWN",
      "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED",    "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",
      "DATA_LOSS",    "UNAUTHENTICATED"};
  return code >= 0 && code < kCodes ? kNames[code] : "UNKNOWN";
}

const ServerMethodMetrics& ServerMethod(std::string_view method) {
  static auto* const table = new MethodTable<ServerMethodMetrics>();
  return table->Get(method, [](const std::string& m) {
    const ServerFamilies& f = Server();
    ServerMethodMetrics out{&f.started->WithLabels({m}),
                            &f.active->WithLabels({m}),
                            &f.deadline->WithLabels({m}),
                            &f.no_deadline->WithLabels({m}),
                            &f.handling->WithLabels({m}),
                            &f.orphaned->WithLabels({m}),
                            {}};
    for (int c = 0; c < kCodes; ++c) {
      out.handled[c] = &f.handled->WithLabels({m, CodeName(c)});
    }
    return out;
  });
}

const ClientMethodMetrics& ClientMethod(std::string_view method) {
  static auto* const table = new MethodTable<ClientMethodMetrics>();
  return table->Get(method, [](const std::string& m) {
    const ClientFamilies& f = Client();
    ClientMethodMetrics out{&f.started->WithLabels({m}),
                            &f.active->WithLabels({m}),
                            &f.propagation->WithLabels({m}),
                            {}};
    for (int c = 0; c < kCodes; ++c) {
      out.handled[c] = &f.handled->WithLabels({m, CodeName(c)});
    }
    return out;
  });
}

const PolicyFamilies& Policy() {
  static const auto* const p = new PolicyFamilies{
      Must(R().AddCounter(
          "reqctx_policy_rejected_total",
          "Calls refused by the server policy before their handler ran, by "
          "reason (min_budget, shed_at_arrival, queue_full, evicted, "
          "expired, canceled) and the call's criticality.",
          {"method", "reason", "criticality"})),
      Must(R().AddCounter("reqctx_policy_queued_total",
                          "Calls that waited in the shedder's queue "
                          "(counted when they left it).",
                          {"method", "criticality"})),
      Must(R().AddHistogram(
          "reqctx_policy_queue_wait_seconds",
          "Time calls waited in the shedder's queue, from queueing to being "
          "admitted or dropped.",
          {"method"}, LatencyBuckets())),
      Must(R().AddCounter("reqctx_policy_deadline_defaulted_total",
                          "Calls without a deadline given the policy's "
                          "default.",
                          {"method"})),
      Must(R().AddCounter("reqctx_policy_deadline_capped_total",
                          "Calls whose deadline was capped at the policy's "
                          "maximum.",
                          {"method"})),
      Must(R().AddCounter("reqctx_policy_detached_total",
                          "Bounded follow-ups detached from a call "
                          "(DetachWithBound).",
                          {"method"})),
      Must(R().AddCounter("reqctx_client_retries_total",
                          "Retry attempts sent.", {"method"})),
      Must(R().AddCounter("reqctx_client_hedges_total",
                          "Hedged attempts sent.", {"method"})),
      Must(R().AddCounter("reqctx_client_retry_budget_exhausted_total",
                          "Retries not sent because the retry budget was "
                          "exhausted.",
                          {"method"})),
  };
  return *p;
}

std::string_view PolicyRejectReasonName(int reason) {
  static constexpr std::string_view kNames[kPolicyRejectReasons] = {
      "min_budget", "shed_at_arrival", "queue_full",
      "evicted",    "expired",         "canceled"};
  return reason >= 0 && reason < kPolicyRejectReasons ? kNames[reason]
                                                      : "unknown";
}

std::string_view CriticalityLabel(int criticality) {
  static constexpr std::string_view kNames[kCriticalities] = {
      "sheddable", "default", "critical"};
  return criticality >= 0 && criticality < kCriticalities
             ? kNames[criticality]
             : "default";
}

const PolicyMethodMetrics& PolicyMethod(std::string_view method) {
  static auto* const table = new MethodTable<PolicyMethodMetrics>();
  return table->Get(method, [](const std::string& m) {
    const PolicyFamilies& f = Policy();
    PolicyMethodMetrics out{{},
                            {},
                            &f.queue_wait->WithLabels({m}),
                            &f.deadline_defaulted->WithLabels({m}),
                            &f.deadline_capped->WithLabels({m}),
                            &f.detached->WithLabels({m})};
    for (int c = 0; c < kCriticalities; ++c) {
      for (int r = 0; r < kPolicyRejectReasons; ++r) {
        out.rejected[r][c] = &f.rejected->WithLabels(
            {m, PolicyRejectReasonName(r), CriticalityLabel(c)});
      }
      out.queued[c] = &f.queued->WithLabels({m, CriticalityLabel(c)});
    }
    return out;
  });
}

CounterFamily& OrphanReports() {
  static CounterFamily* const f = Must(R().AddCounter(
      "reqctx_orphan_reports_total",
      "Work reported by the orphan detector: still running a threshold "
      "after its Context was done.",
      {"kind", "method"}));
  return *f;
}

void RegisterRpcFamilies() {
  (void)Server();
  (void)Client();
  (void)Policy();
  (void)OrphanReports();
}

void RegisterProcessGauges() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Errors only if a service took these names first; theirs stay.
    (void)R().AddCallbackGauge(
        "reqctx_live_timers", "Deadlines queued in reqctx's timer service.",
        [] { return static_cast<double>(debug::PendingTimerCount()); });
    (void)R().AddCallbackGauge(
        "reqctx_executor_threads", "Threads of reqctx's AfterFunc executor.",
        [] { return static_cast<double>(debug::AfterFuncThreadCount()); });
    (void)R().AddCallbackGauge(
        "reqctx_orphaned_handlers",
        "Handlers running after their call's Context was done (orphan "
        "detector's last scan).",
        [] { return static_cast<double>(debug::OrphanedWorkCount("handler")); });
    (void)R().AddCallbackGauge(
        "reqctx_orphaned_group_tasks",
        "Group tasks running after their Context was done (orphan detector's "
        "last scan).",
        [] {
          return static_cast<double>(debug::OrphanedWorkCount("group_task"));
        });
    (void)R().AddCallbackGauge(
        "reqctx_orphaned_after_funcs",
        "AfterFuncs running (their Context is done by definition) at the "
        "orphan detector's last scan.",
        [] {
          return static_cast<double>(debug::OrphanedWorkCount("after_func"));
        });
  });
}

}  // namespace reqctx::metrics
