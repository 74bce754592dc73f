#include "metrics/rpc_metrics.h"

#include <google/protobuf/descriptor.h>

#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
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

// Stream duration: 1 ms .. 1 h.
const std::vector<double>& StreamBuckets() {
  static const auto* const b = new std::vector<double>{
      0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600};
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

// Children of a per-method family with `per_method` label combinations per
// method: every admitted method, kUnknownMethod and kOtherMethod get all of
// theirs (see the header), plus the family's own overflow child.
size_t MethodFamilyCap(size_t per_method) {
  return (kMaxMethods + 2) * per_method + 1;
}
constexpr size_t kOrphanKinds = 3;  // handler, group_task, after_func.

struct ServerFamilies {
  CounterFamily* started = Must(R().AddCounter(
      "reqctx_server_started_total", "Incoming calls started.", {"method"},
      MethodFamilyCap(1)));
  CounterFamily* handled = Must(R().AddCounter(
      "reqctx_server_handled_total",
      "Incoming calls finished, by final status code and the cause that "
      "ended the call's Context (NONE: it was live).",
      {"method", "code", "cause"}, MethodFamilyCap(kCodes * kCauseKinds)));
  GaugeFamily* active = Must(R().AddGauge(
      "reqctx_server_active_calls", "Incoming calls in progress.", {"method"},
      MethodFamilyCap(1)));
  HistogramFamily* deadline = Must(R().AddHistogram(
      "reqctx_server_deadline_at_arrival_seconds",
      "Time left until the call's deadline when it arrived (calls with a "
      "deadline only).",
      {"method"}, DeadlineBuckets(), MethodFamilyCap(1)));
  CounterFamily* no_deadline = Must(R().AddCounter(
      "reqctx_server_no_deadline_total", "Incoming calls without a deadline.",
      {"method"}, MethodFamilyCap(1)));
  HistogramFamily* handling = Must(R().AddHistogram(
      "reqctx_server_handling_seconds",
      "Time from a call's arrival to its status being sent.", {"method"},
      LatencyBuckets(), MethodFamilyCap(1)));
  HistogramFamily* orphaned = Must(R().AddHistogram(
      "reqctx_server_orphaned_seconds",
      "Time from a call's Context being done to its handler returning "
      "(calls whose Context was done first only).",
      {"method"}, LatencyBuckets(), MethodFamilyCap(1)));
  HistogramFamily* budget_consumed = Must(R().AddHistogram(
      "reqctx_budget_consumed_seconds",
      "This hop's own share of a call's budget: time queued in the load "
      "shedder plus the handler's own work, without the time it waited on "
      "outbound calls.",
      {"method"}, LatencyBuckets(), MethodFamilyCap(1)));
};

struct ClientFamilies {
  CounterFamily* started = Must(R().AddCounter(
      "reqctx_client_started_total", "Outbound calls started.", {"method"},
      MethodFamilyCap(1)));
  CounterFamily* handled = Must(R().AddCounter(
      "reqctx_client_handled_total",
      "Outbound calls finished, by final status code.", {"method", "code"},
      MethodFamilyCap(kCodes)));
  GaugeFamily* active = Must(R().AddGauge(
      "reqctx_client_active_calls", "Outbound calls in progress.", {"method"},
      MethodFamilyCap(1)));
  HistogramFamily* propagation = Must(R().AddHistogram(
      "reqctx_client_cancel_propagation_seconds",
      "Time from the caller's Context being done to the outbound call's "
      "cancel being sent.",
      {"method"}, PropagationBuckets(), MethodFamilyCap(1)));
};

const ServerFamilies& Server() {
  static const auto* const f = new ServerFamilies();
  return *f;
}
const ClientFamilies& Client() {
  static const auto* const f = new ClientFamilies();
  return *f;
}

// Methods declared with DeclareMethod.
class DeclaredMethods {
 public:
  void Add(std::string_view method) {
    std::lock_guard<std::mutex> lock(mu_);
    if (set_.size() < 8 * kMaxMethods) {
      set_.emplace(absl::string_view(method.data(), method.size()));
    }
  }
  bool Contains(std::string_view method) {
    std::lock_guard<std::mutex> lock(mu_);
    return set_.contains(absl::string_view(method.data(), method.size()));
  }

 private:
  std::mutex mu_;
  absl::flat_hash_set<std::string> set_;  // Guarded by mu_.
};

DeclaredMethods& Declared() {
  static auto* const d = new DeclaredMethods();
  return *d;
}

// Whether "/package.Service/Method" has a descriptor in the generated pool.
bool HasDescriptor(std::string_view method) {
  if (method.size() < 4 || method.front() != '/') return false;
  const size_t slash = method.find('/', 1);
  if (slash == std::string_view::npos || slash + 1 == method.size() ||
      method.find('/', slash + 1) != std::string_view::npos) {
    return false;
  }
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(method.substr(1, slash - 1)));
  return service != nullptr &&
         service->FindMethodByName(std::string(method.substr(slash + 1))) !=
             nullptr;
}

