#include "interceptors/policy/policy_metrics.h"

#include <mutex>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "metrics/metrics.h"

namespace reqctx::policy {
namespace {

inline constexpr Key<const metrics::PolicyMethodMetrics*> kPolicyMethodKey(
    "reqctx.policy_method");

// metrics' criticality index is Criticality's value.
static_assert(static_cast<int>(Criticality::kSheddable) == 0 &&
              static_cast<int>(Criticality::kDefault) == 1 &&
              static_cast<int>(Criticality::kCritical) == 2 &&
              metrics::kCriticalities == 3);

// metrics' reason index for a shed reason, or -1 (not counted).
int ReasonIndex(ShedReason r) {
  switch (r) {
    case ShedReason::kShedAtArrival:
      return 1;
    case ShedReason::kQueueFull:
      return 2;
    case ShedReason::kEvicted:
      return 3;
    case ShedReason::kExpired:
      return 4;
    case ShedReason::kCanceled:
      return 5;
    case ShedReason::kQueueDelay:
      return 6;
    case ShedReason::kNone:
    case ShedReason::kShutdown:
      break;
  }
  return -1;
}

// PolicyValveDecisionName's index for what a valve let through.
int ValveIndex(ShedReason r) {
  switch (r) {
    case ShedReason::kShedAtArrival:
      return 1;
    case ShedReason::kQueueFull:
    case ShedReason::kEvicted:
      return 2;
    case ShedReason::kQueueDelay:
      return 3;
    default:
      return 2;
  }
}
constexpr int kValveMinBudget = 0;
constexpr int kValveQueued = 4;

// The published shedders, read at scrape.
struct Published {
  std::mutex mu;
  std::vector<std::pair<std::string, std::weak_ptr<const LoadShedder>>>
      entries;  // Guarded by mu.
};
Published& Limiters() {
  static auto* const p = new Published();
  return *p;
}

// Each live shedder's stats, with its method (expired entries dropped).
std::vector<std::pair<std::string, ShedderStats>> ReadLimiters() {
  std::vector<std::pair<std::string, std::shared_ptr<const LoadShedder>>> live;
  {
    Published& p = Limiters();
    std::lock_guard<std::mutex> lock(p.mu);
    std::erase_if(p.entries, [](const auto& e) { return e.second.expired(); });
    for (const auto& [m, w] : p.entries) {
      if (auto s = w.lock()) live.emplace_back(m, std::move(s));
    }
  }
  // One series per method: with several policies in the process serving
  // the same method (servers started in one process), the first published
  // one that is still alive is shown.
  std::vector<std::pair<std::string, ShedderStats>> out;
  absl::flat_hash_set<std::string> seen;
  for (const auto& [m, s] : live) {
    if (seen.insert(m).second) out.emplace_back(m, s->Stats());
  }
  return out;
}

// The gauges read from the shedders: name, help, value. One list.
struct LimiterGauge {
  const char* name;
  const char* help;
  double (*value)(const ShedderStats&);
};
constexpr LimiterGauge kLimiterGauges[] = {
    {"reqctx_policy_inflight", "Calls holding a concurrency slot.",
     [](const ShedderStats& s) { return double(s.running); }},
    {"reqctx_policy_queue_length", "Calls waiting in the shedder's queue.",
     [](const ShedderStats& s) { return double(s.queued); }},
    {"reqctx_policy_limit_min_rtt_seconds",
     "The limit algorithm's no-load handling time (Vegas; 0 if none).",
     [](const ShedderStats& s) {
       return absl::ToDoubleSeconds(s.inputs.min_rtt);
     }},
    {"reqctx_policy_limit_long_rtt_seconds",
     "The limit algorithm's long-term handling time (Gradient2; 0 if none).",
     [](const ShedderStats& s) {
       return absl::ToDoubleSeconds(s.inputs.long_rtt);
     }},
    {"reqctx_policy_limit_last_rtt_seconds",
     "The handling time of the limit algorithm's latest sample (window).",
     [](const ShedderStats& s) {
       return absl::ToDoubleSeconds(s.inputs.last_rtt);
     }},
    {"reqctx_policy_limit_queue_estimate",
     "The limit algorithm's queue estimate (Vegas) or allowance "
     "(Gradient2).",
     [](const ShedderStats& s) { return s.inputs.queue_estimate; }},
    {"reqctx_policy_limit_queue_share",
     "The share of a call AIMD probes by per window past a queue, for the "
     "calls' deadlines (1: budgets loose enough to wait, and always 1 for "
     "the other algorithms; limits/limit.h QueueShare).",
     [](const ShedderStats& s) { return s.inputs.queue_share; }},
};

void RegisterLimiterGauges() {
  static std::once_flag once;
  std::call_once(once, [] {
    metrics::Registry& r = metrics::Registry::Default();
    (void)r.AddCallbackFamily(
        "reqctx_policy_limit",
        "The shedder's concurrency limit now, and its algorithm.",
        metrics::Type::kGauge, {"method", "algorithm"}, [] {
          std::vector<metrics::Registry::Sample> out;
          for (const auto& [m, s] : ReadLimiters()) {
            out.push_back({{m, std::string(s.algorithm)}, double(s.limit)});
          }
          return out;
        });
    (void)r.AddCallbackFamily(
        "reqctx_policy_enforcement",
        "1 for the shedder's mode in force (enforce, dark, off: the kill "
        "switch).",
        metrics::Type::kGauge, {"method", "mode"}, [] {
          std::vector<metrics::Registry::Sample> out;
          for (const auto& [m, s] : ReadLimiters()) {
            for (ShedMode mode :
                 {ShedMode::kEnforce, ShedMode::kDark, ShedMode::kOff}) {
              out.push_back({{m, std::string(ShedModeName(mode))},
                             s.mode == mode ? 1.0 : 0.0});
            }
          }
          return out;
        });
    for (const LimiterGauge& g : kLimiterGauges) {
      (void)r.AddCallbackFamily(
          g.name, g.help, metrics::Type::kGauge, {"method"}, [&g] {
            std::vector<metrics::Registry::Sample> out;
            for (const auto& [m, s] : ReadLimiters()) {
              out.push_back({{m}, g.value(s)});
            }
            return out;
          });
    }
  });
}

}  // namespace

void PublishLimiter(const std::string& method,
                    std::weak_ptr<const LoadShedder> shedder) {
  RegisterLimiterGauges();
  Published& p = Limiters();
  std::lock_guard<std::mutex> lock(p.mu);
  std::erase_if(p.entries, [](const auto& e) { return e.second.expired(); });
  p.entries.emplace_back(method, std::move(shedder));
}

void RecordMinBudgetLetThrough(const metrics::PolicyMethodMetrics& m,
                               Criticality c, bool dark) {
  (dark ? m.dark : m.capped)[kValveMinBudget][static_cast<int>(c)]
      ->Increment();
}

void RecordMinBudgetRejected(const metrics::PolicyMethodMetrics& m,
                             Criticality c) {
  m.rejected[0][static_cast<int>(c)]->Increment();
}

void RecordShedDecision(const metrics::PolicyMethodMetrics& m,
                        const ShedDecision& d, Criticality c) {
  if (d.queued) {
    m.queued[static_cast<int>(c)]->Increment();
    m.queue_wait->ObserveDuration(d.waited);
  }
  if (const int r = ReasonIndex(d.reason); r >= 0) {
    m.rejected[r][static_cast<int>(c)]->Increment();
  }
  const int ci = static_cast<int>(c);
  if (d.dark.has_value()) m.dark[ValveIndex(*d.dark)][ci]->Increment();
  if (d.would_queue) m.dark[kValveQueued][ci]->Increment();
  if (d.capped.has_value()) m.capped[ValveIndex(*d.capped)][ci]->Increment();
}

Context WithPolicyMethod(const Context& parent,
                         const metrics::PolicyMethodMetrics* m) {
  return WithValue(parent, kPolicyMethodKey, m);
}

const metrics::PolicyMethodMetrics* PolicyMethodOf(const Context& ctx) {
  const metrics::PolicyMethodMetrics* const* m = ctx.Value(kPolicyMethodKey);
  return m == nullptr ? nullptr : *m;
}

}  // namespace reqctx::policy