// method -> handles, shared; never shrinks. Keys are labels: at most
// kMaxMethods known methods, then kUnknownMethod and kOtherMethod.
template <typename M>
class MethodTable {
 public:
  template <typename Make>
  const M& Get(std::string_view method, Make make) {
    const absl::string_view key(method.data(), method.size());
    // Known methods only: an unknown name is not cached, so invented names
    // cost a lookup each, never memory.
    thread_local absl::flat_hash_map<std::string, const M*> cache;
    if (auto it = cache.find(key); it != cache.end()) return *it->second;
    std::string_view label = MethodLabel(method);
    const bool known = label != kUnknownMethod;
    const M* m;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = table_.find(absl::string_view(label.data(), label.size()));
      if (it != table_.end()) {
        m = it->second.get();
      } else {
        if (known) {
          if (admitted_ < kMaxMethods) {
            ++admitted_;
          } else {
            label = kOtherMethod;
          }
        }
        auto& slot = table_[absl::string_view(label.data(), label.size())];
        if (!slot) slot = std::make_unique<M>(make(std::string(label)));
        m = slot.get();
      }
    }
    if (known && cache.size() < 2 * kMaxMethods) {
      cache.emplace(std::string(method), m);
    }
    return *m;
  }

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<M>> table_;  // Guarded.
  size_t admitted_ = 0;  // Known methods in table_; guarded by mu_.
};

}  // namespace

std::string_view MethodLabel(std::string_view method) {
  if (HasDescriptor(method) || Declared().Contains(method)) return method;
  return kUnknownMethod;
}

void DeclareMethod(std::string_view method) { Declared().Add(method); }

HandledByCause::HandledByCause(CounterFamily* family, std::string method)
    : family_(family), method_(std::move(method)) {
  for (int c = 0; c < kCodes; ++c) {
    none_[c] = &family_->WithLabels(
        {method_, CodeName(c), CauseName(CauseKind::kNone)});
  }
}

Counter& HandledByCause::Get(int code, CauseKind cause) {
  if (code < 0 || code >= kCodes) code = 2;  // UNKNOWN
  const int k = static_cast<int>(cause);
  if (k <= 0 || k >= kCauseKinds) return *none_[code];
  std::atomic<Counter*>& slot = others_[code * kCauseKinds + k];
  Counter* c = slot.load(std::memory_order_acquire);
  if (c == nullptr) {
    // WithLabels returns the same child for the same labels: racing
    // threads store the same pointer.
    c = &family_->WithLabels({method_, CodeName(code), CauseName(cause)});
    slot.store(c, std::memory_order_release);
  }
  return *c;
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
                            &f.budget_consumed->WithLabels({m}),
                            new HandledByCause(f.handled, m)};
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
          "expired, canceled, queue_delay) and the call's criticality.",
          {"method", "reason", "criticality"},
          MethodFamilyCap(kPolicyRejectReasons * kCriticalities))),
      Must(R().AddCounter("reqctx_policy_queued_total",
                          "Calls that waited in the shedder's queue "
                          "(counted when they left it).",
                          {"method", "criticality"},
                          MethodFamilyCap(kCriticalities))),
      Must(R().AddHistogram(
          "reqctx_policy_queue_wait_seconds",
          "Time calls waited in the shedder's queue, from queueing to being "
          "admitted or dropped.",
          {"method"}, LatencyBuckets(), MethodFamilyCap(1))),
      Must(R().AddCounter("reqctx_policy_deadline_defaulted_total",
                          "Calls without a deadline given the policy's "
                          "default.",
                          {"method"}, MethodFamilyCap(1))),
      Must(R().AddCounter("reqctx_policy_deadline_capped_total",
                          "Calls whose deadline was capped at the policy's "
                          "maximum.",
                          {"method"}, MethodFamilyCap(1))),
      Must(R().AddCounter("reqctx_policy_detached_total",
                          "Bounded follow-ups detached from a call "
                          "(DetachWithBound).",
                          {"method"}, MethodFamilyCap(1))),
      Must(R().AddCounter(
          "reqctx_policy_dark_total",
          "Dark mode: calls the policy ran although it would have refused "
          "them (by the reason) or queued them (decision=queued).",
          {"method", "decision", "criticality"},
          MethodFamilyCap(kPolicyValveDecisions * kCriticalities))),
      Must(R().AddCounter(
          "reqctx_policy_refusals_capped_total",
          "Calls admitted because the refusal cap allowed no more refusals "
          "in the window, by the reason they would have been refused for.",
          {"method", "reason", "criticality"},
          MethodFamilyCap(kPolicyValveDecisions * kCriticalities))),
      Must(R().AddCounter(
          "reqctx_policy_limit_samples_total",
          "Admitted calls given back to the concurrency limit, by what the "
          "limit learned of them: success (a sample), ignored (no sample: "
          "canceled, or a deadline shorter than the expected handling "
          "time), dropped (still running at a deadline that covered it: an "
          "overload sign).",
          {"method", "outcome"}, MethodFamilyCap(kLimitOutcomes))),
      Must(R().AddCounter("reqctx_client_retries_total",
                          "Retry attempts sent.", {"method"},
                          MethodFamilyCap(1))),
      Must(R().AddCounter("reqctx_client_hedges_total",
                          "Hedged attempts sent.", {"method"},
                          MethodFamilyCap(1))),
      Must(R().AddCounter("reqctx_client_retry_budget_exhausted_total",
                          "Retries not sent because the retry budget was "
                          "exhausted.",
                          {"method"}, MethodFamilyCap(1))),
  };
  return *p;
}

std::string_view PolicyRejectReasonName(int reason) {
  static constexpr std::string_view kNames[kPolicyRejectReasons] = {
      "min_budget", "shed_at_arrival", "queue_full",
      "evicted",    "expired",         "canceled",
      "queue_delay"};
  return reason >= 0 && reason < kPolicyRejectReasons ? kNames[reason]
                                                      : "unknown";
}

std::string_view PolicyValveDecisionName(int decision) {
  static constexpr std::string_view kNames[kPolicyValveDecisions] = {
      "min_budget", "shed_at_arrival", "queue_full", "queue_delay", "queued"};
  return decision >= 0 && decision < kPolicyValveDecisions ? kNames[decision]
                                                           : "unknown";
}

std::string_view LimitOutcomeName(int outcome) {
  static constexpr std::string_view kNames[kLimitOutcomes] = {
      "success", "ignored", "dropped"};
  return outcome >= 0 && outcome < kLimitOutcomes ? kNames[outcome]
                                                  : "unknown";
}

std::string_view CriticalityLabel(int criticality) {
  static constexpr std::string_view kNames[kCriticalities] = {
      "sheddable", "default", "critical"};
  return criticality >= 0 && criticality < kCriticalities
             ? kNames[criticality]
             : "default";
}

namespace {
struct StreamFamilies {
  CounterFamily* messages = Must(R().AddCounter(
      "reqctx_stream_messages_total",
      "Stream messages read (direction=in) and written (out), counted when "
      "the stream ends.",
      {"side", "method", "direction"}, MethodFamilyCap(4)));
  HistogramFamily* duration = Must(R().AddHistogram(
      "reqctx_stream_duration_seconds",
      "Time from a stream's binding (reqctx::streams) to its end.",
      {"side", "method"}, StreamBuckets(), MethodFamilyCap(2)));
  CounterFamily* cut = Must(R().AddCounter(
      "reqctx_stream_timeouts_total",
      "Streams cut before their end, by why: message_wait or idle timeout, "
      "the call's deadline, or a cancel.",
      {"side", "method", "kind"}, MethodFamilyCap(2 * kStreamCutKinds)));
};
const StreamFamilies& Stream() {
  static const auto* const f = new StreamFamilies();
  return *f;
}
}  // namespace

void RegisterStreamFamilies() { (void)Stream(); }

std::string_view StreamCutKindName(int kind) {
  static constexpr std::string_view kNames[kStreamCutKinds] = {
      "message_wait", "idle", "deadline", "cancelled"};
  return kind >= 0 && kind < kStreamCutKinds ? kNames[kind] : "unknown";
}

const StreamMethodMetrics& StreamMethod(bool server, std::string_view method) {
  static auto* const tables = new MethodTable<StreamMethodMetrics>[2];
  const std::string_view side = server ? "server" : "client";
  return tables[server ? 0 : 1].Get(method, [side](const std::string& m) {
    const StreamFamilies& f = Stream();
    StreamMethodMetrics out{&f.messages->WithLabels({side, m, "in"}),
                            &f.messages->WithLabels({side, m, "out"}),
                            &f.duration->WithLabels({side, m}),
                            {}};
    for (int k = 0; k < kStreamCutKinds; ++k) {
      out.cut[k] = &f.cut->WithLabels({side, m, StreamCutKindName(k)});
    }
    return out;
  });
}

std::array<int64_t, kLimitOutcomes> PolicyMethodMetrics::LimitSampleCounts()
    const {
  std::array<int64_t, kLimitOutcomes> v;
  for (int i = 0; i < kLimitOutcomes; ++i) v[i] = limit_samples[i]->Value();
  return v;
}

const PolicyMethodMetrics& PolicyMethod(std::string_view method) {
  static auto* const table = new MethodTable<PolicyMethodMetrics>();
  return table->Get(method, [](const std::string& m) {
    const PolicyFamilies& f = Policy();
    PolicyMethodMetrics out{{},
                            {},
                            {},
                            {},
                            &f.queue_wait->WithLabels({m}),
                            &f.deadline_defaulted->WithLabels({m}),
                            &f.deadline_capped->WithLabels({m}),
                            &f.detached->WithLabels({m}),
                            {}};
    for (int o = 0; o < kLimitOutcomes; ++o) {
      out.limit_samples[o] =
          &f.limit_samples->WithLabels({m, LimitOutcomeName(o)});
    }
    for (int c = 0; c < kCriticalities; ++c) {
      for (int r = 0; r < kPolicyRejectReasons; ++r) {
        out.rejected[r][c] = &f.rejected->WithLabels(
            {m, PolicyRejectReasonName(r), CriticalityLabel(c)});
      }
      for (int d = 0; d < kPolicyValveDecisions; ++d) {
        out.dark[d][c] = &f.dark->WithLabels(
            {m, PolicyValveDecisionName(d), CriticalityLabel(c)});
        out.capped[d][c] = &f.capped->WithLabels(
            {m, PolicyValveDecisionName(d), CriticalityLabel(c)});
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
      {"kind", "method"}, MethodFamilyCap(kOrphanKinds)));
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
